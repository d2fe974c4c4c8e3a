#!/usr/bin/env bash
# Set everything up and run the daemon in the foreground with the demo configuration.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
command -v swift >/dev/null 2>&1 || export PATH=/opt/swift/usr/bin:$PATH
mkdir -p /tmp/kioskd-demo
bin="$(swift build -c release --show-bin-path)/kioskd"
cat <<MSG
[demo] kioskd supervises two programs (config/demo.yaml). Try, from another shell:
[demo]   curl -s http://127.0.0.1:8765/ | head -3     # the demo-http program
[demo]   pkill -9 -f 'http.server 8765'                # kill it: it is back at once
[demo]   $bin config show --config config/demo.yaml
[demo] Ctrl+C stops everything in reverse order.
MSG
exec "$bin" serve --config config/demo.yaml

#!/usr/bin/env bash
# Set everything up and run the daemon in the foreground with the demo configuration.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
command -v swift >/dev/null 2>&1 || export PATH=/opt/swift/usr/bin:$PATH
# The page the demo kiosk shows, served by the supervised demo-http program. The directory is
# searchable (not listable) by the session user.
mkdir -p /tmp/kioskd-demo
chmod 0711 /tmp/kioskd-demo
cat > /tmp/kioskd-demo/kiosk.html <<'HTML'
<!doctype html><title>kioskd demo</title>
<body style="margin:0;font:48px sans-serif;background:#0b5394;color:#fff;display:grid;place-items:center;height:100vh">
<div>kioskd demo kiosk<br><small id="t"></small></div>
<script>setInterval(() => t.textContent = new Date().toLocaleTimeString(), 1000)</script>
HTML
chmod 0644 /tmp/kioskd-demo/kiosk.html
bin="$(swift build -c release --show-bin-path)/kioskd"
cat <<MSG
[demo] kioskd runs one kiosk task and two programs (config/demo.yaml). Once the task runs it
[demo] prints a viewer link: open it in a browser to watch the live kiosk (on another machine,
[demo] put this host's address in place of 127.0.0.1), and the CDP URL for an agent. Then try:
[demo]   pkill -9 -x chromium        # the browser is back in about a second, the rest untouched
[demo]   curl -s <the CDP URL>/json/version   # the browser's CDP endpoint, for an agent
[demo]   KIOSKD_SOCKET=/tmp/kioskd-demo/run/control.sock $(swift build -c release --show-bin-path)/kioskd task list
[demo] Ctrl+C stops everything in reverse order.
MSG
exec "$bin" serve --config config/demo.yaml

#!/usr/bin/env bash
# Set everything up and run every test: the README's test command, and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --tests
command -v swift >/dev/null 2>&1 || export PATH=/opt/swift/usr/bin:$PATH

echo "[test] systemd units: systemd-analyze verify, and the service's security exposure at most 2.0"
unit_dir=$(mktemp -d)
trap 'rm -rf "$unit_dir"' EXIT
# verify checks that ExecStart exists: point it at the binary just built.
for unit in systemd/*.service; do
  sed "s|/usr/bin/kioskd|$(swift build --show-bin-path)/kioskd|" "$unit" >"$unit_dir/$(basename "$unit")"
done
cp systemd/*.socket "$unit_dir/"
systemd-analyze verify "$unit_dir"/kioskd.service "$unit_dir"/kioskd.socket "$unit_dir"/kioskd-public.socket
# --threshold is in tenths: 20 is an exposure of 2.0. The shipped unit before issue 15 scored 5.5.
systemd-analyze security --offline=yes --threshold=20 "$unit_dir/kioskd.service" | tail -1

echo "[test] imports: every target imports only what docs/ARCHITECTURE.md allows"
python3 scripts/check-imports.py

echo "[test] prometheus rules: promtool check and unit tests"
scripts/check-prometheus.sh

echo "[test] swift test"
# One suite at a time: most suites boot real Chromium sessions, and on CI's two cores suites
# side by side starved each other's readiness waits (timeouts, not failures of what they test).
# CI keeps only the output's tail: a failure's lines are printed again at the end.
swift_log=$(mktemp)
trap 'rm -rf "$unit_dir" "$swift_log"' EXIT
if ! swift test --skip-build --no-parallel "$@" 2>&1 | tee "$swift_log"; then
  echo "[test] swift test failed; its failures again:" >&2
  grep -E '✘|recorded an issue|error:|Expectation failed|Caught error' "$swift_log" | tail -60 >&2
  exit 1
fi

# ~95 s; the virtualenv (scripts/autobahn-venv.sh, ~70 s the first time) needs pyenv's CPython 2.7.18.
echo "[test] WebSocket conformance: Autobahn|Testsuite against the listener's stack and the bridge"
scripts/test-autobahn.sh "$(swift build --show-bin-path)/kioskd-bench"

echo "[test] Python: the client package and the FastAPI layer against the daemon"
scripts/test-python.sh "$(swift build --show-bin-path)/kioskd"

# API conformance: schemathesis, every phase and check, against the control API's OpenAPI document.
echo "[test] API conformance: schemathesis against the control API (scripts/test-schemathesis.sh)"
scripts/test-schemathesis.sh "$(swift build --show-bin-path)/kioskd"

# The package under a real systemd in a container: the hardened unit, READY, a sandboxed task,
# kill -9, the watchdog, stop, the journal, purge (builds the release binary and the .deb).
echo "[test] systemd: the .deb under a real systemd (scripts/test-systemd.sh)"
scripts/test-systemd.sh

# Every benchmark part, with tiny counts, as a fresh clone runs it: so none can rot unseen.
# The abuse part is a check here (~50 s): it fails when the public listener does not answer an
# attack as designed, /health stops answering or the viewer's frames stop.
echo "[test] benchmarks: smoke run of every part"
"$(swift build --show-bin-path)/kioskd-bench" --smoke --supervisord .build/venv/bin/supervisord

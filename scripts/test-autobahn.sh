#!/usr/bin/env bash
# WebSocket conformance: Autobahn|Testsuite's fuzzingclient (cases 1-7, 9, 10; 12/13 are
# permessage-deflate, which the bridge does not offer) against
#   (a) the public listener's WebSocket stack with production settings, echoing
#       (kioskd-bench --serve-autobahn-echo), and again with the 1 MiB limit raised to 16 MiB for
#       the cases over it;
#   (b) the real bridge (PublicServer, a control token, the relay and the RFB filter) to an RFB
#       echo target on a Unix socket (kioskd-bench --serve-autobahn-bridge).
#   scripts/test-autobahn.sh [KIOSKD_BENCH]
# KIOSKD_BENCH: default $(swift build --show-bin-path)/kioskd-bench (this script does not build it).
# The virtualenv comes from scripts/autobahn-venv.sh (AUTOBAHN_VENV, default .venv-autobahn).
# Reports: .build/autobahn/{echo,bridge}/reports/servers (index.html per run). tests/autobahn/
# check.py judges them (see it and tests/autobahn/README.md for what each target must do) and
# prints the table; this script fails on any case that is not as it must be.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
started=$(date +%s)

source scripts/lib.sh
bench=$(built_product test-autobahn kioskd-bench "${1:-}")

venv=${AUTOBAHN_VENV:-$root/.venv-autobahn}
scripts/autobahn-venv.sh "$venv"

out=$root/.build/autobahn
rm -rf "$out"
mkdir -p "$out/echo" "$out/bridge"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

# The servers, in the background of this shell (their pids for the cleanup); each one's first
# stdout line, `listening PORT` or `url URL`, is its address.
start() {
  local name=$1; shift
  "$bench" "$@" >"$out/$name.out" 2>"$out/$name.log" &
  pids+=($!)
}
address() {
  local name=$1 pid=$2
  for _ in $(seq 1 300); do
    if [ -s "$out/$name.out" ]; then
      head -1 "$out/$name.out" | cut -d' ' -f2
      return
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "[test-autobahn] $name ended before listening:" >&2
      tail -20 "$out/$name.log" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "[test-autobahn] $name did not listen within 30 s" >&2
  return 1
}

start echo --serve-autobahn-echo 0; echo_pid=$!
start echo-16m --serve-autobahn-echo 0 $((16 << 20)); echo_16m_pid=$!
start bridge --serve-autobahn-bridge 0; bridge_pid=$!
echo_port=$(address echo "$echo_pid")
echo_16m_port=$(address echo-16m "$echo_16m_pid")
bridge_url=$(address bridge "$bridge_pid")

# The specs with the addresses in (the bridge's URL carries its token: no sed, `&` is special).
fill() {
  python3 -c 'import sys
text = open(sys.argv[1]).read()
for pair in sys.argv[3:]:
    key, value = pair.split("=", 1)
    text = text.replace("@" + key + "@", value)
open(sys.argv[2], "w").write(text)' "$@"
}
fill tests/autobahn/kioskd-echo.json "$out/echo/spec.json" ECHO_PORT="$echo_port" ECHO_16M_PORT="$echo_16m_port"
fill tests/autobahn/kioskd-bridge.json "$out/bridge/spec.json" BRIDGE_URL="$bridge_url"
"$venv/bin/python" tests/autobahn/cases.py "$out/echo/spec.json" "$out/bridge/spec.json" >"$out/expected.json"

# wstest exits 0 whatever happens (check.py reads the reports); bounded, as a testee that
# swallows a 9.* message without closing would hold a case for up to 1000 s. The bridge's run is
# mostly 1-3 s waits, so it runs beside the echo's.
echo "[test-autobahn] wstest fuzzingclient: (a) ws://127.0.0.1:$echo_port/ and :$echo_16m_port/ (16 MiB), (b) the bridge on ${bridge_url%%/api*}"
(cd "$out/bridge" && timeout 300 "$venv/bin/wstest" -m fuzzingclient -s spec.json >wstest.log 2>&1) & bridge_run=$!
(cd "$out/echo" && timeout 600 "$venv/bin/wstest" -m fuzzingclient -s spec.json >wstest.log 2>&1) || echo "[test-autobahn] wstest (a) ended with $?" >&2
wait "$bridge_run" || echo "[test-autobahn] wstest (b) ended with $?" >&2

status=0
python3 tests/autobahn/check.py "$out/expected.json" "$out/echo" "$out/bridge" || status=$?
echo "[test-autobahn] $(( $(date +%s) - started )) s; reports in $out/{echo,bridge}/reports/servers/index.html"
exit $status

#!/usr/bin/env bash
# API conformance: schemathesis (tests/schemathesis/requirements.txt, in the venv
# .venv-schemathesis) against a real daemon's control API, with every phase (examples, coverage,
# fuzzing, stateful) and every check, documented by Sources/Control/API/openapi.json.
#   scripts/test-schemathesis.sh [KIOSKD_BINARY] [schemathesis run arguments…]
# KIOSKD_BINARY: default $(swift build --show-bin-path)/kioskd (this script does not build it).
# As root, with what scripts/setup.sh installs: the control socket lets root in, and the tasks
# schemathesis creates boot real Chromiums as `kioskd` (one at a time here).
# Environment: SCHEMATHESIS_MAX_EXAMPLES (default 50), SCHEMATHESIS_SEED (default: a random one,
# printed; pass it to reproduce a run). Reports (JUnit, HAR, JSON) and, on a failure, the
# daemon's log: .build/schemathesis/.
#
# schemathesis speaks TCP only: tests/schemathesis/relay.py relays a loopback port to the control
# socket (as root, so the peer check passes). Two runs: every operation but POST /v1/drain, then,
# once the tasks are stopped, POST /v1/drain alone, since a drain cannot be undone and every
# create after it would be answered 503 draining.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

source scripts/lib.sh
binary=$(built_product test-schemathesis kioskd "${1:-}")
[ $# -gt 0 ] && shift
if [ "$(id -u)" != 0 ]; then
  echo "[test-schemathesis] run as root: the sessions run as the kioskd user" >&2
  exit 1
fi

venv=$root/.venv-schemathesis
if [ ! -x "$venv/bin/python" ]; then
  echo "[test-schemathesis] creating $venv"
  /usr/bin/python3 -m venv "$venv"
fi
# A no-op once the pins are installed; they come from PyPI the first time.
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/schemathesis/requirements.txt

max_examples=${SCHEMATHESIS_MAX_EXAMPLES:-50}
seed=${SCHEMATHESIS_SEED:-$(( (RANDOM << 15) | RANDOM ))}
document=$root/Sources/Control/API/openapi.json
reports=$root/.build/schemathesis
rm -rf "$reports"
mkdir -p "$reports"

# Sessions run as another user, who must be able to reach runtime.dir: 0711. Displays and ports
# of their own, so this can run beside the other suites.
dir=$(mktemp -d /tmp/kioskd-schemathesis-XXXXXX)
chmod 0711 "$dir"
socket=$dir/run/control.sock
public_port=$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$dir/kioskd.yaml" <<EOF
state:
  dir: $dir/state
runtime:
  dir: $dir/run
control:
  socket: $socket
public:
  listen: 127.0.0.1:$public_port
shutdown:
  timeout: 10s
# One browser at a time and a short queue: a create beyond them is a documented 503 queue_full
# (tests/schemathesis/schemathesis.toml and hooks.py say how it is checked). Short defaults, so
# that tasks schemathesis leaves behind end by themselves.
tasks:
  max_sessions: 1
  max_queued: 2
  start_timeout: 10s
  max_lifetime: 30s
# Host memory pressure (a build beside the run) would hold every task queued: admission under
# pressure is not what this run is about.
capacity:
  pressure_high: 100
  pressure_low: 99
sessions:
  displays: 670-699
  ports: 30700-30799
EOF

daemon=
relay=
status=0
# SIGTERM, and SIGKILL if it is still there after 30 s (shutdown.timeout is 10 s); its exit code.
stop_daemon() {
  local code=0
  kill -TERM "$daemon" 2>/dev/null || true
  for _ in $(seq 300); do kill -0 "$daemon" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$daemon" 2>/dev/null; then
    echo "[test-schemathesis] kioskd did not stop within 30 s: killed" >&2
    kill -KILL "$daemon"
  fi
  wait "$daemon" || code=$?
  daemon=
  return $code
}
cleanup() {
  if [ -n "$relay" ]; then kill "$relay" 2>/dev/null; wait "$relay" 2>/dev/null || true; fi
  if [ -n "$daemon" ]; then stop_daemon || true; fi
  rm -rf "$dir"
}
trap cleanup EXIT

control() { curl --silent --show-error --max-time 30 --unix-socket "$socket" "$@"; }

echo "[test-schemathesis] starting kioskd ($binary) in $dir"
env -i PATH=/usr/bin:/bin LANG=C.UTF-8 KIOSKD_LOG_FORMAT=text \
  "$binary" serve --config "$dir/kioskd.yaml" </dev/null >"$dir/kioskd.log" 2>&1 &
daemon=$!
for _ in $(seq 600); do
  control http://kioskd/v1/health 2>/dev/null | grep -q '"status":"ok"' && break
  kill -0 "$daemon" 2>/dev/null || { echo "[test-schemathesis] kioskd exited before it was ready:" >&2; cat "$dir/kioskd.log" >&2; exit 1; }
  sleep 0.1
done
if ! control http://kioskd/v1/health | grep -q '"status":"ok"'; then
  echo "[test-schemathesis] kioskd did not answer within 60 s:" >&2
  cat "$dir/kioskd.log" >&2
  exit 1
fi

# The document tested is the tree's; the binary must serve the same one, or it is out of date.
control http://kioskd/v1/openapi.json >"$dir/served.json"
if ! "$venv/bin/python" -c 'import json, sys; sys.exit(json.load(open(sys.argv[1])) != json.load(open(sys.argv[2])))' "$dir/served.json" "$document"; then
  echo "[test-schemathesis] GET /v1/openapi.json differs from $document: rebuild kioskd" >&2
  exit 1
fi

"$venv/bin/python" tests/schemathesis/relay.py "$socket" "$dir/relay.port" 2>"$dir/relay.log" &
relay=$!
for _ in $(seq 100); do [ -s "$dir/relay.port" ] && break; sleep 0.1; done
port=$(cat "$dir/relay.port")
echo "[test-schemathesis] control socket relayed at 127.0.0.1:$port; seed $seed, at most $max_examples examples per operation"

# --max-response-time: the documented long polls (?wait= on creates and events) hold a request
# up to 25 s; the check's own default (10 s) would report them. --workers 1: with 2, Debian's
# Python 3.11.2 failed hypothesis's ast.parse once ("AST constructor recursion depth mismatch",
# CPython gh-106905, rare, seen in threaded programs), an error of the run, not of kioskd. No
# generation database: a run does not depend on the last one. timeout(1) bounds each run. The
# script's own arguments go to both runs.
run() {
  local name=$1
  shift
  echo "[test-schemathesis] $name"
  (cd "$reports" && SCHEMATHESIS_HOOKS=$root/tests/schemathesis/hooks.py timeout --kill-after=10 900 \
    "$venv/bin/schemathesis" --config-file "$root/tests/schemathesis/schemathesis.toml" run "$document" \
    --url "http://127.0.0.1:$port" \
    --phases examples,coverage,fuzzing,stateful \
    --checks all --max-response-time 30 \
    --max-examples "$max_examples" --seed "$seed" --generation-database none \
    --request-timeout 40 --workers 1 --no-color \
    --report junit,har,json --report-dir "$reports/$name" \
    "$@") && return 0
  status=1
  return 1
}

run api --exclude-operation-id drain "$@" || true

# Stop what the first run left, so that a drain's ?wait= has nothing to wait for.
ids=$(control "http://kioskd/v1/tasks?state=queued,starting,running&limit=1000" \
  | "$venv/bin/python" -c 'import json, sys; print(" ".join(t["task_id"] for t in json.load(sys.stdin)))')
for id in $ids; do control -o /dev/null -X POST "http://kioskd/v1/tasks/$id/stop"; done
for _ in $(seq 300); do
  control http://kioskd/v1/capacity | grep -q '"active":0,"queued":0' && break
  sleep 0.1
done

# After a passing run (one that failed may have stopped before any drain was answered 200).
if run drain --include-operation-id drain "$@" && ! control http://kioskd/v1/health | grep -q '"status":"draining"'; then
  echo "[test-schemathesis] kioskd is not draining after POST /v1/drain" >&2
  status=1
fi

kill "$relay" 2>/dev/null; wait "$relay" 2>/dev/null || true
relay=
code=0
stop_daemon || code=$?
if [ "$code" != 0 ]; then
  echo "[test-schemathesis] kioskd exited with $code" >&2
  status=1
fi
if [ "$status" != 0 ]; then
  cp "$dir/kioskd.log" "$reports/kioskd.log"
  echo "[test-schemathesis] FAILED (seed $seed): reports and the daemon's log in $reports" >&2
fi
exit $status

#!/bin/bash
# Runs inside the container booted by scripts/test-systemd.sh, as its probe unit: installs the
# package and checks kioskd under this real systemd. Each check prints what it measured; a
# failure names the check and shows the unit's journal.
set -uo pipefail
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
SOCK=/run/kioskd/control.sock
now() { date +%s%N; }
ms() { echo $(( ($2 - $1) / 1000000 )); }
fail() {
  echo "FAIL [$1]: $2"
  echo "--- journalctl -u kioskd (last 60 lines)"
  journalctl -u kioskd --no-pager -n 60 -o short-monotonic
  exit 1
}
ok() { echo "ok   [$1] $2"; }
prop() { systemctl show -P "$1" kioskd; }
# Polls a condition every 50 ms until it holds or the deadline (seconds) passes.
wait_for() {
  local deadline=$(( $(date +%s) + $1 )); shift
  until "$@"; do [ "$(date +%s)" -lt "$deadline" ] || return 1; sleep 0.05; done
}
active_with_new_pid() { [ "$(prop ActiveState)" = active ] && [ "$(prop MainPID)" != "$1" ] && [ "$(prop MainPID)" != 0 ]; }
kioskd_json() { kioskd "$@" --socket "$SOCK" --json; }

# --- install
# A container image's policy-rc.d (exit 101) forbids starting services from maintainer scripts;
# this container is a host, where the package starts its service. (/usr is an overlay here.)
rm -f /usr/sbin/policy-rc.d
dpkg -i /out/kioskd.deb >/tmp/dpkg.log 2>&1 || { cat /tmp/dpkg.log; fail install "dpkg -i failed"; }
getent passwd kioskd >/dev/null || fail install "sysusers.d made no kioskd user"
ok install "dpkg -i: $(dpkg-query -W -f='${Package} ${Version}, ${Installed-Size} KiB installed' kioskd); the user kioskd exists"
wait_for 60 test "$(prop ActiveState)" = active || fail install "postinst's start did not make kioskd active ($(prop ActiveState))"

# --- active only after READY=1; STATUS shown
systemctl stop kioskd || fail ready "stop before the measured start failed"
t0=$(now)
systemctl start --no-block kioskd
states=""
until [ "$(prop ActiveState)" = active ]; do
  s=$(prop ActiveState); case "$states" in *"$s"*) ;; *) states="$states $s" ;; esac
  [ $(( $(now) - t0 )) -lt 60000000000 ] || fail ready "not active within 60 s (states:$states)"
  [ "$s" = failed ] && fail ready "the start failed"
  sleep 0.02
done
t1=$(now)
case "$states" in *activating*) ;; *) fail ready "never seen activating before active (states:$states): READY=1 does not gate it" ;; esac
status=$(prop StatusText)
[ -n "$status" ] || fail ready "systemctl shows no STATUS"
systemctl status kioskd --no-pager | grep -q "Status: \"$status\"" || fail ready "systemctl status does not show the STATUS"
ok ready "systemctl start → active in $(ms "$t0" "$t1") ms, activating until READY=1; Status: \"$status\""

# --- a task with Chromium's sandbox on, and kioskd doctor
task=$(kioskd_json task start --url about:blank --wait) || fail task "task start failed: $task"
id=$(echo "$task" | python3 -c 'import json,sys; print(json.load(sys.stdin)["task_id"])')
state=$(kioskd_json task get "$id" | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')
[ "$state" = running ] || fail task "task $id is $state, not running"
cgroup=/sys/fs/cgroup/system.slice/kioskd.service
session_groups=$(find "$cgroup/sessions" -mindepth 2 -maxdepth 2 -type d -name 'd*')
[ -n "$session_groups" ] || fail task "no session cgroup under $cgroup/sessions (unified mode)"
browser=$(pgrep -u kioskd -f '^/usr/lib/chromium/chromium .*--kiosk' | head -1)
[ -n "$browser" ] || fail task "no Chromium browser process"
tr '\0' ' ' </proc/"$browser"/cmdline | grep -q -- --no-sandbox && fail task "Chromium runs with --no-sandbox"
renderer=$(pgrep -u kioskd -f 'chromium .*--type=renderer' | head -1)
[ -n "$renderer" ] || fail task "no renderer"
[ "$(readlink /proc/"$renderer"/ns/user)" != "$(readlink /proc/"$browser"/ns/user)" ] || fail task "the renderer shares the browser's user namespace: no sandbox"
[ "$(readlink /proc/"$renderer"/ns/pid)" != "$(readlink /proc/"$browser"/ns/pid)" ] || fail task "the renderer shares the browser's pid namespace"
grep -q "$session_groups" <(sed 's|^0::|/sys/fs/cgroup|' /proc/"$browser"/cgroup) || fail task "Chromium is not in its session's cgroup $session_groups"
ok task "task $id running; renderer $renderer in its own user and pid namespaces; Chromium in ${session_groups#/sys/fs/cgroup}"
doctor=$(kioskd doctor --config /etc/kioskd/kioskd.yaml 2>&1) || { echo "$doctor"; fail doctor "kioskd doctor failed"; }
echo "$doctor" | sed 's/^/       /'
echo "$doctor" | grep -Eq "^(ok  |warn) cgroups: cgroup v2, kioskd.service delegated" || fail doctor "doctor does not see the delegation"
ok doctor "kioskd doctor passes"

# --- kill -9: systemd restarts it, the sweep removes the old session, the task is interrupted
old=$(prop MainPID); session_dir=$(ls -d /run/kioskd/sessions/d* | head -1)
t0=$(now)
kill -9 "$old"
wait_for 60 active_with_new_pid "$old" || fail kill9 "not restarted and active within 60 s"
t1=$(now)
state=$(kioskd_json task get "$id" | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')
[ "$state" = interrupted ] || fail kill9 "task $id is $state after the restart, not interrupted"
[ ! -e "$session_dir" ] || fail kill9 "the old session's directory $session_dir is still there"
for g in $session_groups; do [ ! -e "$g" ] || fail kill9 "the old session's cgroup $g is still there"; done
pgrep -u kioskd -f chromium >/dev/null && fail kill9 "a Chromium of the old session still runs"
ok kill9 "restarted and active in $(ms "$t0" "$t1") ms (NRestarts=$(prop NRestarts)); task interrupted; old session's directory and cgroup gone"

# --- socket activation: a client that connects while kioskd is down is served, not refused
for u in kioskd.socket kioskd-public.socket; do
  [ "$(systemctl show -P ActiveState $u)" = active ] || fail activation "$u is $(systemctl show -P ActiveState $u), not active"
done
[ "$(stat -c %G:%a $SOCK)" = kioskd:660 ] || fail activation "the control socket is $(stat -c %G:%a $SOCK), not kioskd:660"
old=$(prop MainPID)
kill -9 "$old"
# RestartSec=2s: kioskd is down, its sockets held by systemd, until the restart.
wait_for 10 test "$(prop MainPID)" = 0 || fail activation "kioskd still runs after kill -9 (MainPID=$(prop MainPID))"
down=$(prop SubState)
t0=$(now)
curl -sS -o /tmp/public.out -w '%{http_code}' -m 60 http://127.0.0.1:8080/health >/tmp/public.code 2>/tmp/public.err &
public_curl=$!
curl -sS -o /tmp/control.out -w '%{http_code}' -m 60 --unix-socket "$SOCK" http://kioskd/v1/health >/tmp/control.code 2>/tmp/control.err &
control_curl=$!
wait "$public_curl" "$control_curl"
t1=$(now)
[ "$(cat /tmp/public.code)" = 200 ] || fail activation "GET /health during the restart: $(cat /tmp/public.code) $(cat /tmp/public.out /tmp/public.err)"
[ "$(cat /tmp/control.code)" = 200 ] || fail activation "GET /v1/health on the control socket during the restart: $(cat /tmp/control.code) $(cat /tmp/control.out /tmp/control.err)"
active_with_new_pid "$old" || fail activation "kioskd is not active again after the restart"
for name in public control; do journalctl -u kioskd --no-pager -o cat | grep -q "systemd's socket '$name'" || fail activation "kioskd did not serve systemd's socket '$name'"; done
ok activation "kill -9, then clients on the public port and the control socket while kioskd was down: both 200 after $(ms "$t0" "$t1") ms (the restart), none refused (kioskd was $down when they connected)"

# --- a hung daemon: the watchdog. WatchdogSec=3s by a drop-in, so the test waits seconds, not
# the unit's 30 s; the path (no WATCHDOG=1 → WatchdogSignal → restart) is the same.
mkdir -p /run/systemd/system/kioskd.service.d
printf '[Service]\nWatchdogSec=3s\n' >/run/systemd/system/kioskd.service.d/watchdog.conf
systemctl daemon-reload && systemctl restart kioskd || fail watchdog "restart with the short watchdog failed"
old=$(prop MainPID)
t0=$(now)
kill -STOP "$old"
wait_for 60 active_with_new_pid "$old" || fail watchdog "not restarted within 60 s of SIGSTOP"
t1=$(now)
recovery=$(ms "$t0" "$t1")
[ "$recovery" -le 23000 ] || fail watchdog "recovered in $recovery ms, over WatchdogSec 3 s + 20 s"
journalctl -u kioskd --no-pager | grep -q "Watchdog timeout" || fail watchdog "no watchdog timeout in the journal"
ok watchdog "SIGSTOP → watchdog timeout → active again in $recovery ms (WatchdogSec=3s)"
rm -r /run/systemd/system/kioskd.service.d && systemctl daemon-reload

# --- stop: exit 0 within TimeoutStopSec, nothing left in the unit's cgroup
kioskd_json task start --url about:blank --wait >/dev/null || fail stop "a task to stop with did not start"
t0=$(now)
systemctl stop kioskd
t1=$(now)
[ "$(prop Result)" = success ] || fail stop "Result=$(prop Result) after stop"
[ "$(prop ExecMainStatus)" = 0 ] || fail stop "exit status $(prop ExecMainStatus)"
left=$(cat $(find "$cgroup" -name cgroup.procs 2>/dev/null) 2>/dev/null)
[ -z "$left" ] || fail stop "processes left in the unit's cgroup: $left"
pgrep -u kioskd >/dev/null && fail stop "processes of kioskd's user still run: $(pgrep -u kioskd -a)"
ok stop "systemctl stop with a running task: exit 0 in $(ms "$t0" "$t1") ms (TimeoutStopSec $(prop TimeoutStopUSec)); the cgroup is empty"

# --- journal priorities: info records at 6, and -p warning shows none of them
journalctl -u kioskd -o json --no-pager | python3 -c '
import json, sys
recs = [json.loads(l) for l in sys.stdin]
by = lambda m: [int(r["PRIORITY"]) for r in recs if r.get("MESSAGE", "").startswith(m)]
assert by("starting") and set(by("starting")) == {6}, ("starting", by("starting"))
assert by("stopped") and set(by("stopped")) == {6}, ("stopped", by("stopped"))
' || fail journal "kioskd's info records do not carry priority 6"
warnings=$(journalctl -u kioskd -p warning --no-pager -o cat _COMM=kioskd)
echo "$warnings" | grep -E "^(starting|stopped)" && fail journal "-p warning shows info records"
ok journal "info records at priority 6; -p warning shows $(echo -n "$warnings" | grep -c .) kioskd records, none below warning"

# --- purge: what the package installed is gone, nothing runs
systemctl start kioskd || fail purge "start before the purge failed"
files=$(dpkg -L kioskd | while read -r f; do [ -f "$f" ] && echo "$f"; done)
dpkg --purge kioskd >/tmp/purge.log 2>&1 || { cat /tmp/purge.log; fail purge "dpkg --purge failed"; }
for f in $files /var/lib/kioskd /run/kioskd /etc/kioskd; do [ ! -e "$f" ] || fail purge "$f is still there"; done
pgrep -u kioskd >/dev/null && fail purge "processes of kioskd's user still run: $(pgrep -u kioskd -a)"
for u in kioskd.service kioskd.socket kioskd-public.socket; do
  [ "$(systemctl show -P LoadState $u)" = not-found ] || fail purge "$u is still loaded"
done
[ ! -e "$SOCK" ] || fail purge "the control socket $SOCK is still there"
curl -s -m 2 http://127.0.0.1:8080/health >/dev/null && fail purge "something still listens on the public port"
nft list tables | grep -q kioskd && fail purge "the port guard's nftables table is still there"
ok purge "dpkg --purge: $(echo "$files" | wc -l) files, /var/lib/kioskd, /run/kioskd and /etc/kioskd gone; no unit or socket left; nothing runs; no nft table"

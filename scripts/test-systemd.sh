#!/usr/bin/env bash
# kioskd under a real systemd: builds the .deb, boots systemd in a container (systemd-nspawn,
# pure cgroup v2, the host's /usr under an overlay so nothing is written to the host, a private
# network so the port guard's table and the public port stay in the container), installs the
# package with dpkg and checks the unit: READY and STATUS, a task with Chromium's sandbox,
# kioskd doctor, kill -9, the watchdog, stop, journal priorities, purge. Bounded: the container
# is killed after 300 s. Run by scripts/test.sh; needs root and systemd-container.
#   scripts/test-systemd.sh [--deb PATH]    (default: scripts/package.sh builds one)
set -euo pipefail
cd "$(dirname "$0")/.."

deb=""
while [ $# -gt 0 ]; do
  case "$1" in
    --deb) deb="${2:?--deb needs a path}"; shift 2 ;;
    *) echo "test-systemd.sh: unknown argument '$1' (--deb PATH)" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "test-systemd.sh: needs root (systemd-nspawn)" >&2; exit 1; }
command -v systemd-nspawn >/dev/null || { echo "test-systemd.sh: no systemd-nspawn: apt-get install systemd-container (scripts/setup.sh --tests does)" >&2; exit 1; }
[ -n "$deb" ] || deb=$(scripts/package.sh | tail -1)
deb=$(realpath "$deb")

# Lint, with what is known and accepted: embedded-library libyaml (Yams, a SwiftPM dependency,
# is linked in statically like the whole Swift runtime) and no-manual-page (`kioskd --help` and
# the README are the manual for now).
echo "[systemd] lintian $(basename "$deb")"
lintian --fail-on error,warning --suppress-tags embedded-library,no-manual-page "$deb"

R=$(mktemp -d /tmp/kioskd-systemd-root.XXXXXX)   # the container's root: its own /etc and /var
UP=$(mktemp -d /tmp/kioskd-systemd-usr.XXXXXX)   # what dpkg writes to /usr inside
OUT=$(mktemp -d /tmp/kioskd-systemd-out.XXXXXX)  # the checks' log and figures
cleanup() { rm -rf "$R" "$UP" "$OUT"; }
trap cleanup EXIT

chmod 0755 "$R" "$UP"    # mktemp made them 0700: kioskd could not reach / or /usr (the overlay takes its upper dir's mode)
mkdir -p "$R"/{usr,var,tmp,run,root,home,proc,sys,dev,mnt,opt,srv}
chmod 1777 "$R/tmp"
for l in bin lib lib64 sbin; do ln -s usr/$l "$R/$l"; done
cp -a /etc "$R/etc"
rm -f "$R/etc/os-release"; cp /usr/lib/os-release "$R/etc/os-release"
mkdir -p "$R/usr/lib" "$R/var/lib"; cp /usr/lib/os-release "$R/usr/lib/os-release"
cp -a /var/lib/dpkg "$R/var/lib/"
systemd-machine-id-setup --root="$R" >/dev/null
# A fresh host as far as kioskd goes: no kioskd user, configuration or policy yet (the package
# brings them), and none of the host's services started at boot.
for f in passwd group shadow gshadow; do sed -i '/^kioskd:/d' "$R/etc/$f"; done
rm -rf "$R/etc/kioskd" "$R/etc/chromium/policies/managed/kioskd.json" "$R/etc/systemd/system/multi-user.target.wants"
cp "$deb" "$OUT/kioskd.deb"
cp tests/systemd/checks.sh "$OUT/checks.sh"
cat >"$OUT/probe.service" <<'EOF'
[Unit]
Description=kioskd systemd checks
[Service]
Type=oneshot
ExecStart=/bin/sh -c '/out/checks.sh >/out/log 2>&1; echo $? >/out/rc; systemctl poweroff --no-block'
EOF

echo "[systemd] booting systemd in a container with $(basename "$deb") ($(du -k "$deb" | cut -f1) KiB)"
rc=0
SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 timeout --kill-after=10 300 systemd-nspawn --keep-unit --register=no -q --private-network \
    --directory="$R" --overlay=/usr:"$UP":/usr --bind-ro=/opt --bind="$OUT":/out \
    --bind-ro="$OUT/probe.service":/etc/systemd/system/probe.service \
    -b -- systemd.firstboot=off systemd.wants=probe.service >"$OUT/console" 2>&1 || rc=$?
cat "$OUT/log" 2>/dev/null || true
if [ ! -f "$OUT/rc" ]; then
  echo "[systemd] FAIL: the checks did not finish (nspawn exit $rc, 300 s bound); the container's console:" >&2
  tail -40 "$OUT/console" >&2
  exit 1
fi
[ "$(cat "$OUT/rc")" = 0 ] || { echo "[systemd] FAIL (see above)" >&2; exit 1; }
echo "[systemd] all checks passed"

#!/usr/bin/env bash
# Builds kioskd_<version>_amd64.deb with dpkg-deb, without the network.
#   scripts/package.sh                       release build (static Swift runtime), then the package
#   scripts/package.sh --binary PATH         package an already built kioskd
#   scripts/package.sh --out DIR             where the .deb goes (default: .build/deb)
# Prints the .deb's path on the last line.
set -euo pipefail
cd "$(dirname "$0")/.."

binary="" out=".build/deb"
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="${2:?--binary needs a path}"; shift 2 ;;
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    *) echo "package.sh: unknown argument '$1' (--binary PATH, --out DIR)" >&2; exit 2 ;;
  esac
done

version=$(sed -n 's/^public let kioskdVersion = "\(.*\)"$/\1/p' Sources/KioskdDaemon/CLI/Version.swift)
[ -n "$version" ] || { echo "package.sh: no version in Sources/KioskdDaemon/CLI/Version.swift" >&2; exit 1; }

if [ -z "$binary" ]; then
  command -v swift >/dev/null 2>&1 || export PATH=/opt/swift/usr/bin:$PATH
  swift build -c release --static-swift-stdlib --product kioskd >&2
  binary="$(swift build -c release --static-swift-stdlib --show-bin-path)/kioskd"
fi
[ -x "$binary" ] || { echo "package.sh: $binary is not an executable" >&2; exit 1; }

# No project address exists yet: DEBFULLNAME and DEBEMAIL name whoever builds the package.
maintainer="${DEBFULLNAME:-kioskd authors} <${DEBEMAIL:-kioskd@example.com}>"

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
pkg="$root/kioskd"
doc="$pkg/usr/share/doc/kioskd"
install -d -m 0755 "$pkg/DEBIAN" "$doc"
install -D -m 0755 "$binary" "$pkg/usr/bin/kioskd"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$pkg/usr/bin/kioskd"
for unit in kioskd.service kioskd.socket kioskd-public.socket; do
  install -D -m 0644 "systemd/$unit" "$pkg/lib/systemd/system/$unit"
done

# The configuration: every key with its default, but for the port guard, which the packaged unit
# installs as root around a kioskd without capabilities.
install -d -m 0755 "$pkg/etc/kioskd"
sed 's/^  port_guard: true$/  port_guard: external    # the packaged unit installs it (kioskd port-guard, as root)/' config/kioskd.yaml >"$pkg/etc/kioskd/kioskd.yaml"
grep -q '^  port_guard: external' "$pkg/etc/kioskd/kioskd.yaml" || { echo "package.sh: config/kioskd.yaml has no 'port_guard: true' line to change" >&2; exit 1; }
chmod 0644 "$pkg/etc/kioskd/kioskd.yaml"
# Where Debian's Chromium reads managed policies; root-owned, so the session user cannot change them.
install -D -m 0644 config/chromium-policies/kioskd.json "$pkg/etc/chromium/policies/managed/kioskd.json"

install -d -m 0755 "$pkg/usr/lib/sysusers.d" "$pkg/usr/lib/tmpfiles.d"
cat >"$pkg/usr/lib/sysusers.d/kioskd.conf" <<'EOF'
# kioskd's user: the daemon and its sessions run as it (no login, no home of its own).
u kioskd - "kioskd browser-kiosk supervisor" /var/lib/kioskd /usr/sbin/nologin
EOF
cat >"$pkg/usr/lib/tmpfiles.d/kioskd.conf" <<'EOF'
# kioskd's state (the SQLite store, the viewer-token key, session records); the unit's
# StateDirectory= makes it too, this keeps it for `kioskd doctor` and tools run outside the unit.
d /var/lib/kioskd 0750 kioskd kioskd -
EOF
chmod 0644 "$pkg/usr/lib/sysusers.d/kioskd.conf" "$pkg/usr/lib/tmpfiles.d/kioskd.conf"

install -m 0644 README.md docs/ARCHITECTURE.md docs/metrics.md "$doc/"
cat >"$doc/copyright" <<'EOF'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: kioskd
Source: https://github.com/kioskd/kioskd

Files: *
Copyright: 2025 kioskd authors
License: Apache-2.0

License: Apache-2.0
 On Debian systems, the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
EOF
printf 'kioskd (%s) unstable; urgency=medium\n\n  * Package built by scripts/package.sh.\n\n -- %s  %s\n' \
  "$version" "$maintainer" "$(date -R -d @"${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")" | gzip -9n >"$doc/changelog.gz"   # a native package (no Debian revision)
chmod 0644 "$doc"/*

cat >"$pkg/DEBIAN/control" <<EOF
Package: kioskd
Version: $version
Architecture: amd64
Maintainer: $maintainer
Installed-Size: $(du -sk --exclude=DEBIAN "$pkg" | cut -f1)
Depends: libc6, libgcc-s1, libstdc++6, libsqlite3-0, libx11-6, libxtst6, init-system-helpers (>= 1.54~), systemd, nftables, xvfb, openbox, x11vnc, chromium, fonts-dejavu-core, novnc
Suggests: websockify, postgresql-client
Section: web
Priority: optional
Homepage: https://github.com/kioskd/kioskd
Description: supervisor for live, locked-down browser kiosk sessions
 kioskd runs Xvfb, Openbox, x11vnc and Chromium per session as one supervised
 tree with Erlang/OTP semantics, serves a control API on a Unix socket, and
 bridges viewers' WebSockets (noVNC) to the sessions. Each session has its own
 cgroup; Chromium runs with its sandbox under a hardened systemd unit.
EOF
cat >"$pkg/DEBIAN/conffiles" <<'EOF'
/etc/kioskd/kioskd.yaml
/etc/chromium/policies/managed/kioskd.json
EOF

# Maintainer scripts: what dh_installsystemd and dh_installsysusers would generate.
cat >"$pkg/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = "configure" ]; then
	systemd-sysusers kioskd.conf
	systemd-tmpfiles --create kioskd.conf
	# The configuration may hold a PostgreSQL password: readable by kioskd, not by everyone.
	chown root:kioskd /etc/kioskd/kioskd.yaml
	chmod 0640 /etc/kioskd/kioskd.yaml
fi
if [ "$1" = "configure" ] || [ "$1" = "abort-upgrade" ] || [ "$1" = "abort-deconfigure" ] || [ "$1" = "abort-remove" ]; then
	for unit in kioskd.socket kioskd-public.socket kioskd.service; do
		# This will only remove masks created by d-s-h on package removal.
		deb-systemd-helper unmask "$unit" >/dev/null || true
		# was-enabled defaults to true, so new installations run enable.
		if deb-systemd-helper --quiet was-enabled "$unit"; then
			deb-systemd-helper enable "$unit" >/dev/null || true
		else
			deb-systemd-helper update-state "$unit" >/dev/null || true
		fi
	done
	if [ -d /run/systemd/system ]; then
		systemctl --system daemon-reload >/dev/null || true
		# The sockets first: the service starts with them (socket activation).
		deb-systemd-invoke start 'kioskd.socket' 'kioskd-public.socket' >/dev/null || true
		if [ -n "$2" ]; then _dh_action=restart; else _dh_action=start; fi
		deb-systemd-invoke $_dh_action 'kioskd.service' >/dev/null || true
	fi
fi
exit 0
EOF
cat >"$pkg/DEBIAN/prerm" <<'EOF'
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
	# The sockets too: a connection to them would start kioskd again.
	deb-systemd-invoke stop 'kioskd.socket' 'kioskd-public.socket' 'kioskd.service' >/dev/null || true
fi
exit 0
EOF
cat >"$pkg/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = "remove" ] && [ -d /run/systemd/system ]; then
	systemctl --system daemon-reload >/dev/null || true
fi
for unit in kioskd.socket kioskd-public.socket kioskd.service; do
	if [ "$1" = "remove" ] && [ -x "/usr/bin/deb-systemd-helper" ]; then
		deb-systemd-helper mask "$unit" >/dev/null || true
	fi
	if [ "$1" = "purge" ] && [ -x "/usr/bin/deb-systemd-helper" ]; then
		deb-systemd-helper purge "$unit" >/dev/null || true
		deb-systemd-helper unmask "$unit" >/dev/null || true
	fi
done
if [ "$1" = "purge" ]; then
	# The store, the token key and the sessions' records and directories. The kioskd user stays
	# (Debian's rule for system users: files elsewhere may still belong to it).
	rm -rf /var/lib/kioskd /run/kioskd
	rmdir --ignore-fail-on-non-empty /etc/kioskd 2>/dev/null || true
fi
exit 0
EOF
chmod 0755 "$pkg/DEBIAN/postinst" "$pkg/DEBIAN/prerm" "$pkg/DEBIAN/postrm"

mkdir -p "$out"
deb="$out/kioskd_${version}_amd64.deb"
dpkg-deb --root-owner-group -Zxz --build "$pkg" "$deb" >&2
echo "$deb"

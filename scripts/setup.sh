#!/usr/bin/env bash
# Idempotent set-up on Debian 12, as root: system packages, the service user, the build.
#   scripts/setup.sh            packages + release build of kioskd
#   scripts/setup.sh --tests    packages + debug build with the tests
set -euo pipefail
cd "$(dirname "$0")/.."

# What kioskd and its tests need from Debian. Each entry: package, then a file that proves it.
PACKAGES=(
  "python3:/usr/bin/python3"               # tests (http readiness probe), demo program
  "python3-venv:/usr/lib/python3.11/ensurepip/__init__.py"
  "postgresql:/usr/lib/postgresql/15/bin/postgres"   # tests and bench: the PostgreSQL store
  "libsqlite3-dev:/usr/include/sqlite3.h"  # the embedded SQLite store (GRDB)
  "systemd:/usr/bin/systemd-analyze"       # systemd-analyze verify of the unit in the tests
  "procps:/usr/bin/pgrep"
  "ca-certificates:/etc/ssl/certs/ca-certificates.crt"
  "xvfb:/usr/bin/Xvfb"                     # the session's virtual screen
  "openbox:/usr/bin/openbox"               # the session's window manager
  "x11vnc:/usr/bin/x11vnc"                 # the session's VNC server
  "x11-utils:/usr/bin/xdpyinfo"            # tests: X connection and cookie checks; xmessage, xprop
  "x11-xserver-utils:/usr/bin/xmodmap"     # tests: a keymap change under the key grabber
  "nftables:/usr/sbin/nft"                 # the port guard: sessions' ports refuse other local users
  "iproute2:/usr/sbin/ip:/bin/ip"          # tests: network namespaces and veth links (ClusterNetnsTests)
  "openssl:/usr/bin/openssl"               # tests: a certificate for the public listener's TLS
  "curl:/usr/bin/curl"                     # tests: HTTPS health check
  "libx11-dev:/usr/include/X11/Xlib.h"     # the key grabber links libX11 ...
  "libxtst-dev:/usr/include/X11/extensions/XTest.h"  # ... and libXtst (XTEST self-test)
  "chromium:/usr/lib/chromium/chromium"    # the session's browser
  "websockify:/usr/bin/websockify"         # the session's relay when bridge mode = websockify
  "novnc:/usr/share/novnc/vnc.html"        # the viewer page
  "imagemagick:/usr/bin/import"            # screenshots of a session's display (demo, tests)
  "fonts-dejavu-core:/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"  # pages render text
  "prometheus:/usr/bin/promtool"           # tests: promtool checks and unit-tests contrib/prometheus's rules
  "systemd-container:/usr/bin/systemd-nspawn"  # tests: kioskd's package under a real systemd (scripts/test-systemd.sh)
  "lintian:/usr/bin/lintian"               # tests: the package's lint (scripts/test-systemd.sh)
)

log() { printf '[setup] %s\n' "$*"; }

missing=()
for entry in "${PACKAGES[@]}"; do
  IFS=: read -r pkg files <<<"$entry"
  found=no
  IFS=: read -ra paths <<<"$files"
  for f in "${paths[@]}"; do [ -e "$f" ] && found=yes; done
  [ "$found" = yes ] || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "[setup] missing Debian packages: ${missing[*]} — run as root, or: apt-get install ${missing[*]}" >&2
    exit 1
  fi
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The Swift toolchain cannot be downloaded here: it must already be installed (/opt/swift).
if ! command -v swift >/dev/null 2>&1; then
  if [ -x /opt/swift/usr/bin/swift ]; then
    export PATH=/opt/swift/usr/bin:$PATH
  else
    echo "[setup] no Swift toolchain: install Swift 6.1 or newer (expected at /opt/swift/usr/bin/swift)" >&2
    exit 1
  fi
fi

# Chromium's managed policies lock the kiosk down (chrome://, file://, devtools:// blocked, no
# incognito, downloads, printing or file dialogs) while CDP keeps working: they deliberately leave
# DeveloperToolsAvailability unset, which would refuse the agent's CDP attach. Root-owned, so
# the browser's user cannot change them.
if [ "$(id -u)" -eq 0 ]; then
  install -D -m 0644 -o root -g root config/chromium-policies/kioskd.json /etc/chromium/policies/managed/kioskd.json
fi

# The service's own user (systemd/kioskd.service runs as it); no login, no home.
if [ "$(id -u)" -eq 0 ] && ! getent passwd kioskd >/dev/null; then
  log "creating system user kioskd"
  useradd --system --no-create-home --home-dir /var/lib/kioskd --shell /usr/sbin/nologin kioskd
fi

if [ "${1:-}" = "--tests" ]; then
  # Python clients run in the tests, from PyPI in a venv: httpx (clients/python/examples/walkthrough.py),
  # Playwright (the agent library; connect_over_cdp needs no browser download) and supervisor
  # (the peer in the benchmarks' smoke run).
  if [ ! -x .build/venv/bin/supervisord ] || ! .build/venv/bin/python3 -c "import httpx, playwright" 2>/dev/null; then
    log "installing httpx, playwright and supervisor into .build/venv"
    mkdir -p .build
    /usr/bin/python3 -m venv .build/venv
    .build/venv/bin/pip install --quiet httpx playwright supervisor
  fi
  log "building kioskd and its tests (debug)"
  swift build --build-tests
else
  log "building kioskd (release)"
  # Static Swift runtime: a self-contained binary for /usr/local/bin, and ~5 MB less RSS.
  swift build -c release --static-swift-stdlib --product kioskd
fi
log "done"

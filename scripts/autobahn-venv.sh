#!/usr/bin/env bash
# Creates, or leaves as it is when already current, a CPython 2.7 virtualenv
# holding Autobahn|Testsuite (`wstest`), for the WebSocket conformance runs.
#
#   scripts/autobahn-venv.sh [VENV_DIR]     (default: <repo>/.venv-autobahn)
#   VENV_DIR/bin/wstest -m fuzzingclient -s spec.json
#
# Needs only: pyenv's CPython 2.7.18 (override with AUTOBAHN_PYTHON27=/path/
# to/python2.7), gcc (wsaccel is a C extension built from its sdist) and PyPI.
# Everything else comes hash-pinned from tests/autobahn/:
#   bootstrap-requirements.txt  virtualenv 20.15.1 + deps, into a temp folder
#   requirements.txt            the suite and its whole dependency tree
# A stamp in the venv records the hashes of both files and the interpreter:
# a second run with the same inputs does nothing; a changed input rebuilds.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${1:-$ROOT/.venv-autobahn}
REQ=$ROOT/tests/autobahn/requirements.txt
BOOT_REQ=$ROOT/tests/autobahn/bootstrap-requirements.txt
PY27=${AUTOBAHN_PYTHON27:-${PYENV_ROOT:-$HOME/.pyenv}/versions/2.7.18/bin/python}
STAMP_NAME=.kioskd-autobahn-stamp

say() { printf 'autobahn-venv: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# The environment must not steer either pip or python elsewhere.
unset PYTHONPATH PYTHONHOME VIRTUAL_ENV PIP_REQUIRE_VIRTUALENV PIP_USER PIP_TARGET PIP_PREFIX || true

[ -f "$REQ" ] || die "missing $REQ"
[ -f "$BOOT_REQ" ] || die "missing $BOOT_REQ"
[ -x "$PY27" ] || die "CPython 2.7.18 not found at $PY27 (install it with 'pyenv install 2.7.18', or set AUTOBAHN_PYTHON27 to a python2.7)"
pyver=$("$PY27" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null) \
    || die "$PY27 does not run"
case $pyver in 2.7.*) ;; *) die "$PY27 is Python $pyver, not 2.7" ;; esac
"$PY27" -m pip --version >/dev/null 2>&1 \
    || die "$PY27 has no pip module (needed once, to fetch virtualenv; try '$PY27 -m ensurepip')"
inc=$("$PY27" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
[ -f "$inc/Python.h" ] || die "no Python.h under $inc: the 2.7 build lacks its headers (wsaccel is compiled)"
command -v gcc >/dev/null 2>&1 || die "gcc not found (wsaccel is a C extension): apt-get install gcc"

case $VENV in /*) ;; *) VENV=$PWD/$VENV ;; esac
stamp=$(cat "$REQ" "$BOOT_REQ" | sha256sum | cut -d' ' -f1)" $PY27 $pyver"

if [ -f "$VENV/$STAMP_NAME" ] && [ "$(cat "$VENV/$STAMP_NAME")" = "$stamp" ] \
    && "$VENV/bin/python" -c 'import autobahntestsuite' >/dev/null 2>&1; then
    say "$VENV is up to date ($("$VENV/bin/wstest" --autobahnversion 2>&1 | tr '\n' ' '))"
    exit 0
fi

if [ -e "$VENV" ]; then
    # Only ever delete something that is a virtualenv (or an empty folder).
    if [ -f "$VENV/pyvenv.cfg" ] || { [ -d "$VENV" ] && [ -z "$(ls -A "$VENV")" ]; }; then
        say "rebuilding $VENV (missing or stale stamp)"
        rm -rf "$VENV"
    else
        die "$VENV exists and is not a virtualenv: refusing to replace it"
    fi
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pipflags=(--disable-pip-version-check --no-input)

say "bootstrapping virtualenv with $PY27 ($pyver)"
# pyenv's pip 19.2.3 prints a Python 2 deprecation notice: it is harmless.
"$PY27" -m pip install "${pipflags[@]}" --quiet --no-warn-script-location \
    --require-hashes --no-deps --target "$tmp/boot" -r "$BOOT_REQ" \
    || die "could not install virtualenv from $BOOT_REQ (see pip's message above)"

say "creating $VENV"
PYTHONPATH=$tmp/boot "$PY27" -m virtualenv --quiet --no-download --no-periodic-update \
    --app-data "$tmp/app-data" "$VENV" \
    || die "virtualenv failed to create $VENV"

say "installing $REQ"
"$VENV/bin/python" -m pip install "${pipflags[@]}" --no-python-version-warning --quiet \
    --require-hashes --no-build-isolation -r "$REQ" \
    || die "pip could not install $REQ into $VENV"
"$VENV/bin/python" -m pip check "${pipflags[@]}" --no-python-version-warning >&2 || die "pip check found broken requirements in $VENV"
version=$("$VENV/bin/wstest" --autobahnversion 2>&1) || die "wstest does not start: $version"

printf '%s\n' "$stamp" >"$VENV/$STAMP_NAME"
say "ready: $VENV/bin/wstest ($(printf '%s' "$version" | tr '\n' ' '))"

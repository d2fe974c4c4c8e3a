#!/usr/bin/env bash
# The Python side against a real daemon: the client package's tests (clients/python) and the
# reference FastAPI layer's (examples/fastapi), in the venv .build/pyvenv.
#   scripts/test-python.sh [KIOSKD_BINARY] [pytest arguments…]
# KIOSKD_BINARY: default $(swift build --show-bin-path)/kioskd (this script does not build it).
# As root, with what scripts/setup.sh installs (the sessions boot real Chromiums as `kioskd`).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

source scripts/lib.sh
binary=$(built_product test-python kioskd "${1:-}")
[ $# -gt 0 ] && shift

venv=.build/pyvenv
if [ ! -x $venv/bin/python ]; then
  echo "[test-python] creating $venv"
  mkdir -p .build
  /usr/bin/python3 -m venv $venv
fi
echo "[test-python] installing the client package and the example's requirements into $venv"
# Not editable: the tests run against the package as a user installs it. Its build backend is
# in the tree and needs no network; the requirements come from PyPI (once; then pip finds them).
$venv/bin/pip install --quiet --disable-pip-version-check ./clients/python -r examples/fastapi/requirements.txt
# Its version does not change with every edit: put this tree's in place whatever was there.
$venv/bin/pip install --quiet --disable-pip-version-check --force-reinstall --no-deps ./clients/python

echo "[test-python] the wheel builds without network"
wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
PIP_NO_INDEX=1 PIP_FIND_LINKS= $venv/bin/pip wheel --quiet --disable-pip-version-check --no-deps -w "$wheels" ./clients/python
ls "$wheels"/kioskd-*.whl

export KIOSKD_BIN=$binary
# Both suites run; either failing fails the script (pytest's 5, nothing collected, too).
status=0
echo "[test-python] clients/python (kioskd: $binary)"
(cd clients/python && "$root/$venv/bin/python" -m pytest -p no:cacheprovider "$@") || status=1
echo "[test-python] examples/fastapi"
(cd examples/fastapi && "$root/$venv/bin/python" -m pytest -p no:cacheprovider "$@" tests) || status=1
exit $status

#!/usr/bin/env bash
# Set up and run the benchmarks: kioskd beside supervisord (PyPI `supervisor`, in a venv).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
command -v swift >/dev/null 2>&1 || export PATH=/opt/swift/usr/bin:$PATH
if [ ! -x .build-bench/venv/bin/supervisord ]; then
  echo "[bench] installing supervisor from PyPI into .build-bench/venv"
  /usr/bin/python3 -m venv .build-bench/venv
  .build-bench/venv/bin/pip install --quiet supervisor
fi
swift build -c release --static-swift-stdlib
exec "$(swift build -c release --show-bin-path)/kioskd-bench" "$@"

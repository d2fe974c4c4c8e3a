#!/usr/bin/env bash
# The Prometheus rules in contrib/prometheus: promtool checks their syntax and runs their unit
# tests (kioskd.rules.test.yml: every alert firing and staying silent). scripts/test.sh runs it.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null 2>&1; then
  echo "[check-prometheus] promtool is missing: install the Debian package 'prometheus' (apt-get install prometheus; scripts/setup.sh does)" >&2
  exit 1
fi

promtool check rules contrib/prometheus/kioskd.rules.yml
# Relative paths in the test file (rule_files) are resolved from the test file's folder.
promtool test rules contrib/prometheus/kioskd.rules.test.yml

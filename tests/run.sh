#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need (idempotently),
# then runs every test target. CI runs this same script through .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

# promtool checks every exposition the tests scrape. Debian ships it in `prometheus`.
if ! command -v promtool >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "tests/run.sh: installing promtool (Debian package prometheus)" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
promtool --version 2>&1 | head -n 1

cargo test --all-targets

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

# Third-party StatsD clients for tests/clients.rs, at the versions pinned in tests/clients/.
# Each is (re)installed only when missing or when its pin file changed since the last install.
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "tests/run.sh: installing python3-venv, nodejs and npm (Debian packages)" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    python3 python3-venv nodejs npm >/dev/null
fi
venv=target/test-env/venv
requirements=tests/clients/requirements.txt
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$requirements" "$venv/.installed-requirements.txt"; then
  echo "tests/run.sh: installing the Python StatsD clients into $venv" >&2
  python3 -m venv --clear "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    --requirement "$requirements"
  cp "$requirements" "$venv/.installed-requirements.txt"
fi
"$venv/bin/python" -c 'import importlib.metadata as m; print("statsd", m.version("statsd"), "datadog", m.version("datadog"))'
lock=tests/clients/package-lock.json
node_modules=tests/clients/node_modules
if [ ! -f "$node_modules/hot-shots/package.json" ] || ! cmp -s "$lock" "$node_modules/.installed-package-lock.json"; then
  echo "tests/run.sh: installing hot-shots into $node_modules" >&2
  # unix-dgram, hot-shots' optional dependency for Unix sockets, is a native build: not needed.
  (cd tests/clients && npm ci --omit=optional --ignore-scripts --no-audit --no-fund --loglevel=error)
  cp "$lock" "$node_modules/.installed-package-lock.json"
fi
echo "node $(node --version), hot-shots $(node -p 'require("./tests/clients/node_modules/hot-shots/package.json").version')"

# Schema validators for deploy/ (tests/deploy.rs) and the Prometheus server (tests/prometheus.rs).
bash tests/setup/deploy-tools.sh

# Every locked crate, for every platform: tests/deploy.rs checks the lock file offline in the
# Docker build context, which needs crates no local build downloads (e.g. Android-only ones).
cargo fetch --locked
cargo test --all-targets
# The fuzz targets (tests/fuzz, run with cargo fuzz) must keep building against the library.
cargo check --locked --manifest-path tests/fuzz/Cargo.toml --bins

# The chaos run (tests/soak.sh --chaos): a minute of good traffic, counted exactly, under every
# attack tests/chaos.py makes, against the release build.
bash tests/soak.sh --chaos 1

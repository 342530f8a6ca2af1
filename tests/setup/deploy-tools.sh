#!/usr/bin/env bash
# Installs the validators that tests/deploy.rs runs over deploy/, the Prometheus server that
# tests/prometheus.rs scrapes tallyd with, and the browser tests/status.rs loads the status
# page in. Idempotent: a tool is (re)installed only when it is
# missing or its pin below changed. tests/run.sh calls this script; it can also run alone.
#
#   Debian   prometheus          /usr/bin/prometheus and promtool (promtool check config)
#   Debian   kubernetes-client   kubectl, for `kubectl kustomize` (only if no kubectl is on PATH)
#   Debian   systemd             systemd-analyze verify / security, for deploy/tallyd.service
#   Debian   chromium            headless, loads the status page (tests/status.rs)
#   PyPI     kubernetes-validate Kubernetes manifests against the OpenAPI schemas it bundles
#   PyPI     check-jsonschema    the PodMonitor against deploy/schemas/podmonitor-v1.json
#   PyPI     dockerfile          deploy/Dockerfile, parsed with BuildKit's own parser
#
# The Python tools go into their own venv, target/test-env/deploy-venv (tests/run.sh recreates
# target/test-env/venv whenever the clients' pins change; this one is left alone by that).
set -euo pipefail
cd "$(dirname "$0")/../.."

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    $sudo apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if ! command -v promtool >/dev/null 2>&1 || [ ! -x /usr/bin/prometheus ]; then
  echo "deploy-tools.sh: installing prometheus and promtool (Debian package prometheus)" >&2
  apt_install prometheus
fi

if ! command -v chromium >/dev/null 2>&1; then
  echo "deploy-tools.sh: installing chromium (Debian package), for the status page test" >&2
  apt_install chromium
fi

if ! command -v kubectl >/dev/null 2>&1; then
  echo "deploy-tools.sh: installing kubectl (Debian package kubernetes-client)" >&2
  apt_install kubernetes-client
fi

if ! command -v systemd-analyze >/dev/null 2>&1 || ! command -v systemd-socket-activate >/dev/null 2>&1; then
  echo "deploy-tools.sh: installing systemd-analyze and systemd-socket-activate (Debian package systemd)" >&2
  apt_install systemd
fi

if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  echo "deploy-tools.sh: installing python3-venv (Debian package)" >&2
  apt_install python3 python3-venv
fi

# The three tools, then everything they pull in, pinned together (pip freeze of a fresh venv).
pins='kubernetes-validate==1.37.0
check-jsonschema==0.39.0
dockerfile==3.4.0
attrs==26.1.0
certifi==2026.10.19.post1
charset-normalizer==3.5.3
click==8.5.1
idna==3.20
importlib_resources==7.1.0
jsonschema==4.26.0
jsonschema-specifications==2025.9.1
packaging==26.4
PyYAML==6.0.4
referencing==0.37.0
regress==2026.9.1
requests==2.34.2
rpds-py==2026.9.1
ruamel.yaml==0.19.1
typing_extensions==4.16.0
urllib3==2.8.0'
venv=target/test-env/deploy-venv
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.installed-pins" 2>/dev/null)" != "$pins" ]; then
  echo "deploy-tools.sh: installing kubernetes-validate, check-jsonschema and dockerfile into $venv" >&2
  python3 -m venv --clear "$venv"
  printf '%s\n' "$pins" >"$venv/requirements.txt"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    --requirement "$venv/requirements.txt"
  printf '%s' "$pins" >"$venv/.installed-pins"
fi

echo "deploy tools: $(promtool --version 2>&1 | head -n 1)"
echo "deploy tools: kubectl $(kubectl version --client 2>/dev/null | head -n 1)"
echo "deploy tools: $(systemd-analyze --version | head -n 1)"
"$venv/bin/python" -c 'import importlib.metadata as m; print("deploy tools:", ", ".join(p + " " + m.version(p) for p in ("kubernetes-validate", "check-jsonschema", "dockerfile")))'

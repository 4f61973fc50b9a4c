#!/usr/bin/env bash
# Install the real peers oa-run talks to (idempotent: installs only what is missing).
set -euo pipefail
# iptables: the userspace latency shaper's NFQUEUE rules; iputils-ping: its ICMP checks;
# chromium + chromium-driver: the dashboard's browser tests; prometheus: promtool for /metrics.
packages=(openarena-server openarena obs-studio xvfb xauth iproute2 iptables iputils-ping chromium chromium-driver prometheus)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
((${#missing[@]})) || exit 0
if [[ $(id -u) -ne 0 ]]; then
  echo "install-peers: missing packages ${missing[*]}; run as root to install them" >&2
  exit 1
fi
echo "install-peers: installing ${missing[*]} (OpenArena's game data is about 500 MB)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null

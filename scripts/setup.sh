#!/usr/bin/env bash
# Set up this machine for netlab: Debian packages, a virtual environment in .venv, netlab in it.
# Idempotent: a second run only checks. Needs root (apt-get, and netlab itself needs root).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh: run as root (sudo $0)" >&2
  exit 1
fi

# What netlab drives: iproute2 (ip, bridge), the legacy iptables backend (kube-proxy's rules
# are applied with iptables-legacy-restore), util-linux (nsenter), and the real daemons pods
# run: dnsmasq (kube-dns's cache, and the simulated internet's DNS server), redis-server (the
# guestbook), iperf3 (throughput); dnsutils gives pods and tests dig, a real DNS client;
# nginx-light is the ingress controller's nginx (openssl makes its default certificate), wrk
# loads it in bench/bench_ingress.py; bird2 is the calico backend's BGP daemon (one BIRD per
# node) and ipset holds its NetworkPolicy selectors, as Felix's.
# graphviz draws `netlab graph` (the course's pictures); catatonit is every pod's pause process.
# mininet is only for the benchmarks' comparison runs.
PACKAGES=(iproute2 iptables util-linux procps iputils-ping curl dnsmasq-base dnsutils redis-server
          redis-tools iperf3 tcpdump python3 python3-venv catatonit nginx-light openssl wrk bird2 ipset graphviz)
BENCH_PACKAGES=(mininet bridge-utils)
# The real kubectl against a lab's API (openssl also makes the lab's CA and API certificate):
# Debian's kubernetes-client (kubectl 1.20), unless a kubectl is installed already.
command -v kubectl >/dev/null 2>&1 || PACKAGES+=(kubernetes-client)

missing=()
for p in "${PACKAGES[@]}" ${NETLAB_BENCH:+"${BENCH_PACKAGES[@]}"}; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# redis-server's package starts a system-wide redis; netlab runs its own inside pods only.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet redis-server 2>/dev/null; then
  systemctl disable --now redis-server >/dev/null 2>&1 || true
fi
# So does nginx's, on the host's port 80; netlab's nginx runs only in the ingress controller pod.
if command -v systemctl >/dev/null 2>&1 && systemctl is-enabled --quiet nginx 2>/dev/null; then
  systemctl disable --now nginx >/dev/null 2>&1 || true
elif [ -x /etc/init.d/nginx ] && [ -s /run/nginx.pid ] && kill -0 "$(cat /run/nginx.pid)" 2>/dev/null; then
  /etc/init.d/nginx stop >/dev/null 2>&1 || true
  command -v update-rc.d >/dev/null 2>&1 && update-rc.d nginx disable >/dev/null 2>&1 || true
fi
# And bird2's a host BIRD: netlab runs one per calico node, each in its node's namespace.
if command -v systemctl >/dev/null 2>&1 && systemctl is-enabled --quiet bird 2>/dev/null; then
  systemctl disable --now bird >/dev/null 2>&1 || true
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import netlab, pyroute2, iptc, scapy, typer, dnslib, pytest" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.installed ]; then
  .venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/pip install -q -e ".[test]" 2>&1 | grep -v -e '^WARNING: Location' -e 'is ignored' || true
  .venv/bin/python -c "import netlab, pyroute2, iptc, scapy, typer, dnslib, pytest"
  touch .venv/.installed
fi
# Every netlab command and each lab's agent and node daemons is a new Python process: with
# PYTHONDONTWRITEBYTECODE set (as on many CI runners) each would compile netlab from source
# at every start, since nothing else writes its bytecode. Written here, once per setup.
.venv/bin/python -m compileall -q -j 0 netlab >/dev/null
echo "setup: ok ($(.venv/bin/python --version), netlab at .venv/bin/netlab)"

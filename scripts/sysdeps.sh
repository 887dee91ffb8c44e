#!/usr/bin/env bash
# Installs the system packages a purpose needs, only when something is missing.
#   sysdeps.sh test   : real clients and servers the test suite drives
#   sysdeps.sh bench  : the peers the benchmarks compare against
set -euo pipefail

purpose=${1:-test}
# command -> Debian package
declare -A test_pkgs=(
  [curl]=curl
  [dig]=bind9-dnsutils
  [dnsmasq]=dnsmasq-base
  [ip]=iproute2
  [nft]=nftables
  [tc]=iproute2
  [ping]=iputils-ping
  [traceroute]=traceroute
  [redis-server]=redis-server
  [sysctl]=procps
  [unshare]=util-linux
  [setpriv]=util-linux
  [iperf3]=iperf3
  [tshark]=tshark
  [tcpdump]=tcpdump
)
declare -A bench_pkgs=(
  [nginx]=nginx-light
  [wrk]=wrk
  [taskset]=util-linux
  [iperf3]=iperf3
  [tshark]=tshark
)

if [ "$purpose" = bench ]; then
  declare -n wanted=bench_pkgs
else
  declare -n wanted=test_pkgs
fi

missing=()
for cmd in "${!wanted[@]}"; do
  if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ]; then
    missing+=("${wanted[$cmd]}")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
if [ "$(id -u)" -ne 0 ]; then
  echo "sysdeps: missing ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "sysdeps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Several checkouts may set up at once: wait for the package lock rather than fail.
apt-get -o DPkg::Lock::Timeout=600 update -qq
apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

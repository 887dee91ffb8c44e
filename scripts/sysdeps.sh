#!/usr/bin/env bash
# Installs the system packages a purpose needs, only when something is missing.
#   sysdeps.sh build  : what `python3 -m venv` and building the compiled core need on a
#                       bare Debian (python3-venv, python3-dev, a C compiler); PYTHON names
#                       the interpreter (default python3)
#   sysdeps.sh test   : real clients and servers the test suite drives
#   sysdeps.sh bench  : the peers the benchmarks compare against
set -euo pipefail

purpose=${1:-test}
PYTHON=${PYTHON:-python3}
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
  [udhcpc]=udhcpc
  [dhclient]=isc-dhcp-client
  [dhcrelay]=isc-dhcp-relay
  [openssl]=openssl
  [iperf3]=iperf3
  [tshark]=tshark
  [tcpdump]=tcpdump
  [node]=nodejs
)
declare -A bench_pkgs=(
  [nginx]=nginx-light
  [wrk]=wrk
  [hey]=hey
  [taskset]=util-linux
  [dnsperf]=dnsperf
  [dnsmasq]=dnsmasq-base
  [kea-dhcp4]=kea-dhcp4-server
  [iperf3]=iperf3
  [tshark]=tshark
  [valgrind]=valgrind
)

missing=()
if [ "$purpose" = build ]; then
  # Debian splits these out of python3: venv needs ensurepip (python3-venv), a C extension
  # needs Python.h (python3-dev) and a compiler (gcc).
  if ! "$PYTHON" -c 'import ensurepip' >/dev/null 2>&1; then
    missing+=(python3-venv)
  fi
  if ! "$PYTHON" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
      >/dev/null 2>&1; then
    missing+=(python3-dev)
  fi
  if ! command -v gcc >/dev/null 2>&1; then
    missing+=(gcc)
  fi
else
  if [ "$purpose" = bench ]; then
    declare -n wanted=bench_pkgs
  else
    declare -n wanted=test_pkgs
  fi
  for cmd in "${!wanted[@]}"; do
    if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ]; then
      missing+=("${wanted[$cmd]}")
    fi
  done
fi
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

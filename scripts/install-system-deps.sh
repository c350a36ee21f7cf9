#!/usr/bin/env bash
# Installs the Debian packages seng's build, tests and benchmarks use. Idempotent:
# does nothing (and needs no network) when everything is already installed.
set -euo pipefail
PKGS=(
  build-essential python3            # node-gyp toolchain for the native addons
  sqlite3                            # tests inspect databases with the sqlite3 CLI
  openssl                            # real DTLS peers (s_client/s_server), openssl speed
  iproute2 iputils-ping netcat-openbsd  # network namespaces, veth, ping, nc in e2e tests
  nftables iptables conntrack        # enforcement backends and their verification
  iperf3 openvpn                     # benchmarks: throughput and the OpenVPN peer
  clang-14 libclang-rt-14-dev        # libFuzzer harness of native/common (fuzz/run.js)
  libasan8 libubsan1                 # ASan/UBSan build of the addons (build-native.js --sanitize)
  systemd util-linux                 # systemd-analyze verify of the unit; setpriv (least-privilege test)
  postgresql                         # fleet tests start their own PostgreSQL server (initdb/pg_ctl)
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing system packages: ${missing[*]} (run this script as root)" >&2
    exit 1
  fi
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

#!/usr/bin/env bash
# Prepare a Debian 12 host to build, run and test the appliance. Idempotent; run as root.
#   - installs the build and test packages (DPDK with dpdk-testpmd and dpdk-dumpcap, clang for bindgen, iproute2,
#     ping, nc, iperf3, tshark (with Lua, for tools/wireshark), scapy, mmdebstrap, erofs-utils, fuse3 and runc for
#     the container-image tests, systemd for systemd-analyze...)
#   - checks for a Rust toolchain (cargo)
#   - reserves 2 MiB hugepages (never lowers the count) and mounts hugetlbfs on /dev/hugepages
#   - loads the af_packet and veth modules when they are modules
# Works without a terminal (CI=true). Environment: HUGEPAGES (default 512), MIN_HUGEPAGES (default 256).
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_root

export DEBIAN_FRONTEND=noninteractive
HUGEPAGES=${HUGEPAGES:-1024}
MIN_HUGEPAGES=${MIN_HUGEPAGES:-256}

PACKAGES=(
  build-essential pkg-config clang libclang-dev
  dpdk dpdk-dev libdpdk-dev
  iproute2 iputils-ping ethtool iperf3 netcat-openbsd curl tcpdump tshark
  python3 python3-scapy jq procps bc
  prometheus
  etcd-server etcd-client nftables
  mmdebstrap erofs-utils fuse3 runc
  systemd
)

# ---- packages -------------------------------------------------------------
log "packages"
missing=()
for p in "${PACKAGES[@]}"; do
  if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" != "install ok installed" ]; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  info "all ${#PACKAGES[@]} packages already installed"
else
  info "installing: ${missing[*]}"
  # tshark asks whether non-root users may capture: answer no, without a prompt.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${missing[@]}" </dev/null
  info "installed ${#missing[@]} package(s)"
fi

# ---- Rust toolchain -------------------------------------------------------
log "rust toolchain"
if use_cargo; then
  info "$(cargo --version) at $(command -v cargo)"
else
  info "cargo not found; trying rustup"
  tmp=$(mktemp)
  if curl -sSf --max-time 20 https://sh.rustup.rs -o "$tmp" 2>/dev/null; then
    sh "$tmp" -y --profile minimal --component clippy,rustfmt </dev/null
    rm -f "$tmp"
    use_cargo || die "rustup ran but cargo is still not on PATH"
    info "installed $(cargo --version)"
  else
    rm -f "$tmp"
    die "no cargo on this machine (looked in \$CARGO_HOME/bin, ~/.cargo/bin, /root/.cargo/bin) and rustup is unreachable: install Rust >= 1.85 (https://rustup.rs) and run again"
  fi
fi

# ---- hugepages ------------------------------------------------------------
log "hugepages (2 MiB)"
nr=/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages
[ -e "$nr" ] || nr=/proc/sys/vm/nr_hugepages
cur=$(cat "$nr")
if [ "$cur" -lt "$HUGEPAGES" ]; then
  echo "$HUGEPAGES" > "$nr" || true
  new=$(cat "$nr")
  info "nr_hugepages: $cur -> $new (wanted $HUGEPAGES)"
  if [ "$new" -lt "$HUGEPAGES" ]; then
    # Memory may be too fragmented: compact and try once more.
    echo 1 > /proc/sys/vm/compact_memory 2>/dev/null || true
    echo "$HUGEPAGES" > "$nr" || true
    new=$(cat "$nr")
    info "after compaction: $new"
  fi
  [ "$new" -ge "$MIN_HUGEPAGES" ] || die "only $new hugepages could be reserved (need at least $MIN_HUGEPAGES)"
  [ "$new" -ge "$HUGEPAGES" ] || warn "only $new of $HUGEPAGES hugepages reserved"
else
  info "nr_hugepages is $cur (>= $HUGEPAGES), left as is"
fi
info "$(grep -E '^Huge(Pages_(Total|Free)|pagesize)' /proc/meminfo | tr -s ' ' | paste -sd ' ')"

if mountpoint -q /dev/hugepages && [ "$(findmnt -n -o FSTYPE /dev/hugepages)" = hugetlbfs ]; then
  info "hugetlbfs already mounted on /dev/hugepages"
else
  mkdir -p /dev/hugepages
  mount -t hugetlbfs -o pagesize=2M nodev /dev/hugepages
  info "mounted hugetlbfs on /dev/hugepages"
fi

# ---- kernel modules -------------------------------------------------------
log "kernel modules"
if command -v modprobe >/dev/null 2>&1; then
  for m in af_packet veth; do
    if modprobe "$m" 2>/dev/null; then info "$m: available"; else info "$m: modprobe failed (probably built in)"; fi
  done
else
  info "no modprobe; assuming af_packet and veth are built in"
fi

log "setup done"

# Shared helpers for scripts/*.sh (sourced, not run).
# shellcheck shell=bash

# Repository root (the Cargo workspace).
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export REPO_ROOT

log()  { printf '==> %s\n' "$*"; }
info() { printf '    %s\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die()  { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

require_root() {
  [ "$(id -u)" -eq 0 ] || die "$(basename "$0") must run as root (it creates network namespaces, reserves hugepages and starts DPDK): sudo bash $0"
}

# Put a Rust toolchain on PATH. Cargo is normally preinstalled in ~/.cargo/bin;
# under sudo it may live in the invoking user's home instead.
use_cargo() {
  local d h
  for d in "${CARGO_HOME:-}/bin" "$HOME/.cargo/bin" /root/.cargo/bin; do
    [ -n "$d" ] && [ -x "$d/cargo" ] && case ":$PATH:" in *":$d:"*) ;; *) PATH="$d:$PATH" ;; esac
  done
  if ! command -v cargo >/dev/null 2>&1 && [ -n "${SUDO_USER:-}" ]; then
    h=$(getent passwd "$SUDO_USER" | cut -d: -f6)
    if [ -n "$h" ] && [ -x "$h/.cargo/bin/cargo" ]; then
      PATH="$h/.cargo/bin:$PATH"
      export CARGO_HOME="$h/.cargo" RUSTUP_HOME="$h/.rustup"
    fi
  fi
  export PATH
  command -v cargo >/dev/null 2>&1
}

# ---- network namespaces (testbeds) -------------------------------------------

ns_exists() { [ -e "/run/netns/$1" ]; }

# Turns checksum offload, TSO/GSO and GRO off on an interface. The testbeds keep every
# interface at the kernel's defaults (offloads on, as container runtimes leave them: the
# appliance completes partial checksums, and its af_xdp ports make the peers segment);
# this is only for the reference run that compares with those defaults (HOST_OFFLOADS=off,
# docs/architecture.md "Kernel hosts at their default settings").
offloads_off() { # ns ifname
  ip netns exec "$1" ethtool -K "$2" tx off rx off tso off gso off gro off >/dev/null
}

# Attaches an XDP program that passes every frame (scripts/xdp_pass.c, built here with
# clang's BPF target) to IFNAME in NS and turns GRO off on it. The kernel then takes TSO/GSO
# away from the veth's peer, which segments its TCP before the veth, and nothing merges the
# segments again before a packet socket reads them. An af_xdp port gets the first half by
# itself; this is for af_packet ports with several queue pairs (DPDK 22.11's af_xdp driver
# allows one queue on a veth: it counts combined channels, and a veth has none).
xdp_pass() { # ns ifname
  local obj
  obj=$(mktemp /tmp/xdp-pass.XXXXXX.o)
  clang -O2 -target bpf -c "$REPO_ROOT/scripts/xdp_pass.c" -o "$obj"
  ip -n "$1" link set dev "$2" xdpdrv obj "$obj" sec xdp
  rm -f "$obj"
  ip netns exec "$1" ethtool -K "$2" gro off
}

# Ends the processes still inside namespace NS (started by its testbed), by PID,
# then deletes it. Idempotent.
ns_delete() { # ns [label]
  local ns=$1 label=${2:-testbed} pids pid
  ns_exists "$ns" || return 0
  pids=$(ip netns pids "$ns" 2>/dev/null || true)
  if [ -n "$pids" ]; then
    echo "$label: ending processes left in $ns: $(echo "$pids" | tr '\n' ' ')" >&2
    for pid in $pids; do kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq 50); do
      pids=$(ip netns pids "$ns" 2>/dev/null || true)
      [ -z "$pids" ] && break
      sleep 0.1
    done
    for pid in $pids; do kill -KILL "$pid" 2>/dev/null || true; done
  fi
  ip netns del "$ns" 2>/dev/null || true
}

# Prints the links and addresses of each namespace given (testbed scripts' `status`).
ns_status() { # ns...
  local ns
  for ns in "$@"; do
    if ns_exists "$ns"; then
      echo "## $ns"
      ip -n "$ns" -br link
      ip -n "$ns" -br addr
    else
      echo "## $ns: absent"
    fi
  done
}

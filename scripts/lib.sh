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

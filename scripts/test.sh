#!/usr/bin/env bash
# Run every test: set up the machine, check formatting and lints (cargo fmt --check, cargo clippy
# -D warnings, the fuzz targets build without DPDK), build the appliance (release), then the whole
# workspace's tests, serially (the integration tests start the real appliance in network
# namespaces).
#
# Run as root: sudo bash scripts/test.sh      (CI runs it through .ci/run with CI=true, no terminal)
# Extra arguments go to the test binaries, e.g.: scripts/test.sh ping_both_ways
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_root
cd "$REPO_ROOT"

log "setup"
bash "$REPO_ROOT/scripts/setup.sh"
use_cargo || die "cargo not found"

# Namespaces left by an earlier test run that was killed (at<pid>-…, nt<pid>-…, st<pid>-…: the
# router, NAT and steering testbeds), whose test process is gone: ended and deleted.
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^(at|nt|st)[0-9]+-' || true); do
  pid=${ns#[ans]t}; pid=${pid%%-*}
  if [ ! -e "/proc/$pid" ]; then
    info "removing stale test namespace $ns"
    ns_delete "$ns" test.sh
  fi
done

log "format: cargo fmt --all --check (rustfmt.toml)"
cargo fmt --version >/dev/null 2>&1 || die "cargo fmt is not installed (rustup component add rustfmt)"
cargo fmt --all --check || die "formatting differs: run cargo fmt --all (and in fuzz/) and commit"
(cd fuzz && cargo fmt --check) || die "fuzz/ formatting differs: run cargo fmt in fuzz/"
log "lint: cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --version >/dev/null 2>&1 || die "cargo clippy is not installed (rustup component add clippy)"
cargo clippy --workspace --all-targets --quiet -- -D warnings
log "fuzz targets build against netwire and dataplane (no libdpdk)"
(cd fuzz && cargo check --quiet)

log "build: cargo build --release -p appliance -p objmeta -p objcli -p imgagent"
cargo build --release -p appliance -p objmeta -p objcli -p imgagent
export APPLIANCE_BIN="$REPO_ROOT/target/release/appliance"
[ -x "$APPLIANCE_BIN" ] || die "no binary at $APPLIANCE_BIN"

mkdir -p "$REPO_ROOT/target"
LOG="$REPO_ROOT/target/test.log"
log "test: cargo test --workspace --release --no-fail-fast -- --test-threads=1 $*  (log: $LOG)"
set +e
cargo test --workspace --release --no-fail-fast -- --test-threads=1 "$@" 2>&1 | tee "$LOG"
rc=${PIPESTATUS[0]}
set -e

# Summary over every test binary's "test result:" line.
read -r passed failed ignored suites < <(awk '
  /^test result:/ {
    for (i = 1; i <= NF; i++) {
      if ($(i) ~ /^passed;?$/) p += $(i-1)
      if ($(i) ~ /^failed;?$/) f += $(i-1)
      if ($(i) ~ /^ignored;?$/) g += $(i-1)
    }
    s++
  }
  END { print p+0, f+0, g+0, s+0 }' "$LOG")
echo
log "summary ($suites test binaries, exit status $rc)"
if grep -qE '^test .* \.\.\. FAILED$' "$LOG"; then
  echo "failed tests:"
  grep -E '^test .* \.\.\. FAILED$' "$LOG" | sed -E 's/^test (.*) \.\.\. FAILED$/  \1/'
fi
echo "summary: $passed passed, $failed failed, $ignored skipped"
if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
  echo "cargo test failed before or outside the tests (build error?): see $LOG" >&2
fi
exit "$rc"

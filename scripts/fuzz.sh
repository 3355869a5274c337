#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser and of the whole pipeline
# (fuzz/fuzz_targets/*). Not part of the test suite: run it when parsers
# change, and commit any crash it finds as a unit test.
#   sudo bash scripts/fuzz.sh               # every target for SECONDS (60) each
#   sudo SECONDS_EACH=600 bash scripts/fuzz.sh pipeline
# Needs cargo-fuzz (installed from crates.io if missing). The toolchain here is
# stable, so RUSTC_BOOTSTRAP=1 lets cargo-fuzz use its instrumentation flags;
# no sanitizer is used (-s none): the code is safe Rust, a crash is a panic.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
use_cargo
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
SECONDS_EACH=${SECONDS_EACH:-60}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cd fuzz && cargo fuzz list)
for t in "${targets[@]}"; do
  log "fuzz $t for ${SECONDS_EACH}s"
  (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run "$t" -s none --release -- \
      -max_total_time="$SECONDS_EACH" -max_len=2048 -print_final_stats=1 2>&1 | tail -n 12)
done

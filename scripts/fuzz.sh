#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser, the storage protocol, the NAT and the whole
# pipeline (fuzz/fuzz_targets/*). Not part of the test suite: run it when parsers change,
# and commit any crash it finds as a unit test.
#   sudo bash scripts/fuzz.sh                        # every target for SECONDS_EACH (60) s
#   sudo SECONDS_EACH=600 bash scripts/fuzz.sh pipeline
#   sudo RUNS=100000000 SECONDS_EACH=0 bash scripts/fuzz.sh   # 10^8 executions per target
# Each target starts from its corpus (fuzz/corpus/<target>, kept between runs, ignored by
# git) plus the committed seeds fuzz/seeds/<target>/ when there are any (the pipeline's are
# the hostile corpus, written by `cargo test -p appliance-tests --lib hostile`). At the end a
# table gives per target: executions, executions per second, coverage (libFuzzer's `cov`:
# edges reached) and features (`ft`), the corpus size, and whether it crashed (the input is
# then under fuzz/artifacts/<target>/).
# Needs cargo-fuzz (installed from crates.io if missing). The toolchain here is stable, so
# RUSTC_BOOTSTRAP=1 lets cargo-fuzz use its instrumentation flags; no sanitizer is used
# (-s none): the code is safe Rust, a crash is a panic.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
use_cargo
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
SECONDS_EACH=${SECONDS_EACH:-60}
RUNS=${RUNS:--1}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cd fuzz && cargo fuzz list)
LOGS=$(mktemp -d /tmp/apl-fuzz.XXXXXX)
rows=()
status=0
for t in "${targets[@]}"; do
  log "fuzz $t (max ${SECONDS_EACH}s, runs $RUNS)"
  dirs=("corpus/$t")
  mkdir -p "fuzz/corpus/$t"
  [ -d "fuzz/seeds/$t" ] && dirs+=("seeds/$t")
  rc=0
  (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run "$t" -s none --release "${dirs[@]}" -- \
      -max_total_time="$SECONDS_EACH" -runs="$RUNS" -max_len=2048 -print_final_stats=1) \
      > "$LOGS/$t.log" 2>&1 || rc=$?
  tail -n 4 "$LOGS/$t.log"
  execs=$(awk '/stat::number_of_executed_units/ {print $NF}' "$LOGS/$t.log" | tail -1)
  rate=$(awk '/stat::average_exec_per_sec/ {print $NF}' "$LOGS/$t.log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$LOGS/$t.log" | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<< "$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<< "$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<< "$last")
  verdict=ok
  if grep -aq "libFuzzer: run interrupted" "$LOGS/$t.log"; then
    verdict="interrupted (SIGINT), no crash"
  elif [ "$rc" -ne 0 ]; then
    verdict="CRASH (rc $rc, see $LOGS/$t.log, fuzz/artifacts/$t/)"; status=1
  fi
  rows+=("$(printf '%-14s %12s %10s %7s %7s %7s  %s' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$verdict")")
done
printf '\n%-14s %12s %10s %7s %7s %7s  %s\n' target executions exec/s cov ft corpus result
printf '%s\n' "${rows[@]}"
echo "(full logs in $LOGS)"
exit "$status"

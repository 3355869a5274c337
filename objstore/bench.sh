#!/usr/bin/env bash
# Block-path benchmark: 4 KiB random reads at queue depth 32 on one core, O_DIRECT, on the same
# file in the same run: fio (ioengine=io_uring) as the reference, then objstore's blkbench
# (UringDevice queue pair, registered buffers and file). Prints both figures and the ratio.
#
#   objstore/bench.sh [DIR]        DIR holds the 1 GiB test file (default target/objstore-bench;
#                                  it must be on a file system that supports O_DIRECT, not tmpfs)
#   env: RUNTIME=10 (seconds per run), QD=32, SIZE_MIB=1024, FIO_EXTRA="" (more fio options),
#        STORE=1 (then also 4 KiB object PUT/GET through the store on the same file; 0 to skip)
#
# Needs root only to install fio/jq when missing (apt-get).
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=${1:-target/objstore-bench}
RUNTIME=${RUNTIME:-10}
QD=${QD:-32}
SIZE_MIB=${SIZE_MIB:-1024}
FILE="$DIR/bench.img"

need() {
    command -v "$1" >/dev/null 2>&1 && return
    echo "== installing $2"
    apt-get install -y "$2" >/dev/null || { apt-get update >/dev/null && apt-get install -y "$2" >/dev/null; }
}
need fio fio
need jq jq

mkdir -p "$DIR"
want=$((SIZE_MIB * 1024 * 1024))
have=$(stat -c %s "$FILE" 2>/dev/null || echo 0)
if [ "$have" != "$want" ]; then
    # Written for real (not fallocate): reads of holes or unwritten extents never reach the disk.
    echo "== writing $FILE ($SIZE_MIB MiB)"
    dd if=/dev/urandom of="$FILE" bs=1M count="$SIZE_MIB" oflag=direct status=none
fi

echo "== building blkbench (release)"
CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1} cargo build --release -q -p objstore --bin blkbench

FIO_CMD=(fio --name=randread --filename="$FILE" --ioengine=io_uring --direct=1 --rw=randread
    --bs=4k --iodepth="$QD" --numjobs=1 --time_based --runtime="$RUNTIME" --size="${SIZE_MIB}M"
    --group_reporting --output-format=json ${FIO_EXTRA:-})
BB_CMD=(target/release/blkbench --file "$FILE" --seconds "$RUNTIME" --qd "$QD")

echo "== fio: ${FIO_CMD[*]}"
fio_json=$("${FIO_CMD[@]}")
fio_iops=$(jq '.jobs[0].read.iops' <<<"$fio_json")
fio_p50=$(jq '.jobs[0].read.clat_ns.percentile["50.000000"] / 1000' <<<"$fio_json")
fio_p99=$(jq '.jobs[0].read.clat_ns.percentile["99.000000"] / 1000' <<<"$fio_json")

echo "== blkbench: ${BB_CMD[*]}"
bb_out=$("${BB_CMD[@]}")
echo "$bb_out" | grep -v '^RESULT'
bb_line=$(grep '^RESULT' <<<"$bb_out")
bb_iops=$(sed -E 's/.*iops=([0-9.]+).*/\1/' <<<"$bb_line")
bb_p50=$(sed -E 's/.*p50_us=([0-9.]+).*/\1/' <<<"$bb_line")
bb_p99=$(sed -E 's/.*p99_us=([0-9.]+).*/\1/' <<<"$bb_line")

echo
printf '%-10s %12s %10s %10s\n' "" "IOPS" "p50 us" "p99 us"
printf '%-10s %12.0f %10.1f %10.1f\n' fio "$fio_iops" "$fio_p50" "$fio_p99"
printf '%-10s %12.0f %10.1f %10.1f\n' blkbench "$bb_iops" "$bb_p50" "$bb_p99"
awk -v a="$bb_iops" -v b="$fio_iops" 'BEGIN { printf "blkbench / fio IOPS ratio: %.2f\n", a / b }'
echo "(fio p50/p99 are completion latency, clat; blkbench's are submit-to-reap)"

if [ "${STORE:-1}" = 1 ]; then
    # The object store on the same file (formats it; the raw runs above are done with it).
    ST_CMD=(target/release/blkbench --file "$FILE" --seconds "$RUNTIME" --qd "$QD" --mode store)
    echo
    echo "== object store: ${ST_CMD[*]}"
    "${ST_CMD[@]}" | grep -v '^RESULT'
fi

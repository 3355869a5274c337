#!/usr/bin/env bash
# Storage benchmark: 4 KiB object PUT and GET through the appliance from a kernel host, next to
# the store's own PUT and GET on the same device file, in the same run.
#
#   [h1] objcli bench ──IPv6/UDP, af_xdp──► [rtr] appliance (one worker: storage service on an
#                                                  io_uring O_DIRECT device file)
#   then: blkbench --mode store on the same file (the store without the network, one core)
#
# For each queue depth in QDS (operations in flight): `objcli bench` puts OBJECTS objects of
# 4 KiB, then gets random ones for SECONDS_EACH s (each read checked); ops/s, p50, p99. Then
# the store's own figures at the same depths (blkbench, which formats the file), and the
# ratios (appliance / store). The appliance runs the demo config (configs/demo.yaml, af_xdp
# ports to default kernel hosts) plus a storage section; its worker and the client share the
# machine's two CPUs.
#
# Usage: sudo [QDS="1 32"] [OBJECTS=4096] [SECONDS_EACH=5] [DIR=target/objstore-bench]
#             bash scripts/bench-storage.sh
# DIR must be on a file system with O_DIRECT (not tmpfs). Everything it starts is stopped,
# and the testbed removed, on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
require_root
use_cargo

QDS=${QDS:-"1 32"}; OBJECTS=${OBJECTS:-4096}; SECONDS_EACH=${SECONDS_EACH:-5}
DIR=${DIR:-target/objstore-bench}; SIZE_MB=${SIZE_MB:-1024}
PREFIX=2001:db8:f0:1::
export TB=${TB:-aplsb}
W=$(mktemp -d /tmp/apl-bench-storage.XXXXXX)
APP_PID=

cleanup() {
  set +e
  if [ -n "$APP_PID" ]; then
    kill -TERM "$APP_PID" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$APP_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$APP_PID" 2>/dev/null
  fi
  bash scripts/testbed.sh down >/dev/null 2>&1
  rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bash scripts/setup.sh >/dev/null
cargo build --release -q -p appliance -p objcli -p objstore
BIN=$PWD/target/release/appliance
mkdir -p "$DIR"
DEV=$(realpath "$DIR")/store.img
rm -f "$DEV"

cp configs/demo.yaml "$W/config.yaml"
cat >> "$W/config.yaml" <<EOF
storage:
  object_prefix: "$PREFIX/64"
  device: "$DEV"
  size_mb: $SIZE_MB
EOF
"$BIN" check-config "$W/config.yaml" >/dev/null

bash scripts/testbed.sh down >/dev/null 2>&1 || true
bash scripts/testbed.sh up >/dev/null
ip netns exec "$TB-rtr" "$BIN" run --config "$W/config.yaml" > "$W/appliance.log" 2>&1 &
APP_PID=$!
for i in $(seq 300); do
  kill -0 "$APP_PID" 2>/dev/null || { tail -30 "$W/appliance.log"; die "the appliance exited during start-up"; }
  ip netns exec "$TB-h1" ping -6 -c 1 -W 1 "${PREFIX}1" >/dev/null 2>&1 && break
  [ "$i" -eq 300 ] && die "the storage prefix does not answer"
  sleep 0.1
done

echo "# bench-storage: 4 KiB objects, $OBJECTS objects, ${SECONDS_EACH}s of GETs per depth; $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
declare -A A=()
for qd in $QDS; do
  out=$(ip netns exec "$TB-h1" target/release/objcli --node "$PREFIX" bench --objects "$OBJECTS" --size 4096 \
    --inflight "$qd" --seconds "$SECONDS_EACH" --first "$(printf 0x62656e63%04x0000 "$qd")" 2>&1) \
    || { echo "$out"; tail -30 "$W/appliance.log"; die "objcli bench at depth $qd failed"; }
  echo "appliance qd=$qd: $(grep 'op=put' <<<"$out")"
  echo "appliance qd=$qd: $(grep 'op=get' <<<"$out")"
  # Where fragments were lost, if the client retransmitted: the client host's UDP drops and
  # the appliance's drop counters (cumulative).
  echo "  h1 udp: $(ip netns exec "$TB-h1" nstat -az Udp6InErrors Udp6RcvbufErrors Udp6SndbufErrors 2>/dev/null | awk 'NR>1 {printf "%s=%s ", $1, $2}')"
  echo "  appliance drops: $(ip netns exec "$TB-rtr" curl -sf 127.0.0.1:9100/metrics | awk '!/^#/ && /_drops_total|_dropped|rx_missed|nombuf/ && $NF > 0 {printf "%s=%s ", $1, $NF}')"
  A[$qd]=$out
done

kill -TERM "$APP_PID"; wait "$APP_PID" || true; APP_PID=
bash scripts/testbed.sh down >/dev/null

field() { sed -E "s/.*[ ^]$1=([0-9.]+).*/\1/" <<<" $2"; }
printf '\n%-6s %-4s %12s %10s %10s %12s %10s %10s %7s\n' op qd "appliance/s" "p50 us" "p99 us" "store/s" "p50 us" "p99 us" ratio
for qd in $QDS; do
  st=$(target/release/blkbench --file "$DEV" --seconds "$SECONDS_EACH" --qd "$qd" --mode store | grep '^RESULT')
  for op in put get; do
    line=$(grep "op=$op" <<<"${A[$qd]}")
    a=$(field ops_per_s "$line"); ap50=$(field p50_us "$line"); ap99=$(field p99_us "$line")
    s=$(field "${op}_ops" "$st"); sp50=$(field "${op}_p50_us" "$st"); sp99=$(field "${op}_p99_us" "$st")
    printf '%-6s %-4s %12.0f %10.1f %10.1f %12.0f %10.1f %10.1f %7.2f\n' "$op" "$qd" "$a" "$ap50" "$ap99" "$s" "$sp50" "$sp99" \
      "$(echo "if ($s > 0) $a / $s else 0" | bc -l)"
  done
done
rm -f "$DEV"

#!/usr/bin/env bash
# Forwarding benchmark: packets through one worker core, next to the ceiling
# of the same harness (testpmd io forwarding on the same vdevs), in the same
# run. Modes (MODES, default "l3 end steer"):
#   l3     64-byte IPv4/UDP, 192.0.2.2 -> 198.51.100.2 (generator: testpmd txonly)
#   end    IPv6 + SRH (2 segments, SL 1) to the End SID 2001:db8:a::1, UDP with a
#          64-byte payload (generator: apl-gen replaying scripts/mkpcap.py's frames)
#   steer  the same to the storage SID 2001:db8:a::7 carrying a storage probe; the
#          sr-c policy decides per packet (queue depth 5 >= threshold 1: pass) and the
#          packet continues as End to the next segment
#   nat1k, nat64k, nat1m
#          NAT44 (configs/bench-nat.yaml): 64-byte IPv4/UDP from 1024, 65536 or 1048576
#          subscriber flows (scripts/mkpcap.py nat), translated to the pool and routed
#          out. The run first waits until every flow has its session (the mapping
#          server creating them as fast as it can: the setup line gives new mappings
#          per second), then measures established flows only.
#
#   generator: dpdk-testpmd, CPU 0 ──net_memif──► DUT, worker on CPU 1 ──► net_null
#
# LINK=vhost: the generator's link is the virtio path a VM has instead: the DUT's port0
# is a vhost-user port (net_vhost, as OVS-DPDK presents ports to VMs; the DUT is the
# vhost-user server) and the generator is the guest side (net_virtio_user on the same
# socket). Both DUTs, testpmd io and the appliance, on the same path in the same run.
#
# Each run starts the DUT (memif server) first, then the generator (memif
# client: it owns the shared memory), and stops the generator first: DPDK
# 22.11's memif PMD crashes when the peer's regions are unmapped under a
# transmit loop, and its client does not reconnect to a new server. The
# net_null sink is created with no-rx=1 (else it synthesises packets on rx).
#   DUT "testpmd-io": dpdk-testpmd --forward-mode=io (memif port 0 → null port 1)
#   DUT "appliance":  appliance with configs/bench-memif.yaml (full L3 pipeline:
#                     Ethernet check, IPv4 header + checksum check, LPM, neighbour
#                     lookup, TTL decrement with incremental checksum, MAC rewrite)
#
# Both DUTs see the same frames (192.0.2.2 → 198.51.100.2, UDP, 64 bytes with
# FCS-less 60-byte payload as testpmd builds them). Each DUT is measured REPS
# times for DUR seconds after WARM seconds; the figure is the median of
# per-second forwarded-packet rates (testpmd: its Tx-pps on the null port;
# appliance: deltas of appliance_port_tx_packets_total{port="port1"}).
# BASELINE_BIN=path: also measure another appliance binary (e.g. one built before a change) in
# the same run, interleaved with this one, as DUT "baseline" (same configs).
# Usage: sudo [DUR=5] [REPS=3] [WARM=2] [LINK=memif|vhost] [BASELINE_BIN=...] bash scripts/bench-fwd.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
require_root
use_cargo

DUR=${DUR:-5}; REPS=${REPS:-3}; WARM=${WARM:-2}; MODES=${MODES:-"l3 end steer nat1k nat64k nat1m"}
LINK=${LINK:-memif}
case "$LINK" in memif|vhost) ;; *) echo "bench-fwd.sh: LINK=$LINK: memif or vhost" >&2; exit 2 ;; esac
W=/tmp/apl-bench; NS=aplb-dut; METRICS_PORT=9199
GEN_PID=; DUT_PID=

cleanup() {
  for p in $DUT_PID $GEN_PID; do kill -INT "$p" 2>/dev/null || true; done
  for p in $DUT_PID $GEN_PID; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  ip netns del $NS 2>/dev/null || true
  rm -f /dev/hugepages/aplbgen* /dev/hugepages/aplbdut* /dev/hugepages/apl-bench*
  rm -rf /var/run/dpdk/aplbgen /var/run/dpdk/aplbdut /var/run/dpdk/apl-bench
}
trap cleanup EXIT INT TERM

bash scripts/setup.sh >/dev/null
cargo build --release -q -p appliance
BIN=$PWD/target/release/appliance
GEN=$PWD/target/release/apl-gen
rm -rf $W; mkdir -p $W
ip netns add $NS; ip -n $NS link set lo up    # private loopback for the DUT's metrics

# The link between generator and DUT: the DUT's port0 vdev (testpmd) and the generator's.
MEMIF_DUT="net_memif0,role=server,id=0,socket=$W/memif0.sock,socket-abstract=no,mac=02:00:00:00:10:01"
MEMIF_GEN="net_memif0,role=client,id=0,socket=$W/memif0.sock,socket-abstract=no"
VHOST_DUT="net_vhost0,iface=$W/vhost0.sock,queues=1"
VHOST_GEN="net_virtio_user0,path=$W/vhost0.sock,queues=1,queue_size=1024"
# virtio_user hands its memory to the vhost-user side as file descriptors: one file per
# hugepage segment list (--single-file-segments), kept (not --huge-unlink).
# The vhost PMD cannot take a MAC: its port 0 has 56:48:4f:53:54:00 (DPDK's base vhost MAC
# with the port id), and the generator addresses that instead of the memif port's MAC.
if [ "$LINK" = vhost ]; then
  DUT_VDEV=$VHOST_DUT; GEN_VDEV=$VHOST_GEN; GEN_MEM=--single-file-segments; GEN_PORT=net_virtio_user0
  DUT_MAC=56:48:4f:53:54:00
else
  DUT_VDEV=$MEMIF_DUT; GEN_VDEV=$MEMIF_GEN; GEN_MEM=--huge-unlink; GEN_PORT=net_memif0
  DUT_MAC=02:00:00:00:10:01
fi

# The DUT's config: the committed bench config with metrics on the private loopback (and,
# with LINK=vhost, port0 a vhost-user port).
dut_config() { # committed config
  if [ "$LINK" = vhost ]; then
    # Port0's memif device and its arguments become a vhost-user port; refused if the
    # committed config no longer has them (the run would silently measure memif).
    grep -q 'device: net_memif0' "$1" || die "$1: no net_memif0 port to turn into vhost-user"
    sed -e "s|^  listen: null|  listen: \"127.0.0.1:$METRICS_PORT\"|" -e "s|device: net_memif0|device: net_vhost0|" \
        -e "s|args: \"role=server[^\"]*\"|args: \"iface=$W/vhost0.sock,queues=1\"|" "$1"
  else
    sed -e "s|^  listen: null|  listen: \"127.0.0.1:$METRICS_PORT\"|" "$1"
  fi
}
dut_config configs/bench-memif.yaml > $W/bench.yaml
"$BIN" check-config $W/bench.yaml > /dev/null
dut_config configs/bench-nat.yaml > $W/bench-nat.yaml
"$BIN" check-config $W/bench-nat.yaml > /dev/null

nat_flows() { case "$1" in nat1k) echo 1024 ;; nat64k) echo 65536 ;; nat1m) echo 1048576 ;; *) echo 0 ;; esac; }

start_gen() { # mode
  local src
  if [ "$1" = l3 ]; then
    # testpmd txonly on CPU 0: memif server; frames addressed to the DUT's MAC.
    src="--forward-mode=txonly --eth-peer=0,$DUT_MAC --tx-ip=192.0.2.2,198.51.100.2 --tx-udp=1024,9 --txpkts=64"
    taskset -c 0 dpdk-testpmd --no-pci --file-prefix=aplbgen $GEN_MEM -m 128 --lcores 0@0,1@0 \
      --vdev=$GEN_VDEV \
      -- $src --burst=32 --txd=1024 --total-num-mbufs=16384 --stats-period=1 > $W/gen.log 2>&1 &
  else
    # apl-gen on CPU 0: replays the mode's frames (scripts/mkpcap.py) into the memif.
    if [ ! -s $W/$1.pcap ]; then
      case "$1" in
        nat*) python3 scripts/mkpcap.py nat $W/$1.pcap "$(nat_flows "$1")" ;;
        *) python3 scripts/mkpcap.py "$1" $W/$1.pcap ;;
      esac
    fi
    taskset -c 0 "$GEN" --no-pci --file-prefix=aplbgen $GEN_MEM -m 128 --lcores 0@0 \
      --vdev=$GEN_VDEV \
      -- --pcap $W/$1.pcap --port $GEN_PORT --dst-mac $DUT_MAC > $W/gen.log 2>&1 &
  fi
  GEN_PID=$!
}

stop_pid() { # pid
  kill -INT "$1" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
}

median() { python3 -c 'import sys,statistics as s; v=[float(x) for x in sys.argv[1:]]; print(int(s.median(v)) if v else 0)' "$@"; }

# testpmd io: per-second Tx-pps of port 1 (the null port), after WARM s.
run_testpmd_io() { # mode
  rm -f $W/memif0.sock $W/vhost0.sock   # a DUT that died leaves its socket behind
  ip netns exec $NS taskset -c 0,1 dpdk-testpmd --no-pci --file-prefix=aplbdut --huge-unlink -m 128 \
    --lcores 0@0,1@1 \
    --vdev=$DUT_VDEV \
    --vdev=net_null0,no-rx=1 \
    -- --forward-mode=io --port-topology=paired --burst=32 --txd=1024 --rxd=1024 \
    --total-num-mbufs=16384 --stats-period=1 > $W/dut.log 2>&1 &
  DUT_PID=$!
  sleep 2
  start_gen "$1"
  sleep $((WARM + DUR + 1))
  stop_pid $GEN_PID; GEN_PID=
  stop_pid $DUT_PID; DUT_PID=
  cp $W/dut.log $W/testpmd-$1.log; cp $W/gen.log $W/gen-testpmd-$1.log
  # Lines: "NIC statistics for port N" ... "Tx-pps: X"; keep port 1's, skip the warm-up.
  local v
  v=$(awk '/NIC statistics for port/ {p=$(NF-1)} /Tx-pps:/ && p==1 {print $2}' $W/dut.log \
      | awk '$1 > 0' | tail -n +$((WARM + 1)) | head -n $DUR)
  median $v
}

metric() { # NAME, or NAME{LABEL="VALUE"...: the sum of NAME's samples (whose labels start so)
  ip netns exec $NS curl -sf 127.0.0.1:$METRICS_PORT/metrics \
    | awk -v p="$1" '(index(p, "{") ? index($1, p) == 1 : ($1 == p || index($1, p "{") == 1)) {s+=$NF}
                     END {printf "%d\n", s}'
}

# NAT modes: wait until every flow has its session; record how fast they came.
wait_sessions() { # mode flows
  local t0 now sessions created prev_created=0 peak=0 d i
  t0=$(date +%s.%N)
  for i in $(seq 360); do
    sleep 0.5
    sessions=$(metric appliance_nat_sessions); created=$(metric appliance_nat_mappings_created_total)
    d=$(( (created - prev_created) * 2 )); prev_created=$created
    [ "$d" -gt "$peak" ] && peak=$d
    [ "$sessions" -ge "$2" ] && break
  done
  now=$(date +%s.%N)
  echo "mode=$1 flows=$2 sessions=$sessions setup_s=$(echo "$now - $t0" | bc -l | xargs printf %.1f) \
new_mappings_per_s_peak=$peak table_bytes=$(metric appliance_nat_table_bytes) \
ring_full_drops=$(ip netns exec $NS curl -sf 127.0.0.1:$METRICS_PORT/metrics | awk '/reason="nat_ring_full"/ {print $NF}')" >> $W/natsetup.log
}

# appliance: per-second deltas of its tx counter on port1.
run_appliance() { # mode [binary]
  rm -f $W/memif0.sock $W/vhost0.sock
  local cfg=$W/bench.yaml flows bin=${2:-$BIN}
  flows=$(nat_flows "$1")
  [ "$flows" -gt 0 ] && cfg=$W/bench-nat.yaml
  ip netns exec $NS "$bin" run --config $cfg > $W/dut.log 2>&1 &
  DUT_PID=$!
  local i v=() prev cur
  for i in $(seq 300); do
    ip netns exec $NS curl -sf 127.0.0.1:$METRICS_PORT/metrics > /dev/null 2>&1 && break
    sleep 0.1
  done
  start_gen "$1"
  [ "$flows" -gt 0 ] && wait_sessions "$1" "$flows"
  sleep "$WARM"
  tx() { metric 'appliance_port_tx_packets_total{port="port1"'; }
  prev=$(tx)
  for i in $(seq "$DUR"); do
    sleep 1
    cur=$(tx); v+=($((cur - prev))); prev=$cur
  done
  stop_pid $GEN_PID; GEN_PID=
  stop_pid $DUT_PID; DUT_PID=
  median "${v[@]}"
}

echo "# bench-fwd: one DUT worker on CPU 1, generator on CPU 0, $LINK in, net_null out"
echo "# $(rte_ver=$(dpkg-query -W -f='${Version}' dpdk 2>/dev/null); echo "dpdk $rte_ver"), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
DUTS="testpmd-io appliance"
if [ -n "${BASELINE_BIN:-}" ]; then
  [ -x "$BASELINE_BIN" ] || die "BASELINE_BIN=$BASELINE_BIN is not an executable"
  "$BASELINE_BIN" check-config $W/bench.yaml > /dev/null
  DUTS="$DUTS baseline"
fi
summary=()
for mode in $MODES; do
  declare -A R=()
  for rep in $(seq "$REPS"); do
    for dut in $DUTS; do
      case $dut in
        testpmd-io) p=$(run_testpmd_io "$mode") ;;
        appliance) p=$(run_appliance "$mode") ;;
        baseline) p=$(run_appliance "$mode" "$BASELINE_BIN") ;;
      esac
      R[$dut]="${R[$dut]:-} $p"
      echo "mode=$mode run=$rep dut=$dut pps=$p"
      sleep 1
    done
  done
  io=$(median ${R[testpmd-io]}); apl=$(median ${R[appliance]})
  line=$(printf 'mode=%-6s testpmd-io=%6.2f Mpps  appliance=%6.2f Mpps  ratio=%.2f  (runs io:%s apl:%s)' \
    "$mode" "$(echo "$io/1000000" | bc -l)" "$(echo "$apl/1000000" | bc -l)" "$(echo "if ($io > 0) $apl/$io else 0" | bc -l)" \
    "$(echo ${R[testpmd-io]} | tr ' ' ,)" "$(echo ${R[appliance]} | tr ' ' ,)")
  if [ -n "${R[baseline]:-}" ]; then
    base=$(median ${R[baseline]})
    line="$line$(printf '  baseline=%.2f Mpps appliance/baseline=%.2f (runs base:%s)' "$(echo "$base/1000000" | bc -l)" \
      "$(echo "if ($base > 0) $apl/$base else 0" | bc -l)" "$(echo ${R[baseline]} | tr ' ' ,)")"
  fi
  summary+=("$line")
  unset R
done
printf '%s\n' "${summary[@]}"
if [ -s $W/natsetup.log ]; then
  echo "# NAT set-up phases (sessions created by the mapping server while the generator loops over the flows):"
  cat $W/natsetup.log
fi

#!/usr/bin/env bash
# NAT cluster benchmark (docs/nat-ha.md; figures in docs/benchmarks.md). Two parts (PARTS,
# default "switchover remote"):
#
# switchover  On the cluster testbed (scripts/nat-cluster-testbed.sh: three appliances
#             behind ECMP kernel routers, 3-member etcd), for SIZES sessions (default
#             "10000 100000"): apl-gen replays one UDP frame per flow from 20 subscribers
#             into the subscriber-side router at RATE pps (default 20000) until every
#             flow has its session and every standby is synced; then
#               - hard failure: kill -9 of the owner of shard 0;
#               - graceful: POST /nat/cluster/handover?shard=1 on its owner.
#             Printed per event: the data-path outage of 20 probe flows sending every
#             5 ms (the longest silence that spans the event: last reply before, first
#             translated reply after), the probe datagrams lost, and over the bulk flows
#             seen before and after the event the share that kept its public endpoint.
#             Also: sync bandwidth per 1000 new sessions/s (sync bytes sent while the
#             sessions were made / sessions made × 1000) and the steady-state sync rate
#             (refreshes) with every session established.
# remote      Established-flow Mpps and new mappings/s through one worker (memif in,
#             net_null out, scripts/bench-fwd.sh's harness and frames: FLOWS flows,
#             default 65536), single-host NAT (configs/bench-nat.yaml) next to the same
#             appliance as a cluster host whose only shard is owned by a second appliance
#             in another namespace (every new mapping is a remote state request; the DUT
#             is that shard's standby), in the same run, REPS times each.
#
# Usage: sudo [PARTS="switchover remote"] [SIZES="10000 100000"] [RATE=20000] [FLOWS=65536]
#             [REPS=3] [DUR=5] bash scripts/bench-nat-ha.sh
# Everything it starts is stopped and every namespace, etcd data and hugepage file removed
# on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
require_root
use_cargo

PARTS=${PARTS:-"switchover remote"}
SIZES=${SIZES:-"10000 100000"}
RATE=${RATE:-20000}
FLOWS=${FLOWS:-65536}
REPS=${REPS:-3}; DUR=${DUR:-5}; WARM=${WARM:-2}
W=/tmp/apl-bench-nat-ha
TB=nhb
PIDS=()
PROBE=$PWD/tests/helpers/nat_ha_probe.py

cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  PIDS=()
  TB=$TB bash scripts/nat-cluster-testbed.sh down >/dev/null 2>&1 || true
  for ns in nhr-dut nhr-vms; do ns_delete "$ns" bench-nat-ha; done
  rm -rf /dev/shm/nhr-etcd
  rm -f /dev/hugepages/nhb* /dev/hugepages/nhr*
  rm -rf /var/run/dpdk/nhb* /var/run/dpdk/nhr*
}
trap cleanup EXIT INT TERM

bash scripts/setup.sh >/dev/null
cargo build --release -q -p appliance
BIN=$PWD/target/release/appliance
GEN=$PWD/target/release/apl-gen
rm -rf $W; mkdir -p $W

metric() { # ns port what: the sum of the samples of metric NAME (what = NAME, any labels or none),
  # or of those whose name{labels} start with what (what = 'NAME{label="x"')
  ip netns exec "$1" curl -sf "127.0.0.1:$2/metrics" | awk -v p="$3" '
    (index(p, "{") ? index($1, p) == 1 : ($1 == p || index($1, p "{") == 1)) {s+=$NF} END {printf "%d\n", s}'
}

now() { date +%s.%N; }

wait_metrics() { # ns port
  local i
  for i in $(seq 300); do
    ip netns exec "$1" curl -sf "127.0.0.1:$2/metrics" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "no metrics on $1:$2"
}

# ---------------------------------------------------------------------------
# switchover
# ---------------------------------------------------------------------------

host_config() { # k -> prints host k's config for the testbed
  python3 - "$1" <<'EOF'
import re, sys
k = int(sys.argv[1])
s = open("configs/nat-cluster.yaml").read()
s = s.replace("100.64.11", "100.64.1%d" % k).replace("100.65.1.", "100.65.%d." % k)
s = s.replace("host_id: 1", "host_id: %d" % k).replace('listen: "192.0.2.1:7400"', 'listen: "192.0.2.%d:7400"' % k)
s = s.replace("file_prefix: apl-nat-ha1", "file_prefix: nhb%d" % k)
s = s.replace("blocks_per_subscriber_max: 8", "blocks_per_subscriber_max: 24")
s = s.replace("mappings_max: 65536", "mappings_max: 131072").replace("sessions_max: 131072", "sessions_max: 262144")
peers = "".join('      - { id: %d, addr: "192.0.2.%d:7400" }\n' % (h, h) for h in (1, 2, 3) if h != k)
s = re.sub(r"    peers:\n(      - .*\n)+", "    peers:\n" + peers, s)
print(s, end="")
EOF
}

view() { ip netns exec "$TB-a$1" curl -sf 127.0.0.1:9100/nat/cluster; }
# owner of shard $2 as host $1 sees it
owner_of() { view "$1" | awk -v s="$2" 'f && $1 == s {print $5} /^shard /{f=1}'; }
# every running host agrees on an owner per shard and every standby is synced
ready() { # hosts...
  local h s o first
  for s in 0 1 2; do
    first=
    for h in "$@"; do
      o=$(owner_of "$h" "$s"); [ -n "$o" ] && [ "$o" != 0 ] || return 1
      [ -z "$first" ] && first=$o
      [ "$o" = "$first" ] || return 1
    done
  done
  for h in "$@"; do
    view "$h" | awk 'f && $7 == "standby" && $9 != "yes" {bad=1} /^shard /{f=1} END {exit bad}' || return 1
  done
}
wait_ready() { # timeout_s hosts...
  local t=$1; shift
  for _ in $(seq $((t * 5))); do ready "$@" && return 0; sleep 0.2; done
  die "cluster not ready (hosts $*)"
}
sum_metric() { # prefix hosts...
  local p=$1 h s=0; shift
  for h in "$@"; do s=$((s + $(metric "$TB-a$h" 9100 "$p"))); done
  echo "$s"
}

APL_PID=()
start_host() { # k
  host_config "$1" > $W/h$1.yaml
  ip netns exec "$TB-a$1" "$BIN" run --config $W/h$1.yaml > $W/h$1.log 2>&1 &
  APL_PID[$1]=$!; PIDS+=($!)
}

switchover() { # sessions
  local n=$1 k
  TB=$TB bash scripts/nat-cluster-testbed.sh up > $W/testbed.log 2>&1 || { cat $W/testbed.log; die "testbed"; }
  for k in 1 2 3; do start_host $k; done
  for k in 1 2 3; do wait_metrics "$TB-a$k" 9100; done
  ip netns exec $TB-sub ping -c1 -W2 100.64.1.1 >/dev/null; ip netns exec $TB-srv ping -c1 -W2 203.0.113.1 >/dev/null
  wait_ready 30 1 2 3
  ip netns exec $TB-srv python3 $PROBE udp-server $W/server-$n.json 9000 > $W/server.out 2>&1 &
  local srv=$!; PIDS+=($srv)
  sleep 1
  local subs; subs=$(seq -s, -f "100.64.1.%g" 10 29)
  local r1mac; r1mac=$(ip -n $TB-r1 -br link show sub | awk '{print $3}')
  local submac; submac=$(ip -n $TB-sub -br link show eth0 | awk '{print $3}')
  python3 $PROBE pcap $W/bulk-$n.pcap "$n" "$subs" 30000 203.0.113.2 9000 "$r1mac" "$submac"
  # Probe flows: 20 every 5 ms for the outage, the whole run.
  ip netns exec $TB-sub python3 $PROBE udp-flows $W/probe-$n.json 203.0.113.2 9000 "$subs" 20 5 120 20 5 \
    > $W/probe-$n.out 2>&1 &
  local probe=$!; PIDS+=($probe)
  local bytes0 t0; bytes0=$(sum_metric appliance_nat_cluster_sync_sent_bytes_total 1 2 3); t0=$(now)
  ip netns exec $TB-sub taskset -c 0 "$GEN" --no-pci --file-prefix=nhbgen --huge-unlink -m 64 --lcores 0@0 \
    --vdev=net_af_packet0,iface=eth0 -- --pcap $W/bulk-$n.pcap --pps "$RATE" --port net_af_packet0 > $W/gen-$n.log 2>&1 &
  local gen=$!; PIDS+=($gen)
  local sessions=0
  for _ in $(seq 1200); do
    sleep 0.5
    sessions=$(sum_metric appliance_nat_sessions 1 2 3)
    [ "$sessions" -ge "$n" ] && break
  done
  local t1 bytes1; t1=$(now); bytes1=$(sum_metric appliance_nat_cluster_sync_sent_bytes_total 1 2 3)
  wait_ready 60 1 2 3
  sleep 2
  # Steady state: refreshes of established sessions (one per session per refresh_sync_ms).
  local b2 t2 b3 t3; b2=$(sum_metric appliance_nat_cluster_sync_sent_bytes_total 1 2 3); t2=$(now)
  sleep "${STEADY_S:-35}"
  b3=$(sum_metric appliance_nat_cluster_sync_sent_bytes_total 1 2 3); t3=$(now)
  echo "sessions=$n made_in_s=$(echo "$t1 - $t0" | bc -l | xargs printf %.1f) sync_bytes_during_setup=$((bytes1 - bytes0)) sync_bytes_per_s_steady=$(echo "($b3 - $b2) / ($t3 - $t2)" | bc -l | xargs printf %.0f)" > $W/setup-$n.txt
  # Hard failure.
  local victim; victim=$(owner_of 2 0)
  local t_kill; t_kill=$(now)
  kill -KILL "${APL_PID[$victim]}"
  local others=(); for k in 1 2 3; do [ "$k" != "$victim" ] && others+=($k); done
  for _ in $(seq 400); do
    o=$(owner_of "${others[0]}" 0); [ -n "$o" ] && [ "$o" != "$victim" ] && [ "$o" != 0 ] && break; sleep 0.05
  done
  local t_taken; t_taken=$(now)
  sleep 12
  local activated; activated=$(sum_metric appliance_nat_cluster_sessions_activated_total "${others[@]}")
  # Graceful handover of shard 1.
  local from; from=$(owner_of "${others[0]}" 1)
  local t_hand; t_hand=$(now)
  ip netns exec "$TB-a$from" curl -sf -X POST "127.0.0.1:9100/nat/cluster/handover?shard=1" > $W/handover-$n.txt
  for _ in $(seq 400); do
    o=$(owner_of "${others[0]}" 1); [ -n "$o" ] && [ "$o" != "$from" ] && [ "$o" != 0 ] && break; sleep 0.05
  done
  local t_moved; t_moved=$(now)
  sleep 12
  kill -INT $gen; wait $gen 2>/dev/null || true
  local drops=""
  for k in "${others[@]}"; do
    drops="$drops host$k:$(ip netns exec "$TB-a$k" curl -sf 127.0.0.1:9100/metrics | awk -F'[{}]' '/^appliance_drops_total\{reason="nat_/ {split($3, v, " "); if (v[2] > 0) printf "%s=%s,", $2, v[2]}')"
  done
  echo "$drops" > $W/drops-$n.txt
  kill -TERM $srv; wait $srv 2>/dev/null || true
  kill -INT $probe 2>/dev/null || true; wait $probe 2>/dev/null || true
  python3 - "$n" "$W" "$t_kill" "$t_taken" "$t_hand" "$t_moved" "$victim" "$from" "$activated" <<'EOF'
import datetime, glob, json, re, sys
n, w = int(sys.argv[1]), sys.argv[2]

def acquired(how, after):
    # The new owner's log line "nat cluster: shard acquired ... how=..." (UTC, µs).
    best = None
    for path in glob.glob("%s/h?.log" % w):
        for line in open(path, errors="replace"):
            if "shard acquired" in line and 'how="%s"' % how in line:
                t = datetime.datetime.strptime(line.split()[0], "%Y-%m-%dT%H:%M:%S.%fZ")
                t = t.replace(tzinfo=datetime.timezone.utc).timestamp()
                if t > after and (best is None or t < best):
                    best = t
    return best

t_kill, t_taken, t_hand, t_moved = map(float, sys.argv[3:7])
t_taken = acquired("taken over", t_kill) or t_taken
t_moved = acquired("handed over", t_hand) or t_moved
victim, frm, activated = sys.argv[7], sys.argv[8], sys.argv[9]
srv = json.load(open("%s/server-%d.json" % (w, n)))
try:
    probe = json.load(open("%s/probe-%d.json" % (w, n)))
except (OSError, ValueError):
    probe = []
gen = [l for l in open("%s/gen-%d.log" % (w, n)) if l.startswith("tx_total=")]
tx = int(gen[-1].split("=")[1]) if gen else 0
setup = open("%s/setup-%d.txt" % (w, n)).read().split()
setup = dict(x.split("=", 1) for x in setup)

def outage(t):
    gaps = [(b - a) * 1000 for f in probe for a, b in f["gaps"] if a <= t + 0.5 and b >= t]
    return max(gaps) if gaps else 0.0

def lost(t):
    return sum(1 for f in probe for x in f["lost_at"] if t - 1 <= x <= t + 3)

def kept(t):
    before = after = same = 0
    for flow, seen in srv["bulk"].items():
        b = [e for e in seen if e[1] < t]
        a = [e for e in seen if e[2] > t + 3]
        if not b or not a:
            continue
        before += 1
        if all(e[0] == b[-1][0] for e in seen if e[2] >= b[-1][1]):
            same += 1
    return before, same

made = float(setup["made_in_s"])
per_session = int(setup["sync_bytes_during_setup"]) / max(n, 1)
print("sessions=%d setup: %.1f s at the generator's rate, sync %.0f bytes per new session = %.1f kB/s per 1000 new sessions/s, steady sync %.1f kB/s (refreshes)"
      % (n, made, per_session, per_session, int(setup["sync_bytes_per_s_steady"]) / 1000))
for name, t, done, extra in (("hard (kill -9 host %s)" % victim, t_kill, t_taken, ", sessions activated %s" % activated),
                             ("graceful (shard 1 from host %s)" % frm, t_hand, t_moved, "")):
    b, s = kept(t)
    print("sessions=%d %s: new owner serving after %.0f ms, data-path outage %.0f ms (probe flows, 5 ms resolution), probe datagrams lost %d, bulk flows kept %d/%d (%.2f %%)%s"
          % (n, name, (done - t) * 1000, outage(t), lost(t), s, b, 100.0 * s / max(b, 1), extra))
print("sessions=%d bulk datagrams sent %d, received %d (%.2f %% lost over the whole run), public endpoints reused: %d"
      % (n, tx, srv["bulk_datagrams"], 100.0 * (tx - srv["bulk_datagrams"]) / max(tx, 1), len(srv["conflicts"])))
print("sessions=%d NAT drops on the surviving hosts: %s" % (n, open("%s/drops-%d.txt" % (w, n)).read().strip() or "none"))
EOF
  for k in 1 2 3; do kill -INT "${APL_PID[$k]}" 2>/dev/null || true; done
  sleep 2
  cleanup
}

# ---------------------------------------------------------------------------
# remote: the VMS on another host vs the single-host NAT
# ---------------------------------------------------------------------------

remote_setup() {
  ip netns add nhr-dut; ip netns add nhr-vms
  ip -n nhr-dut link set lo up; ip -n nhr-vms link set lo up
  ip -n nhr-dut link add cl type veth peer name cl netns nhr-vms
  ip -n nhr-dut addr add 192.0.2.1/24 dev cl; ip -n nhr-vms addr add 192.0.2.2/24 dev cl
  ip -n nhr-dut link set cl up; ip -n nhr-vms link set cl up
  rm -rf /dev/shm/nhr-etcd
  ip netns exec nhr-vms setsid etcd --name n1 --data-dir /dev/shm/nhr-etcd \
    --listen-client-urls http://192.0.2.2:12379 --advertise-client-urls http://192.0.2.2:12379 \
    --listen-peer-urls http://127.0.0.1:12380 --initial-advertise-peer-urls http://127.0.0.1:12380 \
    --initial-cluster n1=http://127.0.0.1:12380 --log-level error > $W/etcd.log 2>&1 < /dev/null &
  PIDS+=($!)
  for _ in $(seq 100); do
    ip netns exec nhr-vms etcdctl --endpoints=http://192.0.2.2:12379 endpoint health >/dev/null 2>&1 && break
    sleep 0.2
  done
  sed -e "s|^  listen: null|  listen: \"127.0.0.1:9199\"|" -e "s|file_prefix: apl-bench|file_prefix: nhrdut|" \
    configs/bench-nat.yaml > $W/single.yaml
  python3 - <<EOF
s = open("$W/single.yaml").read()
cluster = """  cluster:
    host_id: {h}
    listen: "192.0.2.{h}:7400"
    peers: [{{ id: {o}, addr: "192.0.2.{o}:7400" }}]
    etcd: ["http://192.0.2.2:12379"]
    shards: [{{ pool: ["203.0.113.0/26"], hosts: [2, 1] }}]
    sync_window_records: 1048576
"""
dut = s.replace("  mapper_idle_backoff: true", "  mapper_idle_backoff: true\n" + cluster.format(h=1, o=2))
open("$W/dut.yaml", "w").write(dut)
vms = s.replace("  mapper_idle_backoff: true", "  mapper_idle_backoff: true\n" + cluster.format(h=2, o=1))
vms = vms.replace("file_prefix: nhrdut", "file_prefix: nhrvms")
vms = vms.replace("device: net_memif0", "device: net_null1").replace(
    'args: "role=server,id=0,socket=/tmp/apl-bench/memif0.sock,socket-abstract=no,mac=02:00:00:00:10:01"', 'args: "no-rx=1"')
vms = vms.replace("memory_mb: 512", "memory_mb: 256").replace("worker_cache_entries: 4194304", "worker_cache_entries: 65536")
vms = vms.replace("    enabled: false            # workers spin: measure, don't share", "    enabled: true")
vms = vms.replace("workers:\n    - { lcore: 1, cpu: 1 }", "workers:\n    - { lcore: 1, cpu: 0 }")
open("$W/vms.yaml", "w").write(vms)
EOF
  sed -i "s|/tmp/apl-bench/memif0.sock|$W/memif0.sock|" $W/single.yaml $W/dut.yaml
  for c in single dut vms; do "$BIN" check-config $W/$c.yaml > /dev/null || die "$c.yaml"; done
  python3 scripts/mkpcap.py nat $W/nat.pcap "$FLOWS"
}

remote_run() { # single|remote -> prints "pps setup_s peak_new_per_s"
  local mode=$1 vms= dut gen i
  rm -f $W/memif0.sock
  # Every run starts from an empty cluster: without this, the standby of the last run
  # (the DUT) rightly takes the shard over from the VMS's previous incarnation.
  ip netns exec nhr-vms etcdctl --endpoints=http://192.0.2.2:12379 del --prefix /appliance/ >/dev/null
  if [ "$mode" = remote ]; then
    ip netns exec nhr-vms "$BIN" run --config $W/vms.yaml > $W/vms.log 2>&1 &
    vms=$!; PIDS+=($vms)
    wait_metrics nhr-vms 9199
    ip netns exec nhr-dut "$BIN" run --config $W/dut.yaml > $W/dut.log 2>&1 &
  else
    ip netns exec nhr-dut "$BIN" run --config $W/single.yaml > $W/dut.log 2>&1 &
  fi
  dut=$!; PIDS+=($dut)
  wait_metrics nhr-dut 9199
  if [ "$mode" = remote ]; then
    for i in $(seq 100); do
      ip netns exec nhr-dut curl -sf 127.0.0.1:9199/nat/cluster | awk 'f && $1 == 0 && $5 == 2 && $9 == "yes" {ok=1} /^shard /{f=1} END {exit !ok}' && break
      sleep 0.2
    done
  fi
  taskset -c 0 "$GEN" --no-pci --file-prefix=nhrgen --huge-unlink -m 128 --lcores 0@0 \
    --vdev=net_memif0,role=client,id=0,socket=$W/memif0.sock,socket-abstract=no -- --pcap $W/nat.pcap > $W/gen.log 2>&1 &
  gen=$!; PIDS+=($gen)
  local ns=nhr-dut t0 prev=0 cur peak=0 sessions
  [ "$mode" = remote ] && ns=nhr-vms
  t0=$(now)
  for i in $(seq 720); do
    sleep 0.5
    sessions=$(metric $ns 9199 appliance_nat_sessions)
    cur=$(metric $ns 9199 appliance_nat_sessions_created_total)
    [ $(((cur - prev) * 2)) -gt "$peak" ] && peak=$(((cur - prev) * 2))
    prev=$cur
    [ "$sessions" -ge "$FLOWS" ] && break
  done
  local setup; setup=$(echo "$(now) - $t0" | bc -l)
  sleep "$WARM"
  local v=() p c
  p=$(metric nhr-dut 9199 'appliance_port_tx_packets_total{port="port1"')
  for i in $(seq "$DUR"); do
    sleep 1; c=$(metric nhr-dut 9199 'appliance_port_tx_packets_total{port="port1"'); v+=($((c - p))); p=$c
  done
  kill -INT $gen; wait $gen 2>/dev/null || true
  kill -INT $dut; wait $dut 2>/dev/null || true
  [ -n "$vms" ] && { kill -INT $vms; wait $vms 2>/dev/null || true; }
  local med; med=$(python3 -c 'import sys,statistics as s; print(int(s.median([float(x) for x in sys.argv[1:]])))' "${v[@]}")
  printf '%s %.1f %s\n' "$med" "$setup" "$peak"
}

remote() {
  remote_setup
  local rep m r out=()
  for rep in $(seq "$REPS"); do
    for m in single remote; do
      r=$(remote_run $m)
      echo "remote-part run=$rep dut=$m established_pps setup_s peak_new_mappings_per_s: $r"
      out+=("$m $r")
      sleep 1
    done
  done
  printf '%s\n' "${out[@]}" | python3 -c '
import sys, statistics as s
rows = {}
for line in sys.stdin:
    m, pps, setup, peak = line.split()
    rows.setdefault(m, []).append((float(pps), float(setup), float(peak)))
for m, v in rows.items():
    print("%-6s flows=%s established %.2f Mpps (median of %d), set-up %.1f s = %.0f new mappings/s (peak %.0f/s)" % (
        m, sys.argv[1], s.median(x[0] for x in v) / 1e6, len(v), s.median(x[1] for x in v),
        float(sys.argv[1]) / s.median(x[1] for x in v), s.median(x[2] for x in v)))
' "$FLOWS"
}

echo "# bench-nat-ha: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
for part in $PARTS; do
  case $part in
    switchover) for n in $SIZES; do switchover "$n"; done ;;
    remote) remote ;;
    *) die "unknown part $part" ;;
  esac
done

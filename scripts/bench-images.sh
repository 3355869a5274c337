#!/usr/bin/env bash
# Container-image benchmark (issue 11): time until a container answers, and bytes fetched,
# for the same image on links shaped with tc htb to 1 Gbit/s and 100 Mbit/s:
#   (a) full pull, then start      (objcli image run --pull: every chunk fetched first)
#   (b) lazy start                 (objcli image run --no-prefetch: chunks on first use)
#   (c) lazy start with a trace    (prefetch along the trace recorded on another host)
# Three storage appliances on the steering testbed, the metadata service, and hosts h2 (records
# the trace) and h3 (measured; a fresh agent state, so a cold cache and page cache, per run).
# The container: python3 -m http.server on a Debian bookworm rootfs (mmdebstrap, cached).
# Prints one line per run and a table of medians. Run as root: sudo bash scripts/bench-images.sh
#   RUNS (default 3), RATES (default "1gbit 100mbit"), CHUNK_KIB (default 64), DELAY_MS (0).
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_root
cd "$REPO_ROOT"
RUNS=${RUNS:-3}
RATES=${RATES:-"1gbit 100mbit"}
CHUNK_KIB=${CHUNK_KIB:-64}
DELAY_MS=${DELAY_MS:-0}
export TB=bimg$$
BIN=$REPO_ROOT/target/release
for b in appliance objmeta objcli imgagent; do [ -x "$BIN/$b" ] || die "missing $BIN/$b: cargo build --release -p appliance -p objmeta -p objcli -p imgagent"; done
ROOTFS=$(bash tests/helpers/debian-rootfs.sh)
WORK=$REPO_ROOT/target/bench-images.$$
mkdir -p "$WORK"
PIDS=()
cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  for id in $(runc list -q 2>/dev/null | grep "^bimg$$-"); do runc delete -f "$id"; done
  grep " $WORK" /proc/self/mountinfo | awk '{print $5}' | sort -r | while read -r m; do umount -l "$m"; done
  for h in h2 h3; do ip netns del "$TB-$h" 2>/dev/null; done
  bash scripts/steering-testbed.sh down >/dev/null 2>&1
  rm -f /dev/hugepages/bimg$$_*
  rm -rf "$WORK"
}
trap cleanup EXIT
bash scripts/steering-testbed.sh up >/dev/null
# Background jobs are started with nsenter itself (it execs the program, so $! is its PID).
NETNS() { nsenter --net=/run/netns/"$1" "${@:2}"; }

node_yaml() { # k
  local k=$1 j
  echo "eal: { file_prefix: bimg$$_$k, memory_mb: 256, huge_unlink: true, pci: false }"
  echo "lcores: { main: { lcore: 0, cpu: 0 }, workers: [ { lcore: 1, cpu: 1 } ] }"
  echo "ports:"
  echo "  - { name: net, device: net_af_xdp0, args: \"iface=apl0\", ipv6: [\"2001:db8:5::$k/64\"] }"
  echo "routes:"
  for j in 1 2 3; do [ "$j" = "$k" ] || echo "  - { prefix: \"2001:db8:5a::$j/128\", via: \"2001:db8:5::$j\", port: net }"; done
  echo "neighbors:"
  for j in 1 2 3; do [ "$j" = "$k" ] || echo "  - { ip: \"2001:db8:5::$j\", mac: \"02:00:00:00:05:0$j\", port: net }"; done
  echo "pipeline: { idle_backoff: { enabled: true, empty_polls: 256, sleep_us: 50 } }"
  echo "metrics: { listen: \"127.0.0.1:9100\" }"
  echo "log: { level: warn }"
  echo "srv6:"
  echo "  local_sids:"
  echo "    - { sid: \"2001:db8:5a::$k\", behavior: storage, policy: sr-c, threshold: 8 }"
  echo "storage_service: { udp_port: 7878, queue_depth: 0 }"
  echo "storage: { object_prefix: \"2001:db8:5b:$k::/64\", device: \"$WORK/dev$k.img\", size_mb: 400 }"
}
for k in 1 2 3; do
  node_yaml "$k" > "$WORK/node$k.yaml"
  ip netns exec "$TB-a$k" "$BIN/appliance" run --config "$WORK/node$k.yaml" > "$WORK/node$k.log" 2>&1 &
  PIDS+=($!)
  ip netns exec "$TB-cl" ip -6 route add "2001:db8:5b:$k::/64" via "2001:db8:5::$k"
done
for h in 2 3; do
  ns=$TB-h$h
  ip netns add "$ns"; ip -n "$ns" link set lo up
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_ra=0 net.ipv6.conf.all.seg6_enabled=1
  ip -n "$ns" link add eth0 type veth peer name "p-h$h" netns "$TB-sw"
  ip -n "$TB-sw" link set "p-h$h" master br0; ip -n "$TB-sw" link set "p-h$h" up
  ip -n "$ns" link set eth0 up
  ip -n "$ns" -6 addr add "2001:db8:5::10$h/64" dev eth0 nodad
  for k in 1 2 3; do
    ip -n "$ns" -6 route add "2001:db8:5a::$k/128" via "2001:db8:5::$k" dev eth0
    ip -n "$ns" -6 route add "2001:db8:5b:$k::/64" via "2001:db8:5::$k" dev eth0
  done
done
META=http://[2001:db8:5::100]:7070
nsenter --net=/run/netns/"$TB-cl" "$BIN/objmeta" serve --listen "[::]:7070" --down-after 3600 --store "embedded:$WORK/meta.db" > "$WORK/objmeta.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do NETNS "$TB-h2" curl -sf "$META/health" >/dev/null 2>&1 && break; sleep 0.2; done
for k in 1 2 3; do
  NETNS "$TB-cl" curl -sf -XPOST "$META/nodes" -d "{\"id\":\"n$k\",\"object_prefix\":\"2001:db8:5b:$k::/64\",\"storage_sid\":\"2001:db8:5a::$k\",\"capacity_bytes\":400000000,\"failure_domain\":\"rack$k\"}" >/dev/null
done
sleep 2
info "push: $(NETNS "$TB-cl" "$BIN/objcli" --meta "$META" image push --chunk-kib "$CHUNK_KIB" "$ROOTFS" deb)"

PORT=9500
agent() { # host state-dir -> starts an agent, sets APORT
  PORT=$((PORT + 1)); APORT=$PORT
  nsenter --net=/run/netns/"$TB-$1" "$BIN/imgagent" serve --meta "$META" --state "$2" --listen "127.0.0.1:$APORT" --host "$1" --delay-ms "$DELAY_MS" > "$2.log" 2>&1 &
  APID=$!; PIDS+=("$APID")
  for _ in $(seq 100); do grep -q "imgagent: serving" "$2.log" 2>/dev/null && return 0; sleep 0.1; done
  die "agent on $1 did not start: $(cat "$2.log")"
}
metric() { # host name [label filter] -> value
  NETNS "$TB-$1" curl -s "127.0.0.1:$APORT/metrics" | awk -v n="$2" -v f="${3:-}" '$1 ~ "^"n"({|$)" && index($1, f) {s += $2} END {printf "%d", s}'
}
run() { # host id extra-args... -> prints seconds until the container answers
  local h=$1 id=$2; shift 2
  nsenter --net=/run/netns/"$TB-$h" "$BIN/objcli" image run deb --agent "http://127.0.0.1:$APORT" --id "bimg$$-$id" \
    --bundle-root "$WORK/bundles" --ready-port 8000 "$@" -- python3 -m http.server 8000 --bind 127.0.0.1 > "$WORK/$id.log" 2>&1 &
  local rp=$!
  for _ in $(seq 3000); do grep -q "ready after" "$WORK/$id.log" && break; kill -0 $rp 2>/dev/null || break; sleep 0.02; done
  NETNS "$TB-$h" curl -sf --max-time 10 http://127.0.0.1:8000/ | grep -q "Directory listing" || die "container $id did not answer: $(cat "$WORK/$id.log")"
  kill -TERM $rp; wait $rp 2>/dev/null || true
  sed -n 's/.*ready after \([0-9.]*\) s.*/\1/p' "$WORK/$id.log"
}
shape() { # rate: htb on both directions of h3's link
  local ns=$TB-h3
  tc -n "$ns" qdisc del dev eth0 root 2>/dev/null || true
  tc -n "$TB-sw" qdisc del dev p-h3 root 2>/dev/null || true
  tc -n "$ns" qdisc add dev eth0 root handle 1: htb default 10
  tc -n "$ns" class add dev eth0 parent 1: classid 1:10 htb rate "$1"
  tc -n "$TB-sw" qdisc add dev p-h3 root handle 1: htb default 10
  tc -n "$TB-sw" class add dev p-h3 parent 1: classid 1:10 htb rate "$1"
}

# The trace: one lazy start on h2 (unshaped).
agent h2 "$WORK/h2"
info "trace start on h2: ready after $(run h2 trace) s"
kill -9 "$APID"; wait "$APID" 2>/dev/null || true
grep " $WORK/h2" /proc/self/mountinfo | awk '{print $5}' | sort -r | while read -r m; do umount -l "$m"; done

SIZE=$(NETNS "$TB-cl" "$BIN/objcli" --meta "$META" image inspect deb | sed -n 's/.* size \([0-9]*\) .*/\1/p')
declare -A T B
n=0
for rate in $RATES; do
  shape "$rate"
  for r in $(seq "$RUNS"); do
    for mode in a b c; do
      n=$((n + 1)); st=$WORK/h3-$n
      agent h3 "$st"
      case $mode in
        a) s=$(run h3 "r$n" --pull --no-prefetch) ;;
        b) s=$(run h3 "r$n" --no-prefetch) ;;
        c) s=$(run h3 "r$n") ;;
      esac
      bytes=$(metric h3 imgagent_bytes_fetched_total)
      demand=$(metric h3 imgagent_chunks_fetched_total demand)
      pf=$(metric h3 imgagent_chunks_fetched_total prefetch)
      echo "rate $rate run $r mode $mode: ready after $s s, fetched $bytes bytes ($((bytes * 1000 / SIZE)) per mille of $SIZE), chunks on demand $demand, prefetched $pf"
      T[$rate,$mode]+="$s "; B[$rate,$mode]+="$bytes "
      kill -9 "$APID"; wait "$APID" 2>/dev/null || true
      grep " $st" /proc/self/mountinfo | awk '{print $5}' | sort -r | while read -r m; do umount -l "$m"; done
      rm -rf "$st"
    done
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo
echo "image $SIZE bytes, chunks of $CHUNK_KIB KiB, medians of $RUNS runs, time until http.server answers"
printf "%-8s | %-22s | %-22s | %-22s | %-7s | %-7s\n" link "(a) pull then start" "(b) lazy" "(c) lazy + trace" "b/a" "c/b"
for rate in $RATES; do
  ta=$(echo "${T[$rate,a]}" | median); tb=$(echo "${T[$rate,b]}" | median); tc_=$(echo "${T[$rate,c]}" | median)
  ba=$(echo "${B[$rate,a]}" | median); bb=$(echo "${B[$rate,b]}" | median); bc=$(echo "${B[$rate,c]}" | median)
  printf "%-8s | %6.2f s %9.1f MB | %6.2f s %9.1f MB | %6.2f s %9.1f MB | %7.3f | %7.3f\n" "$rate" \
    "$ta" "$(echo "$ba/1000000" | bc -l)" "$tb" "$(echo "$bb/1000000" | bc -l)" "$tc_" "$(echo "$bc/1000000" | bc -l)" \
    "$(echo "$tb/$ta" | bc -l)" "$(echo "$tc_/$tb" | bc -l)"
  echo "$rate: bytes fetched by (b) = $(echo "100*$bb/$SIZE" | bc -l | cut -c1-5) % of the image"
done

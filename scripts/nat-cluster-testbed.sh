#!/usr/bin/env bash
# The NAT cluster testbed (docs/nat-ha.md): kernel subscribers behind an ECMP router, three
# appliance namespaces, an ECMP router in front of a kernel server, a cluster bridge, and a
# 3-member etcd cluster.
#
#                                       [$TB-sw: br0 192.0.2.10/24, etcd x3]
#                                        |cl          |cl          |cl   (kernel links: the
#  [$TB-sub] eth0 ── [$TB-r1] ─ in ═ [$TB-a1] out ═ ─ [$TB-r2] ── eth0 [$TB-srv]  cluster socket)
#  100.64.1.10..29     ECMP    ─ in ═ [$TB-a2] out ═ ─  ECMP       203.0.113.2, .3
#  (20 subscribers)    L4 hash ─ in ═ [$TB-a3] out ═ ─  L4 hash
#                                ═: af_packet ports of the appliance (DPDK), no kernel address
#
#  appliance k (1..3): inside port "in"  100.64.1k.2/24 (router r1: 100.64.1k.1)
#                      outside port "out" 100.65.k.2/24  (router r2: 100.65.k.1)
#                      cluster link "cl" 192.0.2.k/24 (kernel; UDP 7400)
#  r1: default route multipath via 100.64.11.2, 100.64.12.2, 100.64.13.2
#  r2: 198.51.100.64/28 (the pool) multipath via 100.65.1.2, 100.65.2.2, 100.65.3.2
#  both: fib_multipath_hash_policy=1 (L4), fib_multipath_use_neigh=1 with short neighbour
#  timers on the appliance links, so a dead appliance's next hop fails within ~300 ms and
#  its flows move to the others (only its flows: hash-threshold keeps the rest).
#  ONLINK=1: the pool is on-link instead: r2's links to the appliances are one bridge
#  "bout" (r2 198.51.100.1/24 on it, default neighbour timers), appliance k's outside port
#  is 198.51.100.1k/24, and r2 has no route for the pool: it ARPs for each pool address and
#  the shard's active host alone answers (docs/nat-ha.md "On-link pools").
#  etcd: members n1..n3 in $TB-sw, peers on 127.0.0.1:1238k, clients on
#  http://192.0.2.10:1237k (k = 1..3), data in /dev/shm/$TB-etcd<k>.
#
# Offloads are off on every kernel interface (scripts/lib.sh offloads_off): af_packet hands
# the appliance what the kernel sent.
#
# Usage: [TB=ncl] nat-cluster-testbed.sh up|down|status
#        [TB=ncl] nat-cluster-testbed.sh exec sub|r1|r2|srv|sw|a1|a2|a3 CMD [ARGS...]
#        [TB=ncl] nat-cluster-testbed.sh cut A B | heal | loss PCT   (cluster traffic between
#        appliances A and B dropped / restored; PCT % of cluster frames dropped between hosts)
# Nothing is done in the root namespace; `down` ends what runs in the namespaces (etcd
# included), deletes them and the etcd data.
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TB=${TB:-ncl}
SUB=$TB-sub R1=$TB-r1 R2=$TB-r2 SRV=$TB-srv SW=$TB-sw
APLS=("$TB-a1" "$TB-a2" "$TB-a3")
ALL=("$SUB" "$R1" "$R2" "$SRV" "$SW" "${APLS[@]}")
SUBSCRIBERS=20

need_root() { [ "$(id -u)" -eq 0 ] || { echo "nat-cluster-testbed.sh: must run as root" >&2; exit 1; }; }

ns_of() {
  case "$1" in
    sub|r1|r2|srv|sw|a1|a2|a3) echo "$TB-$1" ;;
    *) echo "$1" ;;
  esac
}

down() {
  local ns k
  for ns in "${ALL[@]}"; do ns_delete "$ns" nat-cluster-testbed; done
  for k in 1 2 3; do rm -rf "/dev/shm/$TB-etcd$k"; done
}

# Router sysctls: forwarding, L4 multipath hashing, next hops skipped when their
# neighbour failed, no reverse-path filter (return traffic takes other paths).
router() { # ns
  ip netns exec "$1" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.fib_multipath_hash_policy=1 \
    net.ipv4.fib_multipath_use_neigh=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
}

# Short neighbour timers on a router's link to an appliance: reachability is
# re-confirmed every ~100 ms, 2 probes 50 ms apart, failed entries dropped fast.
fast_neigh() { # ns ifname
  local p=net.ipv4.neigh.$2
  ip netns exec "$1" sysctl -qw "$p.base_reachable_time_ms=100" "$p.delay_first_probe_time=0" \
    "$p.retrans_time_ms=50" "$p.ucast_solicit=2" "$p.mcast_solicit=2" "$p.gc_stale_time=1" \
    "net.ipv4.conf.$2.rp_filter=0"
}

link() { # ns1 if1 ns2 if2
  ip -n "$1" link add "$2" type veth peer name "$4" netns "$3"
  offloads_off "$1" "$2"
  offloads_off "$3" "$4"
  ip -n "$1" link set "$2" up
  ip -n "$3" link set "$4" up
}

start_etcd() {
  local k cluster="n1=http://127.0.0.1:12381,n2=http://127.0.0.1:12382,n3=http://127.0.0.1:12383"
  for k in 1 2 3; do
    rm -rf "/dev/shm/$TB-etcd$k"
    ip netns exec "$SW" setsid etcd --name "n$k" --data-dir "/dev/shm/$TB-etcd$k" \
      --listen-peer-urls "http://127.0.0.1:1238$k" --initial-advertise-peer-urls "http://127.0.0.1:1238$k" \
      --listen-client-urls "http://192.0.2.10:1237$k,http://127.0.0.1:1237$k" \
      --advertise-client-urls "http://192.0.2.10:1237$k" \
      --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token "$TB" \
      --log-level error \
      >"/dev/shm/$TB-etcd$k.log" 2>&1 </dev/null &
  done
  for _ in $(seq 100); do
    if ip netns exec "$SW" etcdctl --endpoints=http://192.0.2.10:12371,http://192.0.2.10:12372,http://192.0.2.10:12373 \
      endpoint health >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.2
  done
  echo "nat-cluster-testbed: etcd did not become healthy" >&2
  cat "/dev/shm/$TB-etcd1.log" >&2 || true
  return 1
}

up() {
  down
  trap 'echo "nat-cluster-testbed: up failed, removing $TB" >&2; down' ERR
  local ns k
  for ns in "${ALL[@]}"; do
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  done
  router "$R1"
  router "$R2"

  # Subscribers and the server.
  link "$SUB" eth0 "$R1" sub
  for k in $(seq 10 $((10 + SUBSCRIBERS - 1))); do ip -n "$SUB" addr add "100.64.1.$k/24" dev eth0; done
  ip -n "$SUB" route add default via 100.64.1.1
  ip -n "$R1" addr add 100.64.1.1/24 dev sub
  link "$SRV" eth0 "$R2" srv
  ip -n "$SRV" addr add 203.0.113.2/24 dev eth0
  ip -n "$SRV" addr add 203.0.113.3/24 dev eth0
  ip -n "$SRV" route add default via 203.0.113.1
  ip -n "$R2" addr add 203.0.113.1/24 dev srv

  # The cluster bridge (etcd lives on it).
  ip -n "$SW" link add br0 type bridge stp_state 0 forward_delay 0
  ip -n "$SW" link set br0 up
  ip -n "$SW" addr add 192.0.2.10/24 dev br0

  if [ "${ONLINK:-0}" = 1 ]; then
    ip -n "$R2" link add bout type bridge stp_state 0 forward_delay 0
    ip -n "$R2" link set bout up
    ip -n "$R2" addr add 198.51.100.1/24 dev bout
  fi
  for k in 1 2 3; do
    local a=$TB-a$k
    link "$R1" "a$k" "$a" in
    link "$R2" "a$k" "$a" out
    link "$a" cl "$SW" "p-a$k"
    ip -n "$a" link set in address "02:00:00:00:0a:1$k"
    ip -n "$a" link set out address "02:00:00:00:0b:1$k"
    ip -n "$SW" link set "p-a$k" master br0
    ip -n "$a" addr add "192.0.2.$k/24" dev cl
    ip -n "$R1" addr add "100.64.1$k.1/24" dev "a$k"
    if [ "${ONLINK:-0}" = 1 ]; then
      ip -n "$R2" link set "a$k" master bout
    else
      ip -n "$R2" addr add "100.65.$k.1/24" dev "a$k"
      fast_neigh "$R2" "a$k"
    fi
    fast_neigh "$R1" "a$k"
    ip netns exec "$a" sysctl -qw net.ipv4.ip_forward=0
  done
  ip -n "$R1" route add default nexthop via 100.64.11.2 nexthop via 100.64.12.2 nexthop via 100.64.13.2
  if [ "${ONLINK:-0}" != 1 ]; then
    ip -n "$R2" route add 198.51.100.64/28 nexthop via 100.65.1.2 nexthop via 100.65.2.2 nexthop via 100.65.3.2
  fi

  # Cluster traffic can be cut or thinned between hosts here (bridge family).
  ip netns exec "$SW" nft add table bridge clusternet
  ip netns exec "$SW" nft add chain bridge clusternet forward '{ type filter hook forward priority 0; policy accept; }'

  start_etcd
  trap - ERR
  echo "nat cluster testbed $TB up: $SUB ($SUBSCRIBERS subscribers) | $R1 | a1 a2 a3 | $R2 | $SRV; etcd on 192.0.2.10:12371..3"
}

status() { ns_status "${ALL[@]}"; }

# Drops cluster frames between appliances A and B (both directions), not their etcd traffic.
cut() { # a b
  ip netns exec "$SW" nft add rule bridge clusternet forward iifname "p-a$1" oifname "p-a$2" drop
  ip netns exec "$SW" nft add rule bridge clusternet forward iifname "p-a$2" oifname "p-a$1" drop
}

# Drops PCT % of the cluster frames that cross between appliances.
loss() { # pct
  local i j
  for i in 1 2 3; do
    for j in 1 2 3; do
      [ "$i" = "$j" ] && continue
      ip netns exec "$SW" nft add rule bridge clusternet forward iifname "p-a$i" oifname "p-a$j" \
        numgen random mod 100 "<" "$1" drop
    done
  done
}

heal() { ip netns exec "$SW" nft flush chain bridge clusternet forward; }

cmd=${1:-}
case "$cmd" in
  up) need_root; up ;;
  down) need_root; down; echo "nat cluster testbed $TB down" ;;
  status) need_root; status ;;
  cut) need_root; [ $# -eq 3 ] || { echo "usage: cut A B" >&2; exit 2; }; cut "$2" "$3" ;;
  loss) need_root; [ $# -eq 2 ] || { echo "usage: loss PCT" >&2; exit 2; }; loss "$2" ;;
  heal) need_root; heal ;;
  exec)
    need_root
    [ $# -ge 3 ] || { echo "usage: nat-cluster-testbed.sh exec sub|r1|r2|srv|sw|a1|a2|a3 CMD [ARGS...]" >&2; exit 2; }
    ns=$(ns_of "$2"); shift 2
    exec ip netns exec "$ns" "$@" ;;
  *)
    echo "usage: [TB=ncl] nat-cluster-testbed.sh up|down|status|cut A B|loss PCT|heal|exec NS CMD..." >&2
    exit 2 ;;
esac

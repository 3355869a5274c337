#!/usr/bin/env bash
# The NAT44 testbed: two kernel subscribers on one inside LAN (a Linux bridge in a
# "switch" namespace), the appliance's namespace, and a kernel server outside.
#
#   [$TB-s1] eth0 100.64.0.10/24 ─┐
#   [$TB-s2] eth0 100.64.0.11/24 ─┤ [$TB-sw: br0] ── apl-in [$TB-rtr] apl-out ══veth══ eth0 [$TB-srv]
#                                                  (appliance: 100.64.0.1 inside,      198.51.100.2/24
#                                                   198.51.100.1 outside,              198.51.100.3/24
#                                                   pool 198.51.100.64/30, on-link:
#                                                   the appliance answers ARP for it)
#   MACs: s1 02:00:00:00:06:0a, s2 02:00:00:00:06:0b, apl-in 02:00:00:00:06:01,
#         apl-out 02:00:00:00:07:01, srv 02:00:00:00:07:02
#
# Subscribers route everything through 100.64.0.1; the server has only its connected
# subnet (the pool is on it), so it can reach a subscriber only through a NAT mapping.
# Every interface keeps the kernel's default settings (checksum offload, TSO/GSO on).
# QUEUES=N (default 1): with N > 1 the appliance reads its veths through af_packet with N
# queue pairs (af_xdp allows one queue on a veth), so apl-in and apl-out get an XDP pass
# program and GRO off (lib.sh `xdp_pass`): their peers then segment before the veths.
#
# Usage: [TB=nat] [QUEUES=1] nat-testbed.sh up|down|status
#        [TB=nat] nat-testbed.sh exec s1|s2|sw|rtr|srv CMD [ARGS...]
# Nothing is done in the root namespace; `down` deletes the namespaces (idempotent) and
# ends the processes still running inside them (they were started in this testbed).
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TB=${TB:-nat}
QUEUES=${QUEUES:-1}
S1=$TB-s1 S2=$TB-s2 SW=$TB-sw RTR=$TB-rtr SRV=$TB-srv
ALL=("$S1" "$S2" "$SW" "$RTR" "$SRV")

need_root() { [ "$(id -u)" -eq 0 ] || { echo "nat-testbed.sh: must run as root" >&2; exit 1; }; }

ns_of() {
  case "$1" in
    s1|s2|sw|rtr|srv) echo "$TB-$1" ;;
    *) echo "$1" ;;
  esac
}

down() {
  local ns
  for ns in "${ALL[@]}"; do ns_delete "$ns" nat-testbed; done
}

up() {
  down
  trap 'echo "nat-testbed: up failed, removing $TB" >&2; down' ERR
  local ns
  for ns in "${ALL[@]}"; do
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    # IPv4 only: no IPv6 chatter (RS, DAD, MLD) on the links.
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  done
  ip netns exec "$RTR" sysctl -qw net.ipv4.ip_forward=0

  ip -n "$SW" link add br0 type bridge stp_state 0 forward_delay 0
  ip -n "$SW" link set br0 up

  ip -n "$S1" link add eth0 type veth peer name p-s1 netns "$SW"
  ip -n "$S2" link add eth0 type veth peer name p-s2 netns "$SW"
  ip -n "$RTR" link add apl-in type veth peer name p-in netns "$SW"
  ip -n "$RTR" link add apl-out type veth peer name eth0 netns "$SRV"

  ip -n "$S1" link set eth0 address 02:00:00:00:06:0a
  ip -n "$S2" link set eth0 address 02:00:00:00:06:0b
  ip -n "$RTR" link set apl-in address 02:00:00:00:06:01
  ip -n "$RTR" link set apl-out address 02:00:00:00:07:01
  ip -n "$SRV" link set eth0 address 02:00:00:00:07:02

  if [ "$QUEUES" -gt 1 ]; then
    xdp_pass "$RTR" apl-in
    xdp_pass "$RTR" apl-out
  fi
  for p in p-s1 p-s2 p-in; do
    ip -n "$SW" link set "$p" master br0
    ip -n "$SW" link set "$p" up
  done
  for ns in "$S1" "$S2" "$SRV"; do ip -n "$ns" link set eth0 up; done
  ip -n "$RTR" link set apl-in up
  ip -n "$RTR" link set apl-out up

  ip -n "$S1" addr add 100.64.0.10/24 dev eth0
  ip -n "$S2" addr add 100.64.0.11/24 dev eth0
  ip -n "$S1" route add default via 100.64.0.1 dev eth0
  ip -n "$S2" route add default via 100.64.0.1 dev eth0
  ip -n "$SRV" addr add 198.51.100.2/24 dev eth0
  ip -n "$SRV" addr add 198.51.100.3/24 dev eth0

  trap - ERR
  echo "nat testbed $TB up: $S1 (100.64.0.10) $S2 (100.64.0.11) | $SW (br0) | $RTR (apl-in, apl-out) | $SRV (198.51.100.2, .3)"
}

status() { ns_status "${ALL[@]}"; }

cmd=${1:-}
case "$cmd" in
  up) need_root; up ;;
  down) need_root; down; echo "nat testbed $TB down" ;;
  status) need_root; status ;;
  exec)
    need_root
    [ $# -ge 3 ] || { echo "usage: nat-testbed.sh exec s1|s2|sw|rtr|srv CMD [ARGS...]" >&2; exit 2; }
    ns=$(ns_of "$2"); shift 2
    exec ip netns exec "$ns" "$@" ;;
  *)
    echo "usage: [TB=nat] nat-testbed.sh up|down|status|exec NS CMD..." >&2
    exit 2 ;;
esac

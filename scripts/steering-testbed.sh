#!/usr/bin/env bash
# The storage-steering testbed: a kernel client and three appliance namespaces on one
# Linux bridge (in a "switch" namespace of its own).
#
#                        [$TB-sw: bridge br0]
#          p-cl      p-a1           p-a2           p-a3
#           ||        ||             ||             ||
#   [$TB-cl] eth0  [$TB-a1] apl0  [$TB-a2] apl0  [$TB-a3] apl0
#   2001:db8:5::100/64  (appliance 1:     (appliance 2:     (appliance 3:
#                        2001:db8:5::1,    2001:db8:5::2,    2001:db8:5::3,
#                        SID 2001:db8:5a::1) SID 2001:db8:5a::2) SID 2001:db8:5a::3)
#   MACs: cl 02:00:00:00:05:64, appliance k 02:00:00:00:05:0k
#
# The appliances (run inside $TB-a1..3 on their af_xdp port apl0) own 2001:db8:5::k and
# the storage SIDs 2001:db8:5a::k; the kernels of those namespaces have IPv6 disabled, so
# they stay silent. The client routes each SID to its appliance. Every interface keeps the
# kernel's default settings (checksum offload, TSO/GSO on).
#
# Usage: [TB=stg] steering-testbed.sh up|down|status
#        [TB=stg] steering-testbed.sh exec cl|sw|a1|a2|a3 CMD [ARGS...]
# Nothing is done in the root namespace; `down` deletes the namespaces (idempotent) and
# ends the processes still running inside them (they were started in this testbed).
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TB=${TB:-stg}
CL=$TB-cl SW=$TB-sw
APLS=("$TB-a1" "$TB-a2" "$TB-a3")
ALL=("$CL" "$SW" "${APLS[@]}")

need_root() { [ "$(id -u)" -eq 0 ] || { echo "steering-testbed.sh: must run as root" >&2; exit 1; }; }

ns_of() {
  case "$1" in
    cl|sw|a1|a2|a3) echo "$TB-$1" ;;
    *) echo "$1" ;;
  esac
}



down() {
  local ns
  for ns in "${ALL[@]}"; do ns_delete "$ns" steering-testbed; done
}

up() {
  down
  trap 'echo "steering-testbed: up failed, removing $TB" >&2; down' ERR
  local ns k
  for ns in "${ALL[@]}"; do
    ip netns add "$ns"
    ip -n "$ns" link set lo up
  done

  # The switch: a plain bridge, no STP, no multicast snooping (ND must reach every port),
  # no IPv6 in its kernel.
  ip netns exec "$SW" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  ip -n "$SW" link add br0 type bridge stp_state 0 forward_delay 0 mcast_snooping 0
  ip -n "$SW" link set br0 up

  # Appliance namespaces: no IPv6 in the kernel (the appliance owns the port).
  for ns in "${APLS[@]}"; do
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=0
  done
  ip netns exec "$CL" sysctl -qw net.ipv6.conf.all.accept_ra=0 net.ipv6.conf.default.accept_ra=0 \
    net.ipv6.conf.default.router_solicitations=0 net.ipv6.conf.all.router_solicitations=0

  ip -n "$CL" link add eth0 type veth peer name p-cl netns "$SW"
  ip -n "$CL" link set eth0 address 02:00:00:00:05:64
  for k in 1 2 3; do
    ns=$TB-a$k
    ip -n "$ns" link add apl0 type veth peer name "p-a$k" netns "$SW"
    ip -n "$ns" link set apl0 address "02:00:00:00:05:0$k"
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.apl0.disable_ipv6=1
  done

  for p in p-cl p-a1 p-a2 p-a3; do
    ip -n "$SW" link set "$p" master br0
    ip -n "$SW" link set "$p" up
  done
  ip -n "$CL" link set eth0 up
  for k in 1 2 3; do
    ip -n "$TB-a$k" link set apl0 up
  done

  ip -n "$CL" -6 addr add 2001:db8:5::100/64 dev eth0 nodad
  for k in 1 2 3; do
    ip -n "$CL" -6 route add "2001:db8:5a::$k/128" via "2001:db8:5::$k" dev eth0
  done

  trap - ERR
  echo "steering testbed $TB up: $CL (2001:db8:5::100) | $SW (br0) | ${APLS[*]} (apl0)"
}

status() { ns_status "${ALL[@]}"; }

cmd=${1:-}
case "$cmd" in
  up) need_root; up ;;
  down) need_root; down; echo "steering testbed $TB down" ;;
  status) need_root; status ;;
  exec)
    need_root
    [ $# -ge 3 ] || { echo "usage: steering-testbed.sh exec cl|sw|a1|a2|a3 CMD [ARGS...]" >&2; exit 2; }
    ns=$(ns_of "$2"); shift 2
    exec ip netns exec "$ns" "$@" ;;
  *)
    echo "usage: [TB=stg] steering-testbed.sh up|down|status|exec NS CMD..." >&2
    exit 2 ;;
esac

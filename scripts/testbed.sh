#!/usr/bin/env bash
# The 3-namespace testbed: two kernel hosts with the appliance's namespace between them.
#
#   [$TB-h1] eth0 ==veth== apl-in [$TB-rtr] apl-out ==veth== eth0 [$TB-h2]
#   192.0.2.2/24                   (appliance:                198.51.100.2/24
#   2001:db8:1::2/64                no kernel addresses)      2001:db8:2::2/64
#   02:00:00:00:01:02    02:00:00:00:01:01  02:00:00:00:02:01    02:00:00:00:02:02
#
# The appliance (run inside $TB-rtr) owns 192.0.2.1, 2001:db8:1::1 (inside) and
# 198.51.100.1, 2001:db8:2::1 (outside); the hosts route everything through it.
# The router namespace's kernel has no addresses and IPv6 disabled, so it stays silent.
#
# Every interface keeps the kernel's default settings: checksum offload and TSO/GSO on,
# as container runtimes leave them (docs/architecture.md, "Kernel hosts at their default
# settings"). HOST_OFFLOADS=off turns them off on all four ends (the reference run).
# QUEUES=N (default 1): with N > 1 the appliance reads its veths through af_packet with N
# queue pairs (af_xdp allows one queue on a veth), so apl-in and apl-out get an XDP pass
# program and GRO off (lib.sh `xdp_pass`): the hosts then segment before the veths.
#
# Usage: [TB=apl] [QUEUES=1] [HOST_OFFLOADS=on] testbed.sh up|down|status|kernel-router
#        [TB=apl] testbed.sh exec h1|rtr|h2 CMD [ARGS...]
# Nothing is done in the root namespace; `down` deletes the namespaces (idempotent) and
# ends the processes still running inside them (they were started in this testbed).
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TB=${TB:-apl}
QUEUES=${QUEUES:-1}
HOST_OFFLOADS=${HOST_OFFLOADS:-on}
H1=$TB-h1 RTR=$TB-rtr H2=$TB-h2

need_root() { [ "$(id -u)" -eq 0 ] || { echo "testbed.sh: must run as root" >&2; exit 1; }; }

ns_of() {
  case "$1" in
    h1) echo "$H1" ;;
    rtr) echo "$RTR" ;;
    h2) echo "$H2" ;;
    *) echo "$1" ;;
  esac
}



down() {
  local ns
  for ns in "$H1" "$RTR" "$H2"; do ns_delete "$ns" testbed; done
}

up() {
  down
  # A failure half-way leaves nothing behind.
  trap 'echo "testbed: up failed, removing $TB" >&2; down' ERR
  local ns
  for ns in "$H1" "$RTR" "$H2"; do
    ip netns add "$ns"
    ip -n "$ns" link set lo up
  done

  # Router namespace: no IPv6 in the kernel (no link-local addresses, RS, DAD, MLD),
  # set before the veths exist so they inherit it from "default".
  ip netns exec "$RTR" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  ip netns exec "$RTR" sysctl -qw net.ipv4.ip_forward=0

  # Hosts: quiet, deterministic IPv6 (no router solicitation/autoconf surprises).
  for ns in "$H1" "$H2"; do
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_ra=0 net.ipv6.conf.default.accept_ra=0 \
      net.ipv6.conf.default.router_solicitations=0 net.ipv6.conf.all.router_solicitations=0
  done

  # veth pairs, created directly in their namespaces.
  ip -n "$H1" link add eth0 type veth peer name apl-in netns "$RTR"
  ip -n "$RTR" link add apl-out type veth peer name eth0 netns "$H2"

  ip -n "$H1" link set eth0 address 02:00:00:00:01:02
  ip -n "$RTR" link set apl-in address 02:00:00:00:01:01
  ip -n "$RTR" link set apl-out address 02:00:00:00:02:01
  ip -n "$H2" link set eth0 address 02:00:00:00:02:02

  ip netns exec "$RTR" sysctl -qw net.ipv6.conf.apl-in.disable_ipv6=1 net.ipv6.conf.apl-out.disable_ipv6=1

  if [ "$QUEUES" -gt 1 ]; then
    xdp_pass "$RTR" apl-in
    xdp_pass "$RTR" apl-out
  fi
  if [ "$HOST_OFFLOADS" = off ]; then
    offloads_off "$H1" eth0
    offloads_off "$RTR" apl-in
    offloads_off "$RTR" apl-out
    offloads_off "$H2" eth0
  fi

  ip -n "$H1" link set eth0 up
  ip -n "$RTR" link set apl-in up
  ip -n "$RTR" link set apl-out up
  ip -n "$H2" link set eth0 up

  ip -n "$H1" addr add 192.0.2.2/24 dev eth0
  ip -n "$H1" -6 addr add 2001:db8:1::2/64 dev eth0 nodad
  ip -n "$H1" route add default via 192.0.2.1 dev eth0
  ip -n "$H1" -6 route add default via 2001:db8:1::1 dev eth0

  ip -n "$H2" addr add 198.51.100.2/24 dev eth0
  ip -n "$H2" -6 addr add 2001:db8:2::2/64 dev eth0 nodad
  ip -n "$H2" route add default via 198.51.100.1 dev eth0
  ip -n "$H2" -6 route add default via 2001:db8:2::1 dev eth0

  trap - ERR
  echo "testbed $TB up: $H1 (192.0.2.2, 2001:db8:1::2) | $RTR (apl-in, apl-out) | $H2 (198.51.100.2, 2001:db8:2::2)"
}

# Reference mode: the router namespace's own kernel takes the appliance's addresses and
# forwards (a baseline for benchmarks, and a way to check the testbed without the appliance).
# Never together with a running appliance.
kernel_router() {
  ns_exists "$RTR" || { echo "testbed $TB is not up" >&2; exit 1; }
  ip netns exec "$RTR" sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0 \
    net.ipv6.conf.apl-in.disable_ipv6=0 net.ipv6.conf.apl-out.disable_ipv6=0 \
    net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
  ip -n "$RTR" addr add 192.0.2.1/24 dev apl-in
  ip -n "$RTR" -6 addr add 2001:db8:1::1/64 dev apl-in nodad
  ip -n "$RTR" addr add 198.51.100.1/24 dev apl-out
  ip -n "$RTR" -6 addr add 2001:db8:2::1/64 dev apl-out nodad
  echo "testbed $TB: kernel of $RTR is now the router"
}

status() { ns_status "$H1" "$RTR" "$H2"; }

cmd=${1:-}
case "$cmd" in
  up) need_root; up ;;
  down) need_root; down; echo "testbed $TB down" ;;
  status) need_root; status ;;
  kernel-router) need_root; kernel_router ;;
  exec)
    need_root
    [ $# -ge 3 ] || { echo "usage: testbed.sh exec h1|rtr|h2 CMD [ARGS...]" >&2; exit 2; }
    ns=$(ns_of "$2"); shift 2
    exec ip netns exec "$ns" "$@" ;;
  *)
    echo "usage: [TB=apl] testbed.sh up|down|status|kernel-router|exec NS CMD..." >&2
    exit 2 ;;
esac

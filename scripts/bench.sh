#!/usr/bin/env bash
# Every benchmark of the appliance and every peer, in one run, one after the other on this
# machine (nothing else should run meanwhile), then one table and one chart:
#
#   fwd      scripts/bench-fwd.sh: testpmd io and the appliance on the memif harness, modes
#            l3 end steer nat1k nat64k nat1m (NAT set-up: new mappings/s, table bytes)
#   vhost    the same harness over vhost-user / virtio-user (LINK=vhost), modes l3 end nat64k
#   block    objstore/bench.sh: fio io_uring vs the block path, 4 KiB random reads at QD 32,
#            and the store's own PUT/GET
#   storage  scripts/bench-storage.sh: 4 KiB object PUT/GET through the appliance from a kernel
#            host (objcli bench) vs the store on the same device file, QD 1 and 32
#   kernel   ../shared/peers/kernel-nat.sh and kernel-srv6.sh: nftables SNAT and seg6local End
#   ovs      ../shared/peers/ovs-dpdk-nat.sh: OVS-DPDK ct(nat), fed like the appliance
#   ceph     ../shared/peers/ceph-rados.sh: Ceph RADOS 4 KiB put/get with rados bench
#
# The raw output of each part goes to $OUT (default /tmp/apl-bench-all/<time>/<part>.log);
# scripts/bench_report.py turns them into the table (printed, and written into
# docs/benchmarks.md between the "bench.sh" markers when WRITE_DOCS=1) and a PNG chart
# (docs/bench.png: ratios per mode, NAT cost against sessions) drawn with gnuplot.
#
# Usage: sudo [PARTS="fwd vhost block storage kernel ovs ceph"] [REPS=3] [DUR=5] [WRITE_DOCS=1]
#             [PEERS_DIR=../shared/peers] bash scripts/bench.sh
# About 50 minutes with every part on a 2-vCPU machine (ceph ~10, ovs ~8, kernel ~8, fwd ~12).
# A part that fails is reported and the others still run; the exit status is then 1.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
require_root
use_cargo

PARTS=${PARTS:-"fwd vhost block storage kernel ovs ceph"}
REPS=${REPS:-3}; DUR=${DUR:-5}
PEERS_DIR=${PEERS_DIR:-../shared/peers}
OUT=${OUT:-/tmp/apl-bench-all/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
status=0

if ! command -v gnuplot >/dev/null 2>&1; then
  log "installing gnuplot-nox (the chart)"
  apt-get install -y -qq --no-install-recommends gnuplot-nox >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends gnuplot-nox >/dev/null; } \
    || warn "gnuplot-nox could not be installed: no chart"
fi

part() { # name command...
  local name=$1; shift
  log "bench.sh: $name ($*) -> $OUT/$name.log"
  local t0=$SECONDS
  if "$@" > "$OUT/$name.log" 2>&1; then
    info "$name: done in $((SECONDS - t0)) s"
  else
    warn "$name: FAILED (exit $?) after $((SECONDS - t0)) s; see $OUT/$name.log"
    echo "BENCH-PART-FAILED" >> "$OUT/$name.log"
    status=1
  fi
}

# OVS-DPDK for the ovs part, installed without starting Debian's own services (the peer
# script starts its daemons by hand, in its namespaces): a policy-rc.d refuses them meanwhile.
ensure_ovs() {
  command -v ovs-vswitchd >/dev/null 2>&1 && return 0
  log "installing openvswitch-switch-dpdk (the ovs peer)"
  local guard=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; guard=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openvswitch-switch-dpdk >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
         openvswitch-switch-dpdk >/dev/null; }
  local rc=$?
  [ -n "$guard" ] && rm -f /usr/sbin/policy-rc.d
  return $rc
}

peer() { # name script
  if [ -x "$PEERS_DIR/$2" ] || [ -f "$PEERS_DIR/$2" ]; then
    part "$1" env DUR=$((DUR * 2)) REPS="$REPS" bash "$PEERS_DIR/$2"
  else
    warn "$1: $PEERS_DIR/$2 is missing (set PEERS_DIR); skipped"
  fi
}

{
  echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo +dirty)"
  echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "cpus=$(nproc)"
  echo "cpu_mhz=$(grep -m1 'cpu MHz' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "dpdk=$(dpkg-query -W -f='${Version}' dpdk 2>/dev/null)"
  echo "reps=$REPS dur=$DUR parts=$PARTS"
} > "$OUT/machine.txt"

for p in $PARTS; do
  case $p in
    fwd) part fwd env REPS="$REPS" DUR="$DUR" bash scripts/bench-fwd.sh ;;
    vhost) part vhost env LINK=vhost MODES="l3 end nat64k" REPS="$REPS" DUR="$DUR" bash scripts/bench-fwd.sh ;;
    block) part block env RUNTIME=$((DUR * 2)) bash objstore/bench.sh ;;
    storage) part storage env SECONDS_EACH="$DUR" bash scripts/bench-storage.sh ;;
    kernel) peer kernel-nat kernel-nat.sh; peer kernel-srv6 kernel-srv6.sh ;;
    ovs) ensure_ovs || warn "openvswitch-switch-dpdk could not be installed"; peer ovs ovs-dpdk-nat.sh ;;
    ceph) peer ceph ceph-rados.sh ;;
    *) warn "unknown part $p"; status=1 ;;
  esac
done

log "bench.sh: report"
args=("$OUT" --png docs/bench.png)
[ "${WRITE_DOCS:-0}" = 1 ] && args+=(--docs docs/benchmarks.md)
python3 scripts/bench_report.py "${args[@]}" | tee "$OUT/report.md" || status=1
echo "(raw output: $OUT)"
exit "$status"

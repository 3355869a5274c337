#!/usr/bin/env bash
# The demo: set up the machine, build the appliance, run it between two kernel hosts and show
# real traffic going through it (ping, iperf3, a checksummed TCP transfer) and its metrics;
# then run it as a carrier-grade NAT between two subscribers and a server.
#
#   [apl-h1] 192.0.2.2 ──veth── apl-in [apl-rtr: appliance] apl-out ──veth── 198.51.100.2 [apl-h2]
#   [apl-nat-s1] 100.64.0.10 ─┐
#   [apl-nat-s2] 100.64.0.11 ─┴ bridge ── [apl-nat-rtr: appliance, NAT] ── 198.51.100.2 [apl-nat-srv]
#
# Run as root: sudo bash scripts/demo.sh
# Environment: TB (namespace prefix, default apl), APPLIANCE_BIN (use this binary, skip the build),
#              METRICS_ADDR (default 127.0.0.1:9100, the embedded demo config's metrics.listen).
# Exits non-zero if any step fails. Always removes its namespaces and stops the processes it started.
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_root
cd "$REPO_ROOT"

export TB=${TB:-apl}
METRICS_ADDR=${METRICS_ADDR:-127.0.0.1:9100}
H1=$TB-h1 RTR=$TB-rtr H2=$TB-h2
NAT_TB=$TB-nat
WORK=$(mktemp -d /tmp/appliance-demo.XXXXXX)
APP_PID=""
BG_PIDS=()
STEP=""

# Not for background jobs: `in_ns ... &` would make $! a subshell, not the process.
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
show_ns() { local ns=$1; shift; printf '$ ip netns exec %s %s\n' "$ns" "$*"; ip netns exec "$ns" "$@"; }

stop_pid() { # pid [seconds]: SIGTERM, then SIGKILL after the grace period
  local pid=$1 grace=${2:-5} i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq $((grace * 10))); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  set +e
  for p in "${BG_PIDS[@]}"; do stop_pid "$p" 2; done
  if [ -n "$APP_PID" ] && kill -0 "$APP_PID" 2>/dev/null; then
    stop_pid "$APP_PID" 15
    if [ "$rc" -ne 0 ]; then
      echo "---- appliance output (last 60 lines) ----"
      tail -n 60 "$WORK/appliance.out" "$WORK/appliance.err" 2>/dev/null
    fi
  fi
  bash "$REPO_ROOT/scripts/testbed.sh" down >/dev/null 2>&1
  TB=$NAT_TB bash "$REPO_ROOT/scripts/nat-testbed.sh" down >/dev/null 2>&1
  rm -rf "$WORK"
  if [ "$rc" -ne 0 ]; then
    echo
    echo "DEMO FAILED${STEP:+ at: $STEP} (exit $rc)" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { STEP=$*; echo; log "$*"; }

wait_listen() { # ns port: wait until a TCP socket listens on port in ns (10 s)
  local i
  for i in $(seq 100); do
    in_ns "$1" ss -Hltn "sport = :$2" | grep -q . && return 0
    sleep 0.1
  done
  die "nothing listens on port $2 in $1"
}

tcp_transfer() { # dst-addr port: 4 MiB of random data h1 -> h2 with nc, sha256 compared
  local dst=$1 port=$2 fam=-4 srv sent recv
  case "$dst" in *:*) fam=-6 ;; esac
  rm -f "$WORK/recv.bin"
  ip netns exec "$H2" timeout 60 nc "$fam" -l "$port" > "$WORK/recv.bin" &
  srv=$!; BG_PIDS+=("$srv")
  wait_listen "$H2" "$port"
  show_ns "$H1" timeout 60 nc -N -w 10 "$dst" "$port" < "$WORK/send.bin"
  wait "$srv" || die "nc server in $H2 failed"
  sent=$(sha256sum < "$WORK/send.bin" | cut -d' ' -f1)
  recv=$(sha256sum < "$WORK/recv.bin" | cut -d' ' -f1)
  info "sent     $(stat -c %s "$WORK/send.bin") bytes sha256 $sent (from $H1)"
  info "received $(stat -c %s "$WORK/recv.bin") bytes sha256 $recv (in $H2)"
  [ "$sent" = "$recv" ] || die "TCP transfer to $dst corrupted or truncated"
  info "sha256 match"
}

metrics() { in_ns "$RTR" curl -sf --max-time 2 "http://$METRICS_ADDR/metrics"; }

# ---------------------------------------------------------------------------
step "setup (packages, hugepages)"
bash "$REPO_ROOT/scripts/setup.sh"
use_cargo || die "cargo not found"

if [ -n "${APPLIANCE_BIN:-}" ]; then
  BIN=$APPLIANCE_BIN
  step "using APPLIANCE_BIN=$BIN (no build)"
else
  step "build: cargo build --release -p appliance"
  cargo build --release -p appliance
  BIN=$REPO_ROOT/target/release/appliance
fi
[ -x "$BIN" ] || die "no appliance binary at $BIN"

step "testbed $TB: $H1 -- $RTR -- $H2"
bash "$REPO_ROOT/scripts/testbed.sh" down >/dev/null   # leftovers of an earlier run
bash "$REPO_ROOT/scripts/testbed.sh" up

step "start the appliance in $RTR (embedded demo config)"
ip netns exec "$RTR" "$BIN" run > "$WORK/appliance.out" 2> "$WORK/appliance.err" &
APP_PID=$!
info "pid $APP_PID: ip netns exec $RTR $BIN run"
for i in $(seq 300); do
  kill -0 "$APP_PID" 2>/dev/null || { wait "$APP_PID" || true; cat "$WORK/appliance.out" "$WORK/appliance.err"; die "the appliance exited during start-up"; }
  metrics >/dev/null 2>&1 && break
  [ "$i" -eq 300 ] && die "no metrics at http://$METRICS_ADDR/metrics after 30 s"
  sleep 0.1
done
info "metrics endpoint answers at http://$METRICS_ADDR/metrics (inside $RTR)"

step "the hosts keep their default settings (checksum offload on); the XDP program of the af_xdp port on apl-in took TSO from h1"
printf '$ ip netns exec %s ethtool -k eth0\n' "$H1"
in_ns "$H1" ethtool -k eth0 | grep -E '^(tx-checksumming|tcp-segmentation-offload|generic-segmentation-offload):'

step "ping h1 -> h2 through the appliance (IPv4, IPv6)"
show_ns "$H1" ping -c 3 -i 0.2 -W 2 198.51.100.2
show_ns "$H1" ping -c 3 -i 0.2 -W 2 2001:db8:2::2

step "ping the appliance's own addresses (answered by the appliance)"
show_ns "$H1" ping -c 3 -i 0.2 -W 2 192.0.2.1
show_ns "$H1" ping -c 3 -i 0.2 -W 2 2001:db8:1::1
show_ns "$H2" ping -c 3 -i 0.2 -W 2 198.51.100.1
show_ns "$H2" ping -c 3 -i 0.2 -W 2 2001:db8:2::1

step "iperf3: TCP h1 -> h2 for 3 s"
ip netns exec "$H2" timeout 60 iperf3 -s -1 -B 198.51.100.2 > "$WORK/iperf3-server.log" 2>&1 &
srv=$!; BG_PIDS+=("$srv")
wait_listen "$H2" 5201
show_ns "$H1" timeout 60 iperf3 -c 198.51.100.2 -t 3
wait "$srv" || { cat "$WORK/iperf3-server.log"; die "iperf3 server failed"; }

step "TCP file transfer with nc: 4 MiB of random data, sha256 on both sides"
head -c $((4 * 1024 * 1024)) /dev/urandom > "$WORK/send.bin"
tcp_transfer 198.51.100.2 5001
tcp_transfer 2001:db8:2::2 5002

step "metrics (GET http://$METRICS_ADDR/metrics inside $RTR)"
metrics > "$WORK/metrics.txt" || die "metrics endpoint stopped answering"
grep -E '^appliance_port_' "$WORK/metrics.txt" || die "no appliance_port_* metrics"
grep -E '^appliance_(drops|punts|icmp_errors_sent|arp_replies_sent|nd_adverts_sent|neighbors|checksums_completed)' "$WORK/metrics.txt" \
  | awk '$NF != 0' || true

step "stop the appliance (SIGTERM to pid $APP_PID)"
kill -TERM "$APP_PID"
for i in $(seq 150); do kill -0 "$APP_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$APP_PID" 2>/dev/null && die "the appliance did not stop within 15 s of SIGTERM"
rc=0; wait "$APP_PID" || rc=$?
APP_PID=""
echo "---- appliance stdout ----"
if grep -q 'final counters' "$WORK/appliance.out"; then
  sed -n '/final counters/,$p' "$WORK/appliance.out"
elif grep -q 'final counters' "$WORK/appliance.err"; then
  sed -n '/final counters/,$p' "$WORK/appliance.err"
else
  tail -n 40 "$WORK/appliance.out"
fi
[ "$rc" -eq 0 ] || { tail -n 40 "$WORK/appliance.err"; die "the appliance exited with status $rc"; }
info "exit status 0"

STEP=""
echo
log "demo OK: IPv4 and IPv6 forwarding, local ICMP echo, iperf3 and a verified TCP transfer through the appliance"

# ---------------------------------------------------------------------------
# Part 2: carrier-grade NAT44 (configs/nat.yaml) between subscribers and a server.
S1=$NAT_TB-s1 S2=$NAT_TB-s2 NRTR=$NAT_TB-rtr SRV=$NAT_TB-srv
step "NAT testbed $NAT_TB: subscribers $S1, $S2 -- $NRTR -- server $SRV"
TB=$NAT_TB bash "$REPO_ROOT/scripts/nat-testbed.sh" up

step "start the appliance in $NRTR as a NAT (configs/nat.yaml: pool 198.51.100.64/30)"
ip netns exec "$NRTR" "$BIN" run --config "$REPO_ROOT/configs/nat.yaml" > "$WORK/nat.out" 2> "$WORK/nat.err" &
APP_PID=$!
natget() { in_ns "$NRTR" curl -sf --max-time 2 "http://$METRICS_ADDR/$1"; }
for i in $(seq 300); do
  kill -0 "$APP_PID" 2>/dev/null || { wait "$APP_PID" || true; cat "$WORK/nat.out" "$WORK/nat.err"; die "the NAT appliance exited during start-up"; }
  natget metrics >/dev/null 2>&1 && break
  [ "$i" -eq 300 ] && die "no metrics from the NAT appliance after 30 s"
  sleep 0.1
done

step "subscribers ping the server through the NAT"
show_ns "$S1" ping -c 3 -i 0.2 -W 2 198.51.100.2
show_ns "$S2" ping -c 3 -i 0.2 -W 2 198.51.100.2

step "what the server sees: a UDP echo server on $SRV answers with the sender's address"
ip netns exec "$SRV" timeout 60 python3 "$REPO_ROOT/tests/helpers/nat_probe.py" udp-echo 9000 > /dev/null 2>&1 &
BG_PIDS+=("$!")
sleep 0.5
for ns in "$S1" "$S2"; do
  out=$(ip netns exec "$ns" python3 "$REPO_ROOT/tests/helpers/nat_probe.py" udp-probe 40000 198.51.100.2 9000)
  info "$ns (inside address $(ip -n "$ns" -4 -br addr show eth0 | awk '{print $3}')) -> server: server saw ${out#reply }"
  case "$out" in "reply 198.51.100.6"[4-7]:*) ;; *) die "the server did not see a pool address: $out" ;; esac
done

step "TCP through the NAT: 4 MiB with nc, sha256 on both sides"
rm -f "$WORK/recv.bin"
ip netns exec "$SRV" timeout 60 nc -4 -l 5001 > "$WORK/recv.bin" &
srv=$!; BG_PIDS+=("$srv")
wait_listen "$SRV" 5001
show_ns "$S1" timeout 60 nc -N -w 10 198.51.100.2 5001 < "$WORK/send.bin"
wait "$srv" || die "nc server in $SRV failed"
[ "$(sha256sum < "$WORK/send.bin")" = "$(sha256sum < "$WORK/recv.bin")" ] || die "TCP through the NAT corrupted"
info "sha256 match ($(stat -c %s "$WORK/recv.bin") bytes)"

step "the NAT's sessions (GET /nat/sessions) and figures"
natget nat/sessions
natget metrics | grep -E '^appliance_nat_(sessions|mappings|subscribers|blocks_allocated|mappings_created_total|cache_hits_total)'

step "stop the NAT appliance; its port-block log (RFC 6888)"
stop_pid "$APP_PID" 15
rc=0; wait "$APP_PID" || rc=$?
APP_PID=""
grep -h 'nat_block event=' "$WORK/nat.out" "$WORK/nat.err" | sed 's/\x1b\[[0-9;]*m//g' | head -n 6 || die "no block log lines"
[ "$rc" -eq 0 ] || { tail -n 40 "$WORK/nat.err"; die "the NAT appliance exited with status $rc"; }
for p in "${BG_PIDS[@]}"; do stop_pid "$p" 2; done
BG_PIDS=()
TB=$NAT_TB bash "$REPO_ROOT/scripts/nat-testbed.sh" down >/dev/null

STEP=""
echo
log "demo OK: NAT44 for two subscribers: ping, UDP and a verified TCP transfer through the pool, sessions listed, blocks logged"

#!/usr/bin/env python3
"""Traffic for the NAT cluster tests and benchmark (run inside the testbed's namespaces).

Every datagram names the inside endpoint that sent it, so both ends can check what the NAT
did: the server sees which public endpoint stood for which inside endpoint; a subscriber
sees whether a reply belongs to it.

  udp-server OUT PORT...
        Echo on every PORT: reply = the datagram + the sender's address and port as seen here
        (the public endpoint). Keeps, per public endpoint, the inside endpoints it stood for.
        Bulk datagrams (from `pcap` frames) are recorded, not answered: per inside endpoint
        the public endpoints it used, each with the wall time it was first and last seen.
        On SIGTERM writes OUT (JSON: datagrams, endpoints, conflicts = public endpoints that
        stood for more than one inside endpoint, bulk datagrams and per-flow records) and
        exits. Prints "ready".
  udp-flows OUT DST PORT SUBS N INTERVAL_MS DURATION_S [FAST FAST_INTERVAL_MS]
        N flows, flow i from subscriber address SUBS[i % len] (comma-separated), source port
        20000 + i // len, each sending one datagram every INTERVAL_MS (the first FAST flows
        every FAST_INTERVAL_MS; a sender that falls behind skips the slots it missed rather
        than bursting) for DURATION_S (or until SIGTERM/SIGINT), then waiting 1.5 s for late
        replies. Writes
        OUT (JSON, per flow: inside endpoint, sent, received, foreign replies, the public
        endpoints seen with the wall time each was first seen, the silent gaps longer than
        3 intervals as [from, to] wall times, the wall time of the last send, the send times
        of the datagrams never answered (first 100); duplicates are not counted) and prints a
        summary line "flows N replied R kept K changed C sent S received V foreign F".
        Prints "started" when the first datagrams are out.
  pcap OUT FLOWS SUBS SPORT0 DST DPORT DSTMAC SRCMAC
        A pcap of FLOWS frames, one per flow, for a DPDK generator (apl-gen): flow i from
        SUBS[i % len] (comma-separated) port SPORT0 + i // len to DST:DPORT, UDP, payload
        marked bulk (the server counts and records it, and does not answer).
  tcp-send SRC DST PORT BYTES RATE
        From SRC, connect to a tcp-echo of nat_probe.py at DST:PORT, read the peer line, send
        BYTES random bytes at RATE bytes/s, print "peer ADDR:PORT", "sent HEX" and the
        server's "sha256 HEX".
Every output line is flushed at once.
"""
import hashlib
import json
import os
import resource
import selectors
import signal
import socket
import struct
import sys
import time

MAGIC = b"NHA1"
BULK = b"NHB1"
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


def big_rcvbuf(s, size):
    """A receive buffer that holds a burst (root may exceed rmem_max)."""
    try:
        s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except OSError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def out(*parts):
    print(*parts, flush=True)


def ep(addr, port):
    return "%s:%d" % (addr, port)


def udp_server(path, ports):
    socks = []
    for p in ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        big_rcvbuf(s, 16 << 20)
        s.bind(("0.0.0.0", int(p)))
        s.setblocking(False)
        socks.append(s)
    behind = {}
    count = [0, 0]
    bulk = {}

    def dump(*_):
        conflicts = {k: sorted(v) for k, v in behind.items() if len(v) > 1}
        with open(path, "w") as f:
            json.dump({"datagrams": count[0], "bulk_datagrams": count[1], "endpoints": len(behind),
                       "conflicts": conflicts, "bulk": bulk}, f)
        sys.exit(0)

    signal.signal(signal.SIGTERM, dump)
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    out("ready")
    while True:
        for key, _ in sel.select():
            s = key.fileobj
            while True:
                try:
                    data, peer = s.recvfrom(2048)
                except BlockingIOError:
                    break
                if len(data) < 18 or data[:4] not in (MAGIC, BULK):
                    continue
                inside = ep(socket.inet_ntoa(data[12:16]), struct.unpack("!H", data[16:18])[0])
                public = ep(*peer)
                behind.setdefault(public, set()).add(inside)
                if data[:4] == BULK:
                    count[1] += 1
                    t = time.time()
                    seen = bulk.setdefault(inside, [])
                    if seen and seen[-1][0] == public:
                        seen[-1][2] = t
                    else:
                        seen.append([public, t, t])
                    continue
                count[0] += 1
                reply = data[:18] + socket.inet_aton(peer[0]) + struct.pack("!H", peer[1])
                try:
                    s.sendto(reply, peer)
                except OSError:
                    pass


def udp_flows(path, dst, port, subs, n, interval_ms, duration_s, fast=0, fast_interval_ms=10):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, n + 256)), hard))
    subs = subs.split(",")
    sel = selectors.DefaultSelector()
    flows = []
    for i in range(n):
        addr, sport = subs[i % len(subs)], 20000 + i // len(subs)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        big_rcvbuf(s, 256 << 10)
        s.bind((addr, sport))
        s.setblocking(False)
        every = (fast_interval_ms if i < fast else interval_ms) / 1000.0
        f = {
            "id": i, "inside": ep(addr, sport), "sock": s, "every": every, "seq": 0, "sent": 0,
            "received": 0, "foreign": 0, "endpoints": [], "gaps": [], "last_rx": None,
            "ident": socket.inet_aton(addr) + struct.pack("!H", sport), "last_tx": None,
            "pending": {},
        }
        flows.append(f)
        sel.register(s, selectors.EVENT_READ, f)
    start = time.monotonic()
    wall0 = time.time()
    end = start + duration_s
    stop = []
    # SIGTERM or SIGINT end the run early (the report is still written).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(1))
    # Stagger the first sends over one interval.
    due = [(start + (i % 100) * f["every"] / 100.0, i) for i, f in enumerate(flows)]
    import heapq
    heapq.heapify(due)
    started = False
    drain_end = end + 1.5
    while True:
        now = time.monotonic()
        if stop and end > now:
            end, drain_end = now, now + 1.5
        if now >= drain_end:
            break
        while due and due[0][0] <= now and now < end:
            t, i = heapq.heappop(due)
            f = flows[i]
            f["seq"] += 1
            msg = MAGIC + struct.pack("!II", i, f["seq"]) + f["ident"]
            try:
                f["sock"].sendto(msg, (dst, int(port)))
                f["sent"] += 1
                f["last_tx"] = wall0 + (now - start)
                f["pending"][f["seq"]] = f["last_tx"]
            except OSError:
                pass
            # A sender that fell behind (a busy CPU) does not catch up in a burst:
            # it skips the slots it missed, spread over the next interval.
            nxt = t + f["every"]
            if nxt < now:
                nxt = now + (i % 100) * f["every"] / 100.0
            heapq.heappush(due, (nxt, i))
        if not started:
            out("started")
            started = True
        timeout = max(0.0, min(due[0][0] - now if due and now < end else 0.05, 0.05))
        for key, _ in sel.select(timeout):
            f = key.data
            while True:
                try:
                    data = f["sock"].recv(2048)
                except BlockingIOError:
                    break
                if len(data) < 24 or data[:4] != MAGIC:
                    continue
                if data[12:18] != f["ident"]:
                    f["foreign"] += 1
                    continue
                t = wall0 + (time.monotonic() - start)
                seq = struct.unpack("!I", data[8:12])[0]
                if f["pending"].pop(seq, None) is None:
                    continue
                f["received"] += 1
                public = ep(socket.inet_ntoa(data[18:22]), struct.unpack("!H", data[22:24])[0])
                if not f["endpoints"] or f["endpoints"][-1][1] != public:
                    f["endpoints"].append([t, public])
                if f["last_rx"] is not None and t - f["last_rx"] > 3 * f["every"]:
                    f["gaps"].append([f["last_rx"], t])
                f["last_rx"] = t
    report = []
    for f in flows:
        f["sock"].close()
        report.append({k: f[k] for k in ("id", "inside", "sent", "received", "foreign", "endpoints", "gaps", "last_rx", "last_tx")})
        report[-1]["lost_at"] = sorted(f["pending"].values())[:100]
        report[-1]["fast"] = f["id"] < fast
    with open(path, "w") as fh:
        json.dump(report, fh)
    replied = sum(1 for f in report if f["received"])
    changed = sum(1 for f in report if len(set(e[1] for e in f["endpoints"])) > 1)
    out("flows %d replied %d kept %d changed %d sent %d received %d foreign %d" % (
        n, replied, replied - changed, changed, sum(f["sent"] for f in report),
        sum(f["received"] for f in report), sum(f["foreign"] for f in report)))


def pcap(path, flows, subs, sport0, dst, dport, dstmac, srcmac):
    subs = subs.split(",")
    mac = lambda m: bytes(int(x, 16) for x in m.split(":"))

    def csum(b):
        if len(b) % 2:
            b += b"\0"
        s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
        while s >> 16:
            s = (s & 0xFFFF) + (s >> 16)
        return s

    d = socket.inet_aton(dst)
    eth = mac(dstmac) + mac(srcmac) + b"\x08\x00"
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i in range(int(flows)):
            src = socket.inet_aton(subs[i % len(subs)])
            sport = int(sport0) + i // len(subs)
            payload = BULK + struct.pack("!II", i, 0) + src + struct.pack("!H", sport)
            udp = struct.pack("!HHHH", sport, int(dport), 8 + len(payload), 0) + payload
            c = 0xFFFF - csum(src + d + struct.pack("!HH", 17, len(udp)) + udp)
            udp = udp[:6] + struct.pack("!H", c or 0xFFFF) + udp[8:]
            ip = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0) + src + d
            ip = ip[:10] + struct.pack("!H", 0xFFFF - csum(ip)) + ip[12:]
            fr = eth + ip + udp
            f.write(struct.pack("<IIII", 0, i, len(fr), len(fr)) + fr)


def tcp_send(src, dst, port, nbytes, rate):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((src, 0))
    s.settimeout(30)
    s.connect((dst, int(port)))
    r = s.makefile("rb")
    out("peer", r.readline().decode().strip())
    h = hashlib.sha256()
    left, rate, chunk = int(nbytes), float(rate), 16384
    t0 = time.monotonic()
    sent = 0
    while left > 0:
        b = os.urandom(min(chunk, left))
        s.sendall(b)
        h.update(b)
        left -= len(b)
        sent += len(b)
        ahead = sent / rate - (time.monotonic() - t0)
        if ahead > 0:
            time.sleep(ahead)
    out("sent", h.hexdigest())
    s.shutdown(socket.SHUT_WR)
    s.settimeout(60)
    line = r.readline().decode().strip()
    out(line if line else "no-sha256")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "udp-server":
        udp_server(args[0], args[1:])
    elif cmd == "udp-flows":
        path, dst, port, subs, n, interval, duration = args[:7]
        fast = int(args[7]) if len(args) > 7 else 0
        fast_interval = float(args[8]) if len(args) > 8 else 10
        udp_flows(path, dst, port, subs, int(n), float(interval), float(duration), fast, fast_interval)
    elif cmd == "pcap":
        pcap(*args)
    elif cmd == "tcp-send":
        tcp_send(*args)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""A kernel-socket client of the appliance's storage service (docs/storage-service.md), for tests.

  obj_client.py PREFIX put OBJ FILE [VERSION]   put FILE as object OBJ; prints "ok BYTES" when every
                                                chunk of it is acknowledged (durable), else "error ..."
  obj_client.py PREFIX get OBJ OUT              writes the object to OUT; prints "ok BYTES" or "status N"
  obj_client.py PREFIX stat OBJ                 prints "size S version V chunks C complete X" or "status N"
  obj_client.py PREFIX list [AFTER]             prints "ID SIZE VERSION" lines
  obj_client.py PREFIX rm OBJ                   prints "ok" or "status N"
  obj_client.py PREFIX stream FIRST COUNT       puts COUNT 4 KiB objects FIRST.. (content derived from the
                                                id), one at a time, printing "acked ID" after each
  obj_client.py PREFIX bench FIRST COUNT        COUNT 4 KiB puts then COUNT gets of objects FIRST.., one at
                                                a time; prints ops/s and p50/p99 latency of each
  obj_client.py PREFIX verify FIRST COUNT       gets objects FIRST..FIRST+COUNT-1 of a stream: prints
                                                "good ID", "absent ID" or "wrong ID (status N)" for each

With the metadata service (PREFIX is then ignored; write "-"):
  obj_client.py - mput META NAME FILE           create NAME (size of FILE) at the metadata service META
                                                (http://host:port), put FILE on every replica address,
                                                commit; prints "ok ID ADDR..." only when every replica
                                                acknowledged every chunk
  obj_client.py - mget META NAME OUT            read NAME from its first replica that answers, failing
                                                over; prints "ok ID from ADDR" and "bad ADDR (why)" lines
  obj_client.py - steer SEGS OBJ [FILE]         a stat request for OBJ (or, with FILE of at most 1 KiB, a put
                                                of FILE as OBJ) over the storage SIDs SEGS (travel order,
                                                comma-separated) with an SRH; prints "accepted ADDR status N"
                                                (ADDR: the replica address that answered)

PREFIX is the node's object prefix (e.g. 2001:db8:f0:1::); object OBJ lives at PREFIX + OBJ.
Requests are retransmitted on timeout and after a BUSY reply (every request is idempotent).
"""
import ipaddress
import os
import socket
import struct
import sys
import time

PORT = 7878
BUSY = 6  # status: the node's request table or assembly buffers are full, retry later
MAGIC = 0x4153
PUT, GET, STAT, DELETE, LIST = 1, 2, 3, 4, 5
FRAG = 1024
HDR = struct.Struct("!HBBHHQQQII")


def addr(prefix, obj):
    return str(ipaddress.IPv6Address(int(ipaddress.IPv6Address(prefix)) | obj))


def request(op, obj, offset=0, length=0, flags=0, data=b"", rid=0):
    return HDR.pack(MAGIC, 1, op, 0, flags, rid, obj, offset, length, 0) + data


def parse(reply):
    magic, ver, op, status, flags, rid, obj, offset, length, _ = HDR.unpack_from(reply)
    if magic != MAGIC or not op & 0x80:
        raise ValueError("not a storage reply")
    return rid, status, reply[HDR.size:HDR.size + length]


class Client:
    def __init__(self, prefix, tries=20):
        self.prefix = prefix
        self.tries = tries
        self.s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        self.s.bind(("::", 0))
        self.rid = int.from_bytes(os.urandom(4), "big") << 20

    def call_many(self, obj, reqs, window=64, timeout=0.5, tries=None):
        """reqs: list of (op, offset, length, flags, data). Returns [(status, data)] in order."""
        dst = (addr(self.prefix, obj), PORT)
        base = self.rid
        self.rid += len(reqs) + 1
        tries = tries or self.tries
        results = [None] * len(reqs)
        sent_at = {}
        attempts = [0] * len(reqs)
        nxt = 0
        while any(r is None for r in results):
            now = time.time()
            inflight = [i for i in sent_at if results[i] is None]
            for i in inflight:
                if now - sent_at[i] > timeout:
                    if attempts[i] >= tries:
                        raise TimeoutError("no reply to request %d after %d tries" % (i, tries))
                    self.send(dst, base + i, reqs[i], obj)
                    sent_at[i] = now
                    attempts[i] += 1
            while nxt < len(reqs) and len([i for i in sent_at if results[i] is None]) < window:
                self.send(dst, base + nxt, reqs[nxt], obj)
                sent_at[nxt] = time.time()
                attempts[nxt] = 1
                nxt += 1
            self.s.settimeout(0.05)
            try:
                reply, _ = self.s.recvfrom(4096)
            except socket.timeout:
                continue
            rid, status, data = parse(reply)
            i = rid - base
            if 0 <= i < len(reqs) and results[i] is None:
                if status == BUSY and attempts[i] < tries:
                    # "retry later": sent again when its timeout passes
                    sent_at[i] = time.time()
                    continue
                results[i] = (status, data)
        return results

    def send(self, dst, rid, req, obj):
        op, offset, length, flags, data = req
        self.s.sendto(request(op, obj, offset, length, flags, data, rid), dst)

    def put(self, obj, content, version=1):
        size = len(content)
        reqs = []
        for off in range(0, max(size, 1), FRAG):
            part = content[off:off + FRAG]
            reqs.append((PUT, off, len(part), 0, struct.pack("!QQ", size, version) + part))
        return self.call_many(obj, reqs)

    def get(self, obj):
        st, data = self.call_many(obj, [(STAT, 0, 0, 0, b"")])[0]
        if st != 0:
            return st, None
        size = struct.unpack_from("!Q", data)[0]
        reqs = [(GET, off, FRAG, 0, b"") for off in range(0, size, FRAG)]
        out = bytearray()
        for st, data in self.call_many(obj, reqs):
            if st != 0:
                return st, None
            out += data[16:]
        return 0, bytes(out[:size])


def http(method, url, body=None):
    import json
    import urllib.request
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def split_replica(address):
    a = int(ipaddress.IPv6Address(address))
    return str(ipaddress.IPv6Address(a & ~((1 << 64) - 1))), a & ((1 << 64) - 1)


def mput(meta, name, content):
    m = http("POST", meta + "/objects", {"name": name, "size": len(content)})
    addrs = [r["address"] for r in m["replicas"]]
    for address in addrs:
        prefix, oid = split_replica(address)
        res = Client(prefix).put(oid, content, m["version"])
        bad = sorted(set(st for st, _ in res if st != 0))
        if bad:
            return "error replica %s statuses %s" % (address, bad)
    http("POST", meta + "/objects/%d/commit" % m["id"], {"version": m["version"]})
    return "ok %d %s" % (m["id"], " ".join(addrs))


def mget(meta, name):
    import urllib.parse
    m = http("GET", meta + "/objects?name=" + urllib.parse.quote(name))
    lines = []
    for r in m["replicas"]:
        prefix, oid = split_replica(r["address"])
        try:
            st, data = Client(prefix, tries=4).get(oid)
        except TimeoutError:
            lines.append("bad %s (no answer)" % r["address"])
            continue
        if st != 0:
            lines.append("bad %s (status %d)" % (r["address"], st))
            continue
        return data, lines + ["ok %d from %s" % (m["id"], r["address"])]
    return None, lines + ["error no replica answered"]


def steer(segs, obj, content=None):
    segs = [socket.inet_pton(socket.AF_INET6, a) for a in segs.split(",")]
    n = len(segs)
    srh = struct.pack("!BBBBBBH", 0, 2 * n, 4, n - 1, n - 1, 0, 0) + b"".join(reversed(segs))
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, 57, srh)  # IPV6_RTHDR
    s.bind(("::", 0))
    s.settimeout(2)
    final = socket.inet_ntop(socket.AF_INET6, segs[-1])
    if content is None:
        req = request(STAT, obj, rid=4242)
    else:
        req = request(PUT, obj, 0, len(content), 0, struct.pack("!QQ", len(content), 1) + content, rid=4242)
    for _ in range(5):
        s.sendto(req, (final, PORT))
        try:
            data, addr = s.recvfrom(4096)
        except socket.timeout:
            continue
        rid, status, _ = parse(data)
        return "accepted %s status %d" % (addr[0], status)
    return "timeout"


def content_of(obj):
    """Deterministic 4 KiB content of object `obj` (for the stream mode)."""
    seed = obj.to_bytes(8, "big")
    out = bytearray()
    i = 0
    while len(out) < 4096:
        out += hashlib_sha256(seed + i.to_bytes(4, "big"))
        i += 1
    return bytes(out[:4096])


def hashlib_sha256(b):
    import hashlib
    return hashlib.sha256(b).digest()


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    c = Client(sys.argv[1] if sys.argv[1] != "-" else "::")
    cmd, args = sys.argv[2], sys.argv[3:]
    if cmd == "put":
        obj, path = int(args[0], 0), args[1]
        version = int(args[2]) if len(args) > 2 else 1
        content = open(path, "rb").read()
        res = c.put(obj, content, version)
        bad = [st for st, _ in res if st != 0]
        print("error statuses %s" % sorted(set(bad)) if bad else "ok %d" % len(content), flush=True)
    elif cmd == "get":
        st, data = c.get(int(args[0], 0))
        if st != 0:
            print("status %d" % st)
        else:
            open(args[1], "wb").write(data)
            print("ok %d" % len(data))
    elif cmd == "stat":
        st, data = c.call_many(int(args[0], 0), [(STAT, 0, 0, 0, b"")])[0]
        if st != 0:
            print("status %d" % st)
        else:
            size, version, chunks, complete = struct.unpack_from("!QQII", data)
            print("size %d version %d chunks %d complete %d" % (size, version, chunks, complete))
    elif cmd == "list":
        after = int(args[0], 0) if args else None
        st, data = c.call_many(after or 0, [(LIST, 0, 50, 1 if after is not None else 0, b"")])[0]
        n = struct.unpack_from("!I", data)[0]
        for i in range(n):
            oid, size, version = struct.unpack_from("!QQQ", data, 4 + 24 * i)
            print(oid, size, version)
    elif cmd == "rm":
        st, _ = c.call_many(int(args[0], 0), [(DELETE, 0, 8, 0, struct.pack("!Q", 0))])[0]
        print("ok" if st == 0 else "status %d" % st)
    elif cmd == "stream":
        first, count = int(args[0]), int(args[1])
        for obj in range(first, first + count):
            res = c.put(obj, content_of(obj))
            if all(st == 0 for st, _ in res):
                print("acked %d" % obj, flush=True)
    elif cmd == "mput":
        print(mput(args[0], args[1], open(args[2], "rb").read()), flush=True)
    elif cmd == "mget":
        data, lines = mget(args[0], args[1])
        if data is not None:
            open(args[2], "wb").write(data)
        print("\n".join(lines), flush=True)
    elif cmd == "steer":
        content = open(args[2], "rb").read() if len(args) > 2 else None
        print(steer(args[0], int(args[1], 0), content), flush=True)
    elif cmd == "bench":
        first, count = int(args[0]), int(args[1])
        data = os.urandom(4096)
        for op in ("put", "get"):
            lat = []
            t0 = time.perf_counter()
            for obj in range(first, first + count):
                t = time.perf_counter()
                if op == "put":
                    res = c.put(obj, data)
                    ok = all(st == 0 for st, _ in res)
                else:
                    st, got = c.get(obj)
                    ok = st == 0 and got == data
                if not ok:
                    sys.exit("bench: %s of object %d failed" % (op, obj))
                lat.append(time.perf_counter() - t)
            total = time.perf_counter() - t0
            lat.sort()
            print("%s 4KiB: %d ops in %.2f s = %.0f ops/s, p50 %.0f us, p99 %.0f us" % (
                op, count, total, count / total, lat[len(lat) // 2] * 1e6, lat[int(len(lat) * 0.99)] * 1e6), flush=True)
    elif cmd == "verify":
        first, count = int(args[0]), int(args[1])
        for obj in range(first, first + count):
            st, data = c.get(obj)
            if st == 1:
                print("absent %d" % obj)
            elif st == 0 and data == content_of(obj):
                print("good %d" % obj)
            else:
                print("wrong %d (status %d)" % (obj, st))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()

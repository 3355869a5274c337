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
  obj_client.py PREFIX verify FIRST COUNT       gets objects FIRST..FIRST+COUNT-1 of a stream: prints
                                                "good ID", "absent ID" or "wrong ID (status N)" for each

PREFIX is the node's object prefix (e.g. 2001:db8:f0:1::); object OBJ lives at PREFIX + OBJ.
Requests are retransmitted on timeout (every request is idempotent).
"""
import ipaddress
import os
import socket
import struct
import sys
import time

PORT = 7878
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
    def __init__(self, prefix):
        self.prefix = prefix
        self.s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        self.s.bind(("::", 0))
        self.rid = int.from_bytes(os.urandom(4), "big") << 20

    def call_many(self, obj, reqs, window=64, timeout=0.5, tries=20):
        """reqs: list of (op, offset, length, flags, data). Returns [(status, data)] in order."""
        dst = (addr(self.prefix, obj), PORT)
        base = self.rid
        self.rid += len(reqs) + 1
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
    c = Client(sys.argv[1])
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

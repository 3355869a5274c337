#!/usr/bin/env python3
"""Kernel-socket probes for the NAT44 tests (run inside the testbed's namespaces).

Servers report the address they see, so a test can check what the NAT did:

  udp-echo PORT...                  answer every datagram with "ADDR:PORT" of its sender
  tcp-echo PORT                     for each connection: send "ADDR:PORT\\n" of the peer, then
                                    read everything and answer "sha256 HEX\\n"
  udp-probe SRCPORT DST PORT [LISTEN_S]
                                    from SRCPORT send "probe" to DST:PORT, print "reply TEXT"
                                    (or "timeout"); then, for LISTEN_S seconds, print
                                    "from ADDR:PORT TEXT" for every datagram that arrives
  udp-refused SRCPORT DST PORT      connected socket: print "refused" when an ICMP port
                                    unreachable comes back, else "no-error"
  udp-send SRCPORT DST PORT TEXT [SRCADDR]
                                    send one datagram (from SRCADDR if given)
  udp-many COUNT DST PORT           COUNT sockets each send one datagram; print "replies N"
  tcp-send DST PORT BYTES           connect, read the peer line, send BYTES random bytes, print
                                    "peer ADDR:PORT", "sent HEX" and the server's "sha256 HEX"
  tcp-hairpin-listen SRCPORT DST PORT
                                    connect from SRCPORT to the tcp-echo at DST:PORT and print
                                    "public ADDR:PORT" (what the server saw: our mapping),
                                    then listen on SRCPORT, accept one connection, print
                                    "from ADDR:PORT", read it all, answer and print "sha256 HEX"
Every output line is flushed at once.
"""
import hashlib
import os
import select
import socket
import sys
import time


def out(*parts):
    print(*parts, flush=True)


def udp_socket(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    return s


def udp_echo(ports):
    socks = [udp_socket(int(p)) for p in ports]
    out("ready")
    while True:
        ready, _, _ = select.select(socks, [], [])
        for s in ready:
            data, peer = s.recvfrom(2048)
            s.sendto(("%s:%d" % peer).encode(), peer)


def tcp_echo(port):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", int(port)))
    srv.listen(16)
    out("ready")
    while True:
        conn, peer = srv.accept()
        with conn:
            conn.sendall(("%s:%d\n" % peer).encode())
            h = hashlib.sha256()
            conn.settimeout(10)
            try:
                while True:
                    b = conn.recv(65536)
                    if not b:
                        break
                    h.update(b)
                conn.sendall(("sha256 %s\n" % h.hexdigest()).encode())
            except OSError:
                pass


def udp_probe(srcport, dst, port, listen_s="0"):
    s = udp_socket(int(srcport))
    s.settimeout(2)
    s.sendto(b"probe", (dst, int(port)))
    try:
        data, _ = s.recvfrom(2048)
        out("reply", data.decode())
    except socket.timeout:
        out("timeout")
    end = time.time() + float(listen_s)
    while time.time() < end:
        s.settimeout(max(0.05, end - time.time()))
        try:
            data, peer = s.recvfrom(2048)
            out("from %s:%d %s" % (peer[0], peer[1], data.decode()))
        except socket.timeout:
            pass


def udp_refused(srcport, dst, port):
    s = udp_socket(int(srcport))
    s.connect((dst, int(port)))
    s.settimeout(2)
    s.send(b"anyone?")
    try:
        s.recv(2048)
        out("no-error")
    except ConnectionRefusedError:
        out("refused")
    except socket.timeout:
        out("no-error")


def udp_send(srcport, dst, port, text, srcaddr="0.0.0.0"):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((srcaddr, int(srcport)))
    s.sendto(text.encode(), (dst, int(port)))


def udp_many(count, dst, port):
    socks = []
    for _ in range(int(count)):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", 0))
        s.sendto(b"x", (dst, int(port)))
        socks.append(s)
    replies = set()
    end = time.time() + 3
    while time.time() < end and len(replies) < len(socks):
        ready, _, _ = select.select(socks, [], [], max(0.0, end - time.time()))
        for s in ready:
            s.recvfrom(2048)
            replies.add(s.fileno())
    out("replies", len(replies))


def read_line(conn):
    buf = b""
    while not buf.endswith(b"\n"):
        b = conn.recv(1)
        if not b:
            break
        buf += b
    return buf.decode().strip()


def tcp_send(dst, port, nbytes):
    data = os.urandom(int(nbytes))
    c = socket.create_connection((dst, int(port)), timeout=10)
    out("peer", read_line(c))
    c.sendall(data)
    c.shutdown(socket.SHUT_WR)
    out("sent", hashlib.sha256(data).hexdigest())
    out(read_line(c))


def tcp_hairpin_listen(srcport, dst, port):
    a = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    a.bind(("0.0.0.0", int(srcport)))
    a.settimeout(10)
    a.connect((dst, int(port)))
    public = read_line(a)
    lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind(("0.0.0.0", int(srcport)))
    lst.listen(1)
    lst.settimeout(20)
    out("public", public)  # keep `a` open: its session keeps the mapping alive
    conn, peer = lst.accept()
    out("from %s:%d" % peer)
    conn.settimeout(10)
    conn.sendall(("%s:%d\n" % peer).encode())
    h = hashlib.sha256()
    while True:
        b = conn.recv(65536)
        if not b:
            break
        h.update(b)
    conn.sendall(("sha256 %s\n" % h.hexdigest()).encode())
    out("sha256", h.hexdigest())
    conn.close()
    a.close()


COMMANDS = {
    "udp-echo": lambda a: udp_echo(a),
    "tcp-echo": lambda a: tcp_echo(*a),
    "udp-probe": lambda a: udp_probe(*a),
    "udp-refused": lambda a: udp_refused(*a),
    "udp-send": lambda a: udp_send(*a),
    "udp-many": lambda a: udp_many(*a),
    "tcp-send": lambda a: tcp_send(*a),
    "tcp-hairpin-listen": lambda a: tcp_hairpin_listen(*a),
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    COMMANDS[sys.argv[1]](sys.argv[2:])

#!/usr/bin/env python3
"""UDP through the appliance from kernel sockets (run inside the testbed's namespaces).

  echo ADDR PORT    bind ADDR:PORT (IPv4 or IPv6, by the form of ADDR), print "ready", and
                    send every datagram back to its sender unchanged
  send DST PORT [LARGEST]
                    send datagrams of 1, 64, 512, 1000 bytes and LARGEST (default: the
                    largest that fits a 1500-byte MTU unfragmented, 1472 over IPv4, 1452 over
                    IPv6), random contents, each up to 3 times until the same bytes come
                    back (1 s each); print "echoed N of M"

The kernel computes nothing itself on a veth with checksum offload on: every datagram
leaves with a partial checksum, and a reply only comes back if the checksum the echo
server's kernel verified was complete.
"""
import os
import socket
import sys


def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def echo(addr, port):
    s = socket.socket(family(addr), socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, int(port)))
    print("ready", flush=True)
    while True:
        data, peer = s.recvfrom(65535)
        s.sendto(data, peer)


def send(dst, port, largest=None):
    fam = family(dst)
    if largest is None:
        largest = 1500 - (40 if fam == socket.AF_INET6 else 20) - 8
    largest = int(largest)
    sizes = [1, 64, 512, 1000, largest]
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.settimeout(1.0)
    echoed = 0
    for n in sizes:
        payload = os.urandom(n)
        for _ in range(3):
            s.sendto(payload, (dst, int(port)))
            try:
                data, _ = s.recvfrom(65535)
            except socket.timeout:
                continue
            if data == payload:
                echoed += 1
                break
    print("echoed %d of %d" % (echoed, len(sizes)), flush=True)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"echo": echo, "send": send}[cmd](*args)

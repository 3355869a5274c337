#!/usr/bin/env python3
"""Numbered UDP datagrams, to check that a flow loses nothing.

  seq_udp.py send DST PORT COUNT INTERVAL_MS   sends COUNT datagrams "seq N", prints "sent COUNT"
  seq_udp.py recv PORT SECONDS                 prints "ready", then after SECONDS of silence
                                               (or SECONDS in all) the sequence numbers it got,
                                               comma-separated, on one line
"""
import socket
import sys
import time


def send(dst: str, port: int, count: int, interval_ms: float) -> None:
    s = socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET, socket.SOCK_DGRAM)
    t0 = time.monotonic()
    for i in range(count):
        s.sendto(b"seq %d" % i, (dst, port))
        # Paced against the start, so a slow moment does not stretch the flow.
        delay = t0 + (i + 1) * interval_ms / 1000 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    print("sent %d" % count, flush=True)


def recv(port: int, seconds: float) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    s.settimeout(0.2)
    print("ready", flush=True)
    got = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            data, _ = s.recvfrom(2048)
        except socket.timeout:
            continue
        if data.startswith(b"seq "):
            got.append(int(data[4:]))
    print(",".join(str(n) for n in got), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "send":
        send(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
    else:
        recv(int(sys.argv[2]), float(sys.argv[3]))

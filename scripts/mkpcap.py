#!/usr/bin/env python3
"""Writes the benchmark's frames to a pcap file (no scapy needed).

  mkpcap.py end   OUT  -- IPv6 to the End SID 2001:db8:a::1 with an SRH
                          [2001:db8:b::1, 2001:db8:a::1] (SL 1), UDP, 64-byte payload
  mkpcap.py steer OUT  -- IPv6 to the storage SID 2001:db8:a::7 with an SRH
                          [2001:db8:b::1, 2001:db8:a::7] (SL 1), UDP to 7878 carrying a
                          storage PROBE header, 64-byte payload
  mkpcap.py nat   OUT FLOWS -- 64-byte IPv4/UDP frames of FLOWS distinct flows from NAT
                          subscribers: flow i comes from 100.64.0.1 + i // 1024, source
                          port 1024 + i % 1024, to 198.51.100.2 port 9
Frames go to the DUT's MAC 02:00:00:00:10:01 (IPv6 modes from 2001:db8:1::2); FLOWS
(default 1) source ports make that many flows.
"""
import ipaddress
import struct
import sys


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def a6(s: str) -> bytes:
    return ipaddress.IPv6Address(s).packed


def nat_frame(i: int) -> bytes:
    sub = 0x64400001 + i // 1024  # 100.64.0.1 + subscriber index
    sport = 1024 + i % 1024
    src, dst = struct.pack("!I", sub), ipaddress.IPv4Address("198.51.100.2").packed
    payload = bytes(18)  # 14 + 20 + 8 + 18 = 60 bytes (+ FCS = 64 on the wire)
    udp = struct.pack("!HHHH", sport, 9, 8 + len(payload), 0) + payload
    c = 0xFFFF - csum(src + dst + struct.pack("!HH", 17, len(udp)) + udp)
    udp = udp[:6] + struct.pack("!H", c or 0xFFFF) + udp[8:]
    ip = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0) + src + dst
    ip = ip[:10] + struct.pack("!H", 0xFFFF - csum(ip)) + ip[12:]
    eth = bytes.fromhex("020000001001") + bytes.fromhex("020000001003") + b"\x08\x00"
    return eth + ip + udp


def frame(mode: str, sport: int) -> bytes:
    src = a6("2001:db8:1::2")
    if mode == "end":
        sid, final, dport = a6("2001:db8:a::1"), a6("2001:db8:b::1"), 9
        payload = bytes(range(64))
    else:
        sid, final, dport = a6("2001:db8:a::7"), a6("2001:db8:b::1"), 7878
        hdr = struct.pack("!HBBHHQQQII", 0x4153, 1, 0x10, 0, 0, sport, 42, 0, 0, 0)
        payload = hdr + bytes(64 - len(hdr))
    udp_len = 8 + len(payload)
    udp = struct.pack("!HHHH", sport, dport, udp_len, 0) + payload
    # UDP checksum over the final destination (segment[0]), RFC 8200 8.1.
    ph = src + final + struct.pack("!I", udp_len) + b"\0\0\0\x11"
    c = 0xFFFF - csum(ph + udp)
    udp = udp[:6] + struct.pack("!H", c or 0xFFFF) + udp[8:]
    segs = [final, sid]  # SRH order: [last ... first]
    srh = struct.pack("!BBBBBBH", 17, 2 * len(segs), 4, len(segs) - 1, len(segs) - 1, 0, 0) + b"".join(segs)
    ip = struct.pack("!IHBB", 6 << 28, len(srh) + len(udp), 43, 64) + src + sid
    eth = bytes.fromhex("020000001001") + bytes.fromhex("020000001003") + b"\x86\xdd"
    return eth + ip + srh + udp


def main() -> None:
    mode, out = sys.argv[1], sys.argv[2]
    flows = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    with open(out, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i in range(flows):
            fr = nat_frame(i) if mode == "nat" else frame(mode, 1024 + i)
            f.write(struct.pack("<IIII", 0, i, len(fr), len(fr)) + fr)


if __name__ == "__main__":
    main()

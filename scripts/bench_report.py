#!/usr/bin/env python3
"""The table and chart of one scripts/bench.sh run.

  bench_report.py OUT_DIR [--png FILE] [--docs docs/benchmarks.md]

Reads the raw logs bench.sh left in OUT_DIR (machine.txt, fwd.log, vhost.log, block.log,
storage.log, kernel-nat.log, kernel-srv6.log, ovs.log, ceph.log; any may be missing) and
prints a Markdown report: issue 13's table (each figure next to its goal) and the peers.
--png draws the chart with gnuplot: the appliance / testpmd io ratio per mode (memif and
vhost-user) and the NAT's cycles per packet against sessions. --docs replaces the text
between the "bench.sh begin" and "bench.sh end" markers of that file with the report.
"""
import os
import re
import subprocess
import sys
import tempfile


def read(d, name):
    p = os.path.join(d, name)
    if not os.path.exists(p):
        return None
    with open(p, errors="replace") as f:
        return f.read()


def kv(line):
    return dict(m.groups() for m in re.finditer(r"(\w[\w/%-]*)=([^\s,]+)", line))


def fwd(text):
    """{mode: (testpmd_mpps, appliance_mpps, ratio)} and {mode: setup dict}."""
    modes, setup = {}, {}
    if not text:
        return modes, setup
    for line in text.splitlines():
        m = re.match(r"mode=(\S+)\s+testpmd-io=\s*([\d.]+) Mpps\s+appliance=\s*([\d.]+) Mpps\s+ratio=([\d.]+)", line)
        if m:
            modes[m.group(1)] = (float(m.group(2)), float(m.group(3)), float(m.group(4)))
        elif line.startswith("mode=nat") and "setup_s=" in line:
            d = kv(line)
            setup[d["mode"]] = d
    return modes, setup


def block(text):
    r = {}
    if not text:
        return r
    for line in text.splitlines():
        m = re.match(r"(fio|blkbench)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", line.strip())
        if m:
            r[m.group(1)] = tuple(float(x) for x in m.groups()[1:])
        m = re.match(r"blkbench store (PUT|GET) 4 KiB: \d+ ops in [\d.]+ s: ([\d.]+) ops/s\s+p50 ([\d.]+) us\s+p99 ([\d.]+) us", line)
        if m:
            r["store_" + m.group(1).lower()] = tuple(float(x) for x in m.groups()[1:])
    return r


def storage(text):
    """{(op, qd): (appliance, ap50, ap99, store, sp50, sp99, ratio)}"""
    r = {}
    if not text:
        return r
    for line in text.splitlines():
        w = line.split()
        if len(w) == 9 and w[0] in ("put", "get") and w[1].isdigit():
            r[(w[0], int(w[1]))] = tuple(float(x) for x in w[2:])
    return r


def peers(*texts):
    rows = []
    for t in texts:
        if not t:
            continue
        for line in t.splitlines():
            if line.startswith("peer="):
                rows.append(kv(line))
    return rows


def f(x, fmt="{:.2f}"):
    return "not run" if x is None else fmt.format(x)


def main():
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    d = args[0]
    png = args[args.index("--png") + 1] if "--png" in args else None
    docs = args[args.index("--docs") + 1] if "--docs" in args else None
    machine = kv((read(d, "machine.txt") or "").replace("\n", " "))
    mtext = read(d, "machine.txt") or ""
    mhz = None
    m = re.search(r"cpu_mhz=([\d.]+)", mtext)
    if m:
        mhz = float(m.group(1))
    cpu = re.search(r"cpu=(.*)", mtext)
    modes, setup = fwd(read(d, "fwd.log"))
    vmodes, _ = fwd(read(d, "vhost.log"))
    blk = block(read(d, "block.log"))
    st = storage(read(d, "storage.log"))
    prs = peers(read(d, "kernel-nat.log"), read(d, "kernel-srv6.log"), read(d, "ovs.log"), read(d, "ceph.log"))

    def ratio(mo, mode):
        return mo[mode][2] if mode in mo else None

    def cycles(mode):
        if mode not in modes or not mhz or modes[mode][1] <= 0:
            return None
        return mhz * 1e6 / (modes[mode][1] * 1e6)

    def peer(name, **want):
        for p in prs:
            if p.get("peer") == name and all(p.get(k) == str(v) for k, v in want.items()):
                return p
        return None

    def pps(p):
        return float(p["pps"]) if p and "pps" in p else None

    ovs = peer("ovs-dpdk-ctnat", egress="null", flows=64512)
    nat64 = modes.get("nat64k", (None, None, None))[1]
    ovs_x = nat64 * 1e6 / pps(ovs) if ovs and nat64 else None
    s1m = setup.get("nat1m", {})
    rate = None
    if s1m:
        rate = int(s1m["flows"]) / max(float(s1m["setup_s"]), 1e-9)
    per_session = int(s1m["table_bytes"]) / int(s1m["flows"]) if s1m else None

    out = []
    out.append("<!-- bench.sh begin: written by scripts/bench_report.py; do not edit by hand -->")
    out.append("### One run of `scripts/bench.sh` ({}, commit {}; {}, {} CPUs, DPDK {})".format(
        machine.get("date", "?"), machine.get("commit", "?"), cpu.group(1) if cpu else "?", machine.get("cpus", "?"),
        machine.get("dpdk", "?")))
    out.append("")
    out.append("| figure | this run | goal |")
    out.append("|---|---|---|")
    out.append("| L3 forwarding / testpmd io (memif; vhost-user) | {}; {} | ≥ 0.8 |".format(
        f(ratio(modes, "l3")), f(ratio(vmodes, "l3"))))
    out.append("| SRv6 End, storage-steer decision / testpmd io (memif; End over vhost-user) | {}, {}; {} | ≥ 0.8 |".format(
        f(ratio(modes, "end")), f(ratio(modes, "steer")), f(ratio(vmodes, "end"))))
    out.append("| NAT established flows / testpmd io at 1k, 64k, 1M sessions (64k over vhost-user) | {}, {}, {} ({}) | ≥ 0.5 at 1M |".format(
        f(ratio(modes, "nat1k")), f(ratio(modes, "nat64k")), f(ratio(modes, "nat1m")), f(ratio(vmodes, "nat64k"))))
    out.append("| NAT cycles per packet at 1k, 64k, 1M sessions (CPU clock / packets per second of the worker) | {}, {}, {} | ≤ 200 |".format(
        f(cycles("nat1k"), "{:.0f}"), f(cycles("nat64k"), "{:.0f}"), f(cycles("nat1m"), "{:.0f}")))
    out.append("| NAT vs OVS-DPDK `ct(nat)` at 64k flows (appliance {} Mpps, OVS {} Mpps at 64 512 flows, null egress) | {} | ≥ 2.5× |".format(
        f(nat64), f(pps(ovs) / 1e6 if ovs else None), f(ovs_x, "{:.2f}×")))
    out.append("| new mappings per mapping core (1M sessions set up; peak per half second; ring-full drops) | {} M/s average, {} M/s peak, {} drops | ≥ 2 M/s |".format(
        f(rate / 1e6 if rate else None), f(int(s1m["new_mappings_per_s_peak"]) / 1e6 if s1m else None),
        s1m.get("ring_full_drops") or ("0" if s1m else "not run")))
    out.append("| memory per NAT session: the mapping server's tables at 1M sessions / sessions (worker caches not included) | {} B | ≤ 64 B in all |".format(
        f(per_session, "{:.0f}")))
    fio, bb = blk.get("fio"), blk.get("blkbench")
    out.append("| 4 KiB random read QD 32, block path / fio io_uring (IOPS {} vs {}) | {} | ≥ 1.0 |".format(
        f(bb[0] if bb else None, "{:.0f}"), f(fio[0] if fio else None, "{:.0f}"), f(bb[0] / fio[0] if bb and fio else None)))
    for qd in (32, 1):
        g, p = st.get(("get", qd)), st.get(("put", qd))
        if g or p or qd == 32:
            out.append("| 4 KiB object GET, PUT through the appliance / the store on the same device, QD {} (appliance p50/p99 µs: GET {}/{}, PUT {}/{}) | {}, {} | ≥ 0.7 |".format(
                qd, f(g[1] if g else None, "{:.0f}"), f(g[2] if g else None, "{:.0f}"),
                f(p[1] if p else None, "{:.0f}"), f(p[2] if p else None, "{:.0f}"),
                f(g[6] if g else None), f(p[6] if p else None)))
    out.append("")
    out.append("Forwarding, each mode (Mpps, medians; testpmd io is the harness's ceiling on the same link):")
    out.append("")
    out.append("| link | mode | testpmd io | appliance | ratio |")
    out.append("|---|---|---|---|---|")
    for link, mo in (("memif", modes), ("vhost-user", vmodes)):
        for mode, (io, apl, r) in mo.items():
            out.append("| {} | {} | {:.2f} | {:.2f} | {:.2f} |".format(link, mode, io, apl, r))
    if setup:
        out.append("")
        out.append("NAT set-up (the mapping server creating sessions while the generator loops over the flows):")
        out.append("")
        out.append("| mode | sessions | set-up s | new mappings/s (average) | peak per ½ s | table bytes | bytes/session | ring-full drops |")
        out.append("|---|---|---|---|---|---|---|---|")
        for mode, s in setup.items():
            n = int(s["flows"])
            out.append("| {} | {} | {} | {:.0f} | {} | {} | {:.0f} | {} |".format(
                mode, s["sessions"], s["setup_s"], n / max(float(s["setup_s"]), 1e-9), s["new_mappings_per_s_peak"],
                s["table_bytes"], int(s["table_bytes"]) / n, s.get("ring_full_drops") or 0))
    if st:
        out.append("")
        out.append("Storage, 4 KiB objects (ops/s, latency µs):")
        out.append("")
        out.append("| op | QD | appliance | p50 | p99 | store | p50 | p99 | ratio |")
        out.append("|---|---|---|---|---|---|---|---|---|")
        for (op, qd), v in sorted(st.items(), key=lambda x: (x[0][1], x[0][0])):
            out.append("| {} | {} | {:.0f} | {:.0f} | {:.0f} | {:.0f} | {:.0f} | {:.0f} | {:.2f} |".format(op, qd, *v))
    if prs:
        out.append("")
        out.append("Peers in the same run:")
        out.append("")
        out.append("| peer | configuration | figure |")
        out.append("|---|---|---|")
        for p in prs:
            name = p.get("peer")
            if "pps" in p:
                cfg = " ".join("{}={}".format(k, p[k]) for k in ("egress", "flows") if k in p)
                extra = [k for k in p if k.startswith("ratio_vs")]
                out.append("| {} | {} | {:.2f} Mpps{} |".format(name, cfg, float(p["pps"]) / 1e6,
                           "".join(", {} {}".format(k, p[k]) for k in extra)))
            elif "ops_per_s" in p:
                out.append("| {} | op={} qd={} osds={} replicas={} | {} ops/s, mean {} ms |".format(
                    name, p.get("op"), p.get("qd"), p.get("osds"), p.get("replicas"), p["ops_per_s"], p.get("lat_avg_ms")))
    failed = [n for n in ("fwd", "vhost", "block", "storage", "kernel-nat", "kernel-srv6", "ovs", "ceph")
              if "BENCH-PART-FAILED" in (read(d, n + ".log") or "")]
    if failed:
        out.append("")
        out.append("Parts that failed in this run: {} (their logs are in {}).".format(", ".join(failed), d))
    if png:
        out.append("")
        out.append("Chart: [{}]({}) (ratios per mode; NAT cycles per packet against sessions).".format(
            os.path.basename(png), os.path.basename(png)))
    out.append("<!-- bench.sh end -->")
    report = "\n".join(out)
    print(report)

    if png:
        chart(png, modes, vmodes, {k: cycles(k) for k in ("nat1k", "nat64k", "nat1m")})
    if docs:
        with open(docs) as fh:
            text = fh.read()
        begin = text.find("<!-- bench.sh begin")
        end = text.find("<!-- bench.sh end -->")
        if begin >= 0 and end > begin:
            text = text[:begin] + report + text[end + len("<!-- bench.sh end -->"):]
        else:
            text = text.rstrip("\n") + "\n\n## Everything in one run: `scripts/bench.sh`\n\n" + report + "\n"
        with open(docs, "w") as fh:
            fh.write(text)


def chart(png, modes, vmodes, cyc):
    with tempfile.TemporaryDirectory() as t:
        ratios = os.path.join(t, "ratios.dat")
        with open(ratios, "w") as fh:
            for mode in ("l3", "end", "steer", "nat1k", "nat64k", "nat1m"):
                a = modes.get(mode, (0, 0, 0))[2]
                b = vmodes.get(mode, (0, 0, 0))[2]
                fh.write("{} {} {}\n".format(mode, a, b))
        cost = os.path.join(t, "cost.dat")
        with open(cost, "w") as fh:
            for mode, n in (("nat1k", 1024), ("nat64k", 65536), ("nat1m", 1048576)):
                if cyc.get(mode):
                    fh.write("{} {}\n".format(n, cyc[mode]))
        script = """
set terminal pngcairo size 1200,480 noenhanced
set output '{png}'
set multiplot layout 1,2
set title 'appliance / testpmd io, one worker, 64-byte frames'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set yrange [0:1.1]
set ylabel 'ratio'
set key top right
set arrow from graph 0, first 0.8 to graph 1, first 0.8 nohead dt 2 lc rgb 'red'
plot '{ratios}' using 2:xtic(1) title 'memif', '' using 3 title 'vhost-user'
unset arrow
set title 'NAT: cycles per packet against sessions'
set style data linespoints
set logscale x 2
set xrange [700:1500000]
set xtics ('1k' 1024, '4k' 4096, '16k' 16384, '64k' 65536, '256k' 262144, '1M' 1048576)
set xlabel 'sessions'
set ylabel 'cycles per packet'
set yrange [0:*]
set arrow from graph 0, first 200 to graph 1, first 200 nohead dt 2 lc rgb 'red'
plot '{cost}' using 1:2 title 'established flows' lw 2 pt 7
unset multiplot
""".format(png=os.path.abspath(png), ratios=ratios, cost=cost)
        try:
            subprocess.run(["gnuplot"], input=script, text=True, check=True)
        except (OSError, subprocess.CalledProcessError) as e:
            print("bench_report.py: no chart: {}".format(e), file=sys.stderr)


if __name__ == "__main__":
    main()

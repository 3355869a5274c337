//! `apl-gen`: a small DPDK packet generator for the benchmarks.
//!
//! Replays the frames of a pcap file (in a loop, round-robin) out of DPDK
//! port 0 as fast as the port takes them, from one lcore, and prints the
//! transmit rate every second. Unlike testpmd's pcap PMD it builds each
//! packet by copying a template into a fresh mbuf, which keeps it ahead of
//! the device under test for frames testpmd's txonly mode cannot build
//! (IPv6 with an SRH).
//!
//! Usage: `apl-gen <EAL args> -- --pcap FILE [--seconds N] [--pps N] [--port NAME] [--dst-mac MAC]`
//! (EAL args must create exactly one port, `--port` names it: `net_memif0` by
//! default, e.g. `net_af_packet0` to feed a kernel router). `--pps` paces the
//! transmission (the loop sleeps while it is ahead), so the generator shares
//! a CPU. `--dst-mac` rewrites every frame's destination MAC (a DUT port
//! whose driver cannot take the MAC the frames were written for, as a vhost-user port).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

fn read_pcap(path: &str) -> Result<Vec<Vec<u8>>> {
    let b = std::fs::read(path).with_context(|| format!("reading {path}"))?;
    if b.len() < 24 {
        bail!("{path}: not a pcap file");
    }
    let le = match &b[..4] {
        [0xd4, 0xc3, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] => false,
        _ => bail!("{path}: not a pcap file (magic)"),
    };
    let u32_at = |o: usize| {
        let a = [b[o], b[o + 1], b[o + 2], b[o + 3]];
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let mut frames = Vec::new();
    let mut off = 24;
    while off + 16 <= b.len() {
        let caplen = u32_at(off + 8) as usize;
        off += 16;
        if off + caplen > b.len() {
            bail!("{path}: truncated record");
        }
        frames.push(b[off..off + caplen].to_vec());
        off += caplen;
    }
    if frames.is_empty() {
        bail!("{path}: no packets");
    }
    Ok(frames)
}

fn main() -> Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    let split = argv.iter().position(|a| a == "--").unwrap_or(argv.len());
    let eal_args: Vec<String> = argv[..split].to_vec();
    let mut pcap = None;
    let mut seconds: u64 = 0;
    let mut pps: u64 = 0;
    let mut port_name = "net_memif0".to_string();
    let mut dst_mac: Option<[u8; 6]> = None;
    let mut it = argv.iter().skip(split + 1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--pcap" => pcap = it.next().cloned(),
            "--seconds" => seconds = it.next().context("--seconds N")?.parse()?,
            "--pps" => pps = it.next().context("--pps N")?.parse()?,
            "--port" => port_name = it.next().context("--port NAME")?.clone(),
            "--dst-mac" => {
                let s = it.next().context("--dst-mac MAC")?;
                let mac: netwire::MacAddr =
                    s.parse().map_err(|_| anyhow::anyhow!("--dst-mac {s}: six hex octets, as 02:00:00:00:10:01"))?;
                dst_mac = Some(mac.0);
            }
            other => bail!("unknown argument {other}"),
        }
    }
    let mut frames = read_pcap(&pcap.context("--pcap FILE is required")?)?;
    if let Some(mac) = dst_mac {
        for f in frames.iter_mut().filter(|f| f.len() >= 6) {
            f[..6].copy_from_slice(&mac);
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;

    let eal = rte::Eal::init(&eal_args)?;
    let pool = rte::Mempool::new_pktmbuf(&eal, "gen_mbufs", 16383, 256, 2176)?;
    let port = rte::Port::configure(
        &eal,
        &port_name,
        &rte::PortConfig { rx_queues: 1, tx_queues: 1, rx_descriptors: 1024, tx_descriptors: 1024, mac: None },
        std::slice::from_ref(&pool),
    )?;
    port.start().with_context(|| {
        format!("starting {port_name} (as a memif client it needs a memif server listening on its socket)")
    })?;
    let mut txq = port.tx_queue(0)?;
    let mut rxq = port.rx_queue(0)?;
    let mut burst = rte::Burst::new();
    let mut rx = rte::Burst::new();
    let (mut sent, mut last_sent) = (0u64, 0u64);
    let start = Instant::now();
    let mut last = Instant::now();
    let mut next = 0usize;
    while !stop.load(Ordering::Relaxed) {
        // Paced: no more than pps × elapsed sent so far.
        let budget = if pps > 0 {
            let allowed = (start.elapsed().as_secs_f64() * pps as f64) as u64;
            if allowed <= sent {
                std::thread::sleep(Duration::from_micros(100));
            }
            allowed.saturating_sub(sent).min(32) as usize
        } else {
            usize::MAX
        };
        while !burst.is_full() && burst.len() < budget {
            let Some(mut m) = pool.alloc() else { break };
            let f = &frames[next];
            next = (next + 1) % frames.len();
            if let Some(d) = m.append(f.len()) {
                d.copy_from_slice(f);
            }
            if burst.push(m).is_err() {
                break;
            }
        }
        sent += txq.tx_burst(&mut burst) as u64;
        // Anything sent back (replies) is received and freed.
        if rxq.rx_burst(&mut rx, 32) > 0 {
            rx.free_all();
        }
        if last.elapsed() >= Duration::from_secs(1) {
            let dt = last.elapsed().as_secs_f64();
            println!("tx_pps={:.0}", (sent - last_sent) as f64 / dt);
            last_sent = sent;
            last = Instant::now();
            if seconds > 0 && start.elapsed() >= Duration::from_secs(seconds) {
                break;
            }
        }
    }
    burst.free_all();
    println!("tx_total={sent}");
    Ok(())
}

//! Packet trace (VPP's `trace add`) and capture (`capture start FILE`).
//!
//! * **Trace**: `trace add N` arms every worker for its next N received
//!   packets. For each, the worker records the first bytes as received, the
//!   stages the pipeline took ([`dataplane::pipeline::Stage`]), the verdict
//!   and its detail. `show trace` decodes them.
//! * **Capture**: `capture start FILE [--port P] [--count N]` makes the
//!   workers copy every received frame (of port P) into a buffer that a
//!   writer thread drains into a pcap file every 10 ms, until `capture stop`
//!   or N packets.
//!
//! Costs on the fast path while neither is on: one relaxed atomic load per
//! burst for each. While on: the worker takes its own buffer's lock with
//! `try_lock` once per burst (never waits: if the writer holds it, the
//! burst's packets are counted as not captured) and copies into memory
//! allocated when the capture started. Nothing is allocated on a worker.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dataplane::pipeline::{PacketMeta, Stage, Verdict};
use serde_json::{json, Value};

use crate::ctl::Reply;

/// Bytes of each traced packet kept (headers).
pub const TRACE_HEAD: usize = 128;
/// Traced packets kept per worker.
pub const TRACE_MAX: usize = 1024;
/// Bytes of frames a worker may buffer between two writer passes.
const CAPTURE_ARENA: usize = 4 << 20;
/// Frames a worker may buffer between two writer passes.
const CAPTURE_FRAMES: usize = 16 << 10;

/// One traced packet.
#[derive(Clone)]
pub struct TraceRecord {
    pub worker: usize,
    pub in_port: u16,
    pub len: usize,
    pub head: [u8; TRACE_HEAD],
    pub meta: PacketMeta,
    pub verdict: Verdict,
}

/// A worker's capture buffer: frames packed in `arena`, described by `frames`.
struct CaptureBuf {
    arena: Vec<u8>,
    /// (offset, captured length, original length, TSC).
    frames: Vec<(usize, u32, u32, u64)>,
}

/// What every worker and the control API share.
pub struct TraceControl {
    /// Per worker: packets still to trace.
    armed: Vec<AtomicU32>,
    records: Vec<Mutex<Vec<TraceRecord>>>,
    capture_on: AtomicBool,
    /// Port filter (`u64::MAX`: every port) and packets still to capture.
    capture_port: AtomicU64,
    capture_left: AtomicU64,
    capture_bufs: Vec<Mutex<Option<CaptureBuf>>>,
    /// Frames not captured because the writer held the buffer or it was full.
    pub capture_missed: AtomicU64,
    tsc_hz: u64,
    port_names: Vec<String>,
}

impl TraceControl {
    pub fn new(workers: usize, tsc_hz: u64, port_names: Vec<String>) -> Arc<TraceControl> {
        Arc::new(TraceControl {
            armed: (0..workers).map(|_| AtomicU32::new(0)).collect(),
            records: (0..workers).map(|_| Mutex::new(Vec::with_capacity(TRACE_MAX))).collect(),
            capture_on: AtomicBool::new(false),
            capture_port: AtomicU64::new(u64::MAX),
            capture_left: AtomicU64::new(0),
            capture_bufs: (0..workers).map(|_| Mutex::new(None)).collect(),
            capture_missed: AtomicU64::new(0),
            tsc_hz: tsc_hz.max(1),
            port_names,
        })
    }

    /// Arms every worker for its next `count` packets.
    pub fn arm(&self, count: u32) {
        for a in &self.armed {
            a.store(count, Ordering::Relaxed);
        }
    }

    /// Forgets the traced packets (and disarms).
    pub fn clear(&self) {
        self.arm(0);
        for r in &self.records {
            if let Ok(mut r) = r.lock() {
                r.clear();
            }
        }
    }

    /// Worker `w`: how many packets of this burst to trace (one load).
    #[inline]
    pub fn armed(&self, w: usize) -> u32 {
        self.armed[w].load(Ordering::Relaxed)
    }

    /// Worker `w` records a traced packet (`head`: its first bytes as received).
    pub fn record(&self, w: usize, in_port: u16, head: &[u8], len: usize, meta: &PacketMeta, verdict: Verdict) {
        let left = self.armed[w].load(Ordering::Relaxed);
        if left == 0 {
            return;
        }
        self.armed[w].store(left - 1, Ordering::Relaxed);
        if let Ok(mut r) = self.records[w].try_lock() {
            if r.len() < TRACE_MAX {
                let mut h = [0u8; TRACE_HEAD];
                let n = head.len().min(TRACE_HEAD);
                h[..n].copy_from_slice(&head[..n]);
                r.push(TraceRecord { worker: w, in_port, len, head: h, meta: *meta, verdict });
            }
        }
    }

    /// `show trace`.
    pub fn show(&self) -> Reply {
        let mut text = String::new();
        let mut data = Vec::new();
        for r in &self.records {
            let Ok(r) = r.lock() else { continue };
            for t in r.iter() {
                let stages: Vec<&str> = Stage::path(t.meta.path).map(Stage::name).collect();
                let port = self.port_names.get(usize::from(t.in_port)).cloned().unwrap_or_default();
                let summary = decode(&t.head[..t.len.min(TRACE_HEAD)]);
                let verdict = format!("{:?}", t.verdict);
                let _ = writeln!(
                    text,
                    "worker {} port {} len {}: {}\n  {} -> {} (punt arg {})",
                    t.worker,
                    port,
                    t.len,
                    summary,
                    stages.join(" -> "),
                    verdict,
                    t.meta.punt_arg
                );
                data.push(json!({
                    "worker": t.worker, "port": port, "len": t.len, "packet": summary,
                    "stages": stages, "verdict": verdict, "punt_arg": t.meta.punt_arg,
                    "recirculated": t.meta.recirculated,
                }));
            }
        }
        if data.is_empty() {
            text.push_str("no packets traced (trace add N)\n");
        }
        Reply { text, data: Value::Array(data) }
    }

    /// Worker `w`: true while a capture runs (one load per burst).
    #[inline]
    pub fn capturing(&self) -> bool {
        self.capture_on.load(Ordering::Relaxed)
    }

    /// Worker `w` captures the frames of one burst received on `port`.
    pub fn capture_burst<'a>(&self, w: usize, port: u16, frames: impl Iterator<Item = &'a [u8]>) {
        let want = self.capture_port.load(Ordering::Relaxed);
        if want != u64::MAX && want != u64::from(port) {
            return;
        }
        let Ok(mut guard) = self.capture_bufs[w].try_lock() else {
            self.capture_missed.fetch_add(frames.count() as u64, Ordering::Relaxed);
            return;
        };
        let Some(buf) = guard.as_mut() else { return };
        let now = rte::tsc();
        for f in frames {
            let left = self.capture_left.load(Ordering::Relaxed);
            let fits = buf.frames.len() < buf.frames.capacity() && buf.arena.len() + f.len() <= buf.arena.capacity();
            if left == 0 || !fits {
                self.capture_missed.fetch_add(u64::from(left > 0), Ordering::Relaxed);
                continue;
            }
            self.capture_left.store(left - 1, Ordering::Relaxed);
            let at = buf.arena.len();
            buf.arena.extend_from_slice(f);
            buf.frames.push((at, f.len() as u32, f.len() as u32, now));
        }
    }

    /// Starts a capture into `file` (pcap); `port`: only frames received
    /// on it; at most `count` frames.
    pub fn start_capture(self: &Arc<Self>, file: &str, port: Option<u16>, count: u64) -> Result<Capture, String> {
        let mut out = std::fs::File::create(file).map_err(|e| format!("{file}: {e}"))?;
        // pcap global header: magic, v2.4, GMT offset, accuracy, snaplen, Ethernet.
        let mut hdr = Vec::with_capacity(24);
        hdr.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        hdr.extend_from_slice(&2u16.to_le_bytes());
        hdr.extend_from_slice(&4u16.to_le_bytes());
        for v in [0u32, 0, 65_535, 1] {
            hdr.extend_from_slice(&v.to_le_bytes());
        }
        out.write_all(&hdr).map_err(|e| format!("{file}: {e}"))?;
        for b in &self.capture_bufs {
            *b.lock().map_err(|_| "internal error")? = Some(CaptureBuf {
                arena: Vec::with_capacity(CAPTURE_ARENA),
                frames: Vec::with_capacity(CAPTURE_FRAMES),
            });
        }
        self.capture_port.store(port.map_or(u64::MAX, u64::from), Ordering::Relaxed);
        self.capture_left.store(count, Ordering::Relaxed);
        self.capture_on.store(true, Ordering::Release);
        let stop = Arc::new(AtomicBool::new(false));
        let (ctl, s) = (self.clone(), stop.clone());
        let tsc0 = rte::tsc();
        let wall0 = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let writer = std::thread::Builder::new()
            .name("capture".into())
            .spawn(move || ctl.write_loop(out, &s, tsc0, wall0))
            .map_err(|e| format!("capture writer: {e}"))?;
        Ok(Capture { file: file.to_string(), stop, writer: Some(writer), ctl: self.clone() })
    }

    /// The writer thread: swaps each worker's buffer out and appends its
    /// frames to the file, every 10 ms, until stopped.
    fn write_loop(
        &self,
        mut out: std::fs::File,
        stop: &AtomicBool,
        tsc0: u64,
        wall0: Duration,
    ) -> std::io::Result<u64> {
        let mut written = 0u64;
        let mut spare: Vec<CaptureBuf> = (0..self.capture_bufs.len())
            .map(|_| CaptureBuf {
                arena: Vec::with_capacity(CAPTURE_ARENA),
                frames: Vec::with_capacity(CAPTURE_FRAMES),
            })
            .collect();
        loop {
            let last = stop.load(Ordering::Acquire);
            for (w, slot) in self.capture_bufs.iter().enumerate() {
                let full = match slot.lock() {
                    Ok(mut g) => g.as_mut().map(|b| std::mem::replace(b, spare.pop().expect("one spare per worker"))),
                    Err(_) => None,
                };
                let Some(mut full) = full else { continue };
                for &(at, caplen, len, tsc) in &full.frames {
                    let t = wall0
                        + Duration::from_nanos(
                            ((tsc.wrapping_sub(tsc0)) as u128 * 1_000_000_000 / u128::from(self.tsc_hz)) as u64,
                        );
                    let mut rec = Vec::with_capacity(16 + caplen as usize);
                    rec.extend_from_slice(&(t.as_secs() as u32).to_le_bytes());
                    rec.extend_from_slice(&t.subsec_micros().to_le_bytes());
                    rec.extend_from_slice(&caplen.to_le_bytes());
                    rec.extend_from_slice(&len.to_le_bytes());
                    rec.extend_from_slice(&full.arena[at..at + caplen as usize]);
                    out.write_all(&rec)?;
                    written += 1;
                }
                full.arena.clear();
                full.frames.clear();
                spare.push(full);
                let _ = w;
            }
            out.flush()?;
            if last {
                return Ok(written);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A running capture.
pub struct Capture {
    file: String,
    stop: Arc<AtomicBool>,
    writer: Option<std::thread::JoinHandle<std::io::Result<u64>>>,
    ctl: Arc<TraceControl>,
}

impl Capture {
    /// Stops the workers' copies, writes what is buffered, closes the file;
    /// returns the file and the frames written.
    pub fn stop(mut self) -> Result<(String, u64), String> {
        self.ctl.capture_on.store(false, Ordering::Release);
        self.stop.store(true, Ordering::Release);
        let written = match self.writer.take().map(|w| w.join()) {
            Some(Ok(Ok(n))) => n,
            Some(Ok(Err(e))) => return Err(format!("{}: {e}", self.file)),
            _ => return Err("the capture writer failed".into()),
        };
        for b in &self.ctl.capture_bufs {
            if let Ok(mut b) = b.lock() {
                *b = None;
            }
        }
        Ok((self.file.clone(), written))
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.ctl.capture_on.store(false, Ordering::Release);
        self.stop.store(true, Ordering::Release);
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// A one-line summary of a frame's headers (Ethernet, IP, transport).
pub fn decode(frame: &[u8]) -> String {
    let mut s = String::new();
    if frame.len() < 14 {
        return format!("{} bytes (short)", frame.len());
    }
    let mac = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":");
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    let _ = write!(s, "{} > {} type {ethertype:#06x}", mac(&frame[6..12]), mac(&frame[0..6]));
    let ip = &frame[14..];
    match ethertype {
        0x0800 if ip.len() >= 20 => {
            let (src, dst) =
                (Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]), Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]));
            let ihl = usize::from(ip[0] & 0xf) * 4;
            let _ = write!(s, " | IPv4 {src} > {dst} proto {} ttl {}", ip[9], ip[8]);
            transport(&mut s, ip[9], ip.get(ihl..).unwrap_or(&[]));
        }
        0x86dd if ip.len() >= 40 => {
            let a = |o: usize| Ipv6Addr::from(<[u8; 16]>::try_from(&ip[o..o + 16]).unwrap_or_default());
            let _ = write!(s, " | IPv6 {} > {} next {} hlim {}", a(8), a(24), ip[6], ip[7]);
            transport(&mut s, ip[6], &ip[40..]);
        }
        0x0806 => s.push_str(" | ARP"),
        _ => {}
    }
    s
}

fn transport(s: &mut String, proto: u8, l4: &[u8]) {
    match proto {
        6 | 17 if l4.len() >= 4 => {
            let name = if proto == 6 { "TCP" } else { "UDP" };
            let _ =
                write!(s, " | {name} {} > {}", u16::from_be_bytes([l4[0], l4[1]]), u16::from_be_bytes([l4[2], l4[3]]));
        }
        1 | 58 if l4.len() >= 2 => {
            let _ = write!(s, " | ICMP{} type {} code {}", if proto == 58 { "v6" } else { "" }, l4[0], l4[1]);
        }
        43 if l4.len() >= 4 => {
            let _ = write!(s, " | SRH segments left {}", l4[3]);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_names_the_headers() {
        let mut f = vec![0u8; 14 + 20 + 8];
        f[12] = 0x08;
        f[14] = 0x45;
        f[14 + 8] = 64;
        f[14 + 9] = 17;
        f[14 + 12..14 + 16].copy_from_slice(&[192, 0, 2, 2]);
        f[14 + 16..14 + 20].copy_from_slice(&[198, 51, 100, 2]);
        f[34..36].copy_from_slice(&1234u16.to_be_bytes());
        f[36..38].copy_from_slice(&53u16.to_be_bytes());
        let d = decode(&f);
        assert!(d.contains("IPv4 192.0.2.2 > 198.51.100.2 proto 17 ttl 64") && d.contains("UDP 1234 > 53"), "{d}");
        assert!(decode(&f[..5]).contains("short"));
    }

    #[test]
    fn trace_records_only_what_was_armed() {
        let t = TraceControl::new(1, 1, vec!["p0".into()]);
        let meta = PacketMeta { path: (Stage::L2Input as u64) << 4 | Stage::Ip4Input as u64, ..PacketMeta::default() };
        t.record(0, 0, &[0; 60], 60, &meta, Verdict::Forward(1));
        assert!(t.show().text.contains("no packets traced"));
        t.arm(1);
        t.record(0, 0, &[0; 60], 60, &meta, Verdict::Forward(1));
        t.record(0, 0, &[0; 60], 60, &meta, Verdict::Forward(1));
        let r = t.show();
        assert_eq!(r.data.as_array().map(Vec::len), Some(1));
        assert!(r.text.contains("l2-input -> ip4-input -> Forward(1)"), "{}", r.text);
    }
}

//! `objcli bench`: a closed-loop load generator for one node's storage service.
//!
//! `inflight` slots each run one object operation at a time: a PUT sends every fragment of
//! the object at once and is done when every fragment is acknowledged (an ack means
//! durable); a GET asks for every fragment at once and is done when every fragment has
//! arrived and its bytes are the ones written. When a slot's operation is done the slot
//! starts the next one, so `inflight` objects are always in flight (the queue depth of
//! fio's runs). The latency of an operation is from its first send to its last reply,
//! retransmissions included; the figures are operations per second over the run and the
//! 50th and 99th percentile latencies.
//!
//! The PUT phase writes objects `first..first+objects` once each (at a version taken from
//! the clock, so a rerun overwrites), the GET phase reads random ones of them for
//! `seconds`. Every object is `size` bytes whose content is a function of its id and
//! offset, so reads are checked without keeping the data. One kernel UDP socket, one
//! thread; a request without a reply for `timeout` is sent again (the protocol's requests
//! are idempotent), `busy` is retried after `busy_backoff`, and an operation fails (the
//! bench stops with an error naming the object) after `tries` sends of one fragment.
//!
//! It does not use [`crate::transport::Transport`]: that one bounds requests in flight per
//! destination and finishes a whole batch before the next (every object is its own
//! destination here), where a load generator needs one bound over everything and a new
//! operation the moment one ends. The wire format and the retransmission rules are the same.

use std::io;
use std::net::{Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::client::Endpoint;
use crate::wire::{self, status, Header, Op, PutHead, FRAGMENT, HEADER_LEN};

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Objects written by the PUT phase and read by the GET phase.
    pub objects: u64,
    /// The first object id.
    pub first: u64,
    /// Object size in bytes (1..=64 fragments).
    pub size: usize,
    /// Operations in flight.
    pub inflight: usize,
    /// Length of the GET phase.
    pub seconds: f64,
    pub timeout: Duration,
    pub tries: u32,
    pub busy_backoff: Duration,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            objects: 1024,
            first: 0x6265_6e63_0000_0000,
            size: 4096,
            inflight: 32,
            seconds: 5.0,
            timeout: Duration::from_millis(250),
            tries: 12,
            busy_backoff: Duration::from_millis(1),
        }
    }
}

/// The figures of one phase.
#[derive(Clone, Debug)]
pub struct BenchResult {
    pub op: &'static str,
    pub ops: u64,
    pub seconds: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    /// Fragment requests sent again after a timeout.
    pub retransmits: u64,
    /// `busy` replies (each retried).
    pub busy: u64,
}

impl BenchResult {
    pub fn ops_per_s(&self) -> f64 {
        self.ops as f64 / self.seconds.max(1e-9)
    }

    /// One line: `RESULT op=get ops=... ops_per_s=... p50_us=... p99_us=...`.
    pub fn line(&self, cfg: &BenchConfig) -> String {
        format!(
            "RESULT op={} size={} inflight={} ops={} seconds={:.2} ops_per_s={:.0} p50_us={:.1} p99_us={:.1} \
             max_us={:.1} retransmits={} busy={}",
            self.op,
            cfg.size,
            cfg.inflight,
            self.ops,
            self.seconds,
            self.ops_per_s(),
            self.p50_us,
            self.p99_us,
            self.max_us,
            self.retransmits,
            self.busy
        )
    }
}

/// The request op of a phase.
fn op(phase: Phase) -> u8 {
    match phase {
        Phase::Put => Op::PUT_CHUNK.0,
        Phase::Get => Op::GET_CHUNK.0,
    }
}

/// Byte `i` of object `object`'s content.
fn content(object: u64, i: usize) -> u8 {
    (object.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8 ^ (i as u8).wrapping_mul(31) ^ (i >> 8) as u8
}

const MAX_FRAGMENTS: usize = 64;
/// Slot index bits in a request id (ids: sequence << 16 | slot << 6 | fragment).
const SLOT_BITS: u32 = 10;

#[derive(Clone, Copy)]
enum Frag {
    Waiting { deadline: Instant, tries: u32 },
    Backoff { until: Instant, tries: u32 },
    Done,
}

struct Slot {
    seq: u64,
    object: u64,
    started: Instant,
    left: usize,
    frags: Vec<Frag>,
}

/// The load generator on one socket.
pub struct Bench {
    sock: UdpSocket,
    node: Endpoint,
    cfg: BenchConfig,
    version: u64,
    seq: u64,
    rng: u64,
    /// Received datagrams.
    buf: Vec<u8>,
    /// The datagram being sent.
    pkt: Vec<u8>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Put,
    Get,
}

impl Bench {
    pub fn new(node: Endpoint, cfg: BenchConfig) -> io::Result<Bench> {
        let frags = cfg.size.div_ceil(FRAGMENT);
        if cfg.size == 0 || frags > MAX_FRAGMENTS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("--size {}: 1 to {} bytes", cfg.size, MAX_FRAGMENTS * FRAGMENT),
            ));
        }
        if cfg.inflight == 0 || cfg.inflight >= 1 << SLOT_BITS || cfg.objects == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("--inflight {}: 1 to {}; --objects at least 1", cfg.inflight, (1 << SLOT_BITS) - 1),
            ));
        }
        let sock = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0))?;
        sock.set_read_timeout(Some(Duration::from_micros(500)))?;
        // Every reply of every operation in flight may arrive in one burst: the kernel's
        // default receive buffer (208 KiB) overflowed at 32 operations of 4 KiB
        // (Udp6RcvbufErrors), and each lost reply cost a retransmission timeout.
        let want = (cfg.inflight * frags * 4 * 2048).max(1 << 20);
        crate::steer::set_rcvbuf(&sock, want);
        let version = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_secs());
        let rng = u64::from(std::process::id()) | 1;
        Ok(Bench {
            sock,
            node,
            cfg,
            version,
            seq: 1,
            rng,
            buf: vec![0u8; 65536],
            pkt: Vec::with_capacity(HEADER_LEN + PutHead::LEN + FRAGMENT),
        })
    }

    fn dst(&self, object: u64) -> SocketAddr {
        self.node.target(object).dst
    }

    /// Sends fragment `frag` of slot `slot`'s operation, built in the reused packet buffer.
    fn send(&mut self, phase: Phase, slot: usize, s: &Slot, frag: usize) -> io::Result<()> {
        let off = frag * FRAGMENT;
        let len = FRAGMENT.min(self.cfg.size - off);
        let h = Header {
            op: op(phase),
            status: 0,
            flags: 0,
            request_id: (s.seq << 16) | ((slot as u64) << 6) | frag as u64,
            object_id: s.object,
            offset: off as u64,
            length: len as u32,
        };
        let pkt = &mut self.pkt;
        pkt.clear();
        pkt.resize(HEADER_LEN, 0);
        h.emit(pkt).expect("room for the header");
        if phase == Phase::Put {
            pkt.resize(HEADER_LEN + PutHead::LEN, 0);
            PutHead { size: self.cfg.size as u64, version: self.version }
                .emit(&mut pkt[HEADER_LEN..])
                .expect("room for the put head");
            pkt.extend((off..off + len).map(|i| content(s.object, i)));
        }
        match self.sock.send_to(&self.pkt, self.node.target(s.object).dst) {
            Ok(_) => Ok(()),
            // A full socket buffer is a lost packet: the timer sends it again.
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn next_object(&mut self, phase: Phase, put_next: &mut u64) -> Option<u64> {
        match phase {
            Phase::Put => {
                if *put_next >= self.cfg.objects {
                    return None;
                }
                *put_next += 1;
                Some(self.cfg.first + *put_next - 1)
            }
            Phase::Get => {
                // xorshift64*
                self.rng ^= self.rng >> 12;
                self.rng ^= self.rng << 25;
                self.rng ^= self.rng >> 27;
                let r = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
                Some(self.cfg.first + r % self.cfg.objects)
            }
        }
    }

    fn start(&mut self, phase: Phase, slot: usize, object: u64, slots: &mut [Option<Slot>]) -> io::Result<()> {
        let n = self.cfg.size.div_ceil(FRAGMENT);
        let now = Instant::now();
        self.seq += 1;
        let s = Slot {
            seq: self.seq,
            object,
            started: now,
            left: n,
            frags: vec![Frag::Waiting { deadline: now + self.cfg.timeout, tries: 1 }; n],
        };
        for f in 0..n {
            self.send(phase, slot, &s, f)?;
        }
        slots[slot] = Some(s);
        Ok(())
    }

    /// The PUT phase: every object once.
    pub fn puts(&mut self) -> io::Result<BenchResult> {
        self.phase(Phase::Put)
    }

    /// The GET phase: random objects for `seconds`.
    pub fn gets(&mut self) -> io::Result<BenchResult> {
        self.phase(Phase::Get)
    }

    fn phase(&mut self, phase: Phase) -> io::Result<BenchResult> {
        let t0 = Instant::now();
        let end = t0 + Duration::from_secs_f64(self.cfg.seconds.max(0.0));
        let mut slots: Vec<Option<Slot>> = (0..self.cfg.inflight).map(|_| None).collect();
        let mut put_next = 0u64;
        let mut lat_us: Vec<u32> = Vec::new();
        let (mut retransmits, mut busy) = (0u64, 0u64);
        for slot in 0..slots.len() {
            if let Some(o) = self.next_object(phase, &mut put_next) {
                self.start(phase, slot, o, &mut slots)?;
            }
        }
        let mut last_timers = Instant::now();
        while slots.iter().any(Option::is_some) {
            match self.sock.recv_from(&mut self.buf) {
                Ok((len, _)) => {
                    if let Some((slot, done)) = self.reply(phase, len, &mut slots, &mut busy)? {
                        if done {
                            let s = slots[slot].take().expect("a slot in use");
                            lat_us.push(s.started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                            let more = phase == Phase::Put || Instant::now() < end;
                            if more {
                                if let Some(o) = self.next_object(phase, &mut put_next) {
                                    self.start(phase, slot, o, &mut slots)?;
                                }
                            }
                        }
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            if now.duration_since(last_timers) >= Duration::from_millis(1) {
                last_timers = now;
                retransmits += self.timers(phase, now, &mut slots)?;
            }
        }
        let seconds = t0.elapsed().as_secs_f64();
        lat_us.sort_unstable();
        let pct = |p: f64| -> f64 {
            if lat_us.is_empty() {
                return 0.0;
            }
            f64::from(lat_us[((lat_us.len() - 1) as f64 * p).round() as usize])
        };
        Ok(BenchResult {
            op: if phase == Phase::Put { "put" } else { "get" },
            ops: lat_us.len() as u64,
            seconds,
            p50_us: pct(0.50),
            p99_us: pct(0.99),
            max_us: pct(1.0),
            retransmits,
            busy,
        })
    }

    /// A reply: (its slot, whether the slot's operation is complete); `None` for a stale
    /// or foreign one.
    fn reply(
        &mut self,
        phase: Phase,
        len: usize,
        slots: &mut [Option<Slot>],
        busy: &mut u64,
    ) -> io::Result<Option<(usize, bool)>> {
        let Ok((h, rest)) = Header::decode(&self.buf[..len]) else { return Ok(None) };
        let rid = h.request_id;
        let (seq, slot, frag) = (rid >> 16, ((rid >> 6) & ((1 << SLOT_BITS) - 1)) as usize, (rid & 63) as usize);
        let Some(Some(s)) = slots.get_mut(slot) else { return Ok(None) };
        if s.seq != seq || h.object_id != s.object || frag >= s.frags.len() {
            return Ok(None);
        }
        let tries = match s.frags[frag] {
            Frag::Waiting { tries, .. } | Frag::Backoff { tries, .. } => tries,
            Frag::Done => return Ok(None),
        };
        if h.op != op(phase) | wire::REPLY {
            return Ok(None);
        }
        if h.status == status::BUSY {
            *busy += 1;
            s.frags[frag] = Frag::Backoff { until: Instant::now() + self.cfg.busy_backoff, tries };
            return Ok(Some((slot, false)));
        }
        if h.status != status::OK {
            return Err(io::Error::other(format!(
                "object {:#x} fragment {frag}: status {} from {}",
                s.object,
                h.status,
                self.dst(s.object)
            )));
        }
        if phase == Phase::Get {
            let off = frag * FRAGMENT;
            let data = wire::parse_get(&rest[..(h.length as usize).min(rest.len())]).map(|(_, _, d)| d);
            let good = data.is_some_and(|d| {
                d.len() == FRAGMENT.min(self.cfg.size - off)
                    && d.iter().enumerate().all(|(i, b)| *b == content(s.object, off + i))
            });
            if !good {
                return Err(io::Error::other(format!(
                    "object {:#x} fragment {frag}: the bytes read are not the bytes written",
                    s.object
                )));
            }
        }
        s.frags[frag] = Frag::Done;
        s.left -= 1;
        Ok(Some((slot, s.left == 0)))
    }

    /// Retransmissions and the ends of back-offs; the number of retransmissions.
    fn timers(&mut self, phase: Phase, now: Instant, slots: &mut [Option<Slot>]) -> io::Result<u64> {
        let mut sent = 0;
        for (slot, entry) in slots.iter_mut().enumerate() {
            let Some(s) = entry.as_mut() else { continue };
            for f in 0..s.frags.len() {
                let next = match s.frags[f] {
                    Frag::Waiting { deadline, tries } if now >= deadline => {
                        if tries >= self.cfg.tries {
                            return Err(io::Error::other(format!(
                                "object {:#x} fragment {f}: no reply from {} after {tries} sends (is --node the \
                                 node's object prefix, and does its storage service answer there? objcli --node \
                                 PREFIX stat-raw ID tries one request)",
                                s.object,
                                self.dst(s.object)
                            )));
                        }
                        sent += 1;
                        Frag::Waiting { deadline: now + self.cfg.timeout, tries: tries + 1 }
                    }
                    Frag::Backoff { until, tries } if now >= until => {
                        Frag::Waiting { deadline: now + self.cfg.timeout, tries }
                    }
                    _ => continue,
                };
                self.send(phase, slot, s, f)?;
                s.frags[f] = next;
            }
        }
        Ok(sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_differs_between_objects_and_offsets() {
        let a: Vec<u8> = (0..4096).map(|i| content(7, i)).collect();
        let b: Vec<u8> = (0..4096).map(|i| content(8, i)).collect();
        assert_ne!(a, b);
        assert_ne!(a[..1024], a[1024..2048]);
    }

    #[test]
    fn bad_sizes_are_refused() {
        let node = Endpoint::Fixed("[::1]:9".parse().unwrap());
        assert!(Bench::new(node, BenchConfig { size: 0, ..BenchConfig::default() }).is_err());
        assert!(Bench::new(node, BenchConfig { size: 65 * 1024, ..BenchConfig::default() }).is_err());
        assert!(Bench::new(node, BenchConfig { inflight: 0, ..BenchConfig::default() }).is_err());
    }
}

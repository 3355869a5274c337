//! Windowed request/reply over one kernel UDP socket (IPv6), with retransmission.
//!
//! [`Transport::call_many`] sends a batch of requests, each to its own destination, keeping at
//! most `window` requests in flight **per destination**, in batch order per destination. A
//! request with no reply after `timeout` is sent again (every request of the protocol is
//! idempotent), at most `tries` times in all; then its outcome is [`Outcome::NoReply`]. A
//! `busy` reply is not final: the request is sent again after a back-off that doubles from
//! `busy_backoff` (capped at 64×), up to `busy_tries` times, while keeping its window slot (so
//! a busy node is not flooded).
//!
//! Replies are matched by request id: a batch takes a fresh range of ids, so a late reply to
//! an earlier batch (or to a retransmitted copy) is recognised and dropped, as is a reply
//! whose op or object id does not match its request. Each final outcome is handed to the
//! caller's callback as it happens; the callback may stop the batch (the requests not final
//! yet are left `None`).

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::wire::{self, Header, Request};

/// Tunables of a [`Transport`].
#[derive(Clone, Debug)]
pub struct Options {
    /// Requests in flight per destination (at least 4: a put is acknowledged only when its
    /// whole 4-fragment chunk has arrived).
    pub window: usize,
    /// Time to wait for a reply before sending again.
    pub timeout: Duration,
    /// Sends of one request before it is given up (`NoReply`).
    pub tries: u32,
    /// First back-off after a `busy` reply.
    pub busy_backoff: Duration,
    /// `busy` replies tolerated for one request before the `busy` status is final.
    pub busy_tries: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            window: 64,
            timeout: Duration::from_millis(250),
            tries: 12,
            busy_backoff: Duration::from_millis(2),
            busy_tries: 40,
        }
    }
}

/// One request of a batch.
#[derive(Clone, Debug)]
pub struct Call {
    pub dst: SocketAddr,
    pub req: Request,
}

/// The final outcome of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A reply: its status and operation data (`length` bytes after the header).
    Reply { status: u16, data: Vec<u8> },
    /// No reply after this many sends.
    NoReply { tries: u32 },
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Reply { status: wire::status::OK, .. })
    }
}

/// What the batch does after a final outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

#[derive(Clone, Copy)]
enum State {
    Queued,
    InFlight { deadline: Instant, tries: u32, busy: u32 },
    Backoff { until: Instant, tries: u32, busy: u32 },
    Done,
}

/// A UDP socket and the request ids it has used.
pub struct Transport {
    sock: UdpSocket,
    next_rid: u64,
    opts: Options,
}

impl Transport {
    /// A transport on a fresh socket bound to `[::]:0`.
    pub fn new(opts: Options) -> io::Result<Transport> {
        let sock = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0))?;
        Ok(Transport::with_socket(sock, opts))
    }

    /// A transport on `sock` (for instance one with an SRH attached, see [`crate::steer`]).
    /// Its receive buffer is raised to hold a full window's replies from several replicas
    /// (the kernel's default, 208 KiB, overflows and every lost reply costs a timeout).
    pub fn with_socket(sock: UdpSocket, opts: Options) -> Transport {
        crate::steer::set_rcvbuf(&sock, (opts.window.max(4) * 8 * 2048).max(4 << 20));
        let mut h = RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        // Leave room above the base so that ids do not wrap within a session.
        let next_rid = h.finish() >> 4;
        Transport { sock, next_rid, opts: Options { window: opts.window.max(4), tries: opts.tries.max(1), ..opts } }
    }

    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// One request, its final outcome.
    pub fn call(&mut self, dst: SocketAddr, req: Request) -> io::Result<Outcome> {
        let mut r = self.call_many(&[Call { dst, req }], &mut |_, _| Flow::Continue)?;
        Ok(r.pop().flatten().expect("a batch that is not stopped finishes every request"))
    }

    /// Sends `calls` (see the module doc) and returns their outcomes in order; `None` for the
    /// requests left unfinished because `on_done` returned [`Flow::Stop`]. An `Err` is a local
    /// socket failure (not a lost packet).
    pub fn call_many(
        &mut self,
        calls: &[Call],
        on_done: &mut dyn FnMut(usize, &Outcome) -> Flow,
    ) -> io::Result<Vec<Option<Outcome>>> {
        let n = calls.len();
        let base = self.next_rid;
        self.next_rid = self.next_rid.wrapping_add(n as u64 + 1);
        let mut results: Vec<Option<Outcome>> = vec![None; n];
        let mut state = vec![State::Queued; n];
        let mut queues: Vec<(SocketAddr, VecDeque<usize>, usize)> = Vec::new();
        let mut queue_of: HashMap<SocketAddr, usize> = HashMap::new();
        let mut dst_q = Vec::with_capacity(n);
        for (i, c) in calls.iter().enumerate() {
            let q = *queue_of.entry(c.dst).or_insert_with(|| {
                queues.push((c.dst, VecDeque::new(), 0));
                queues.len() - 1
            });
            queues[q].1.push_back(i);
            dst_q.push(q);
        }
        let packets: Vec<Vec<u8>> =
            calls.iter().enumerate().map(|(i, c)| c.req.encode(base.wrapping_add(i as u64))).collect();
        let mut active: Vec<usize> = Vec::new();
        let mut left = n;
        let mut buf = vec![0u8; 65536];
        let opts = self.opts.clone();

        // Marks `i` final; returns whether the batch goes on.
        let mut finish = |i: usize,
                          o: Outcome,
                          state: &mut [State],
                          active: &mut Vec<usize>,
                          queues: &mut [(SocketAddr, VecDeque<usize>, usize)],
                          results: &mut [Option<Outcome>],
                          left: &mut usize|
         -> Flow {
            state[i] = State::Done;
            if let Some(p) = active.iter().position(|&a| a == i) {
                active.swap_remove(p);
            }
            queues[dst_q[i]].2 -= 1;
            *left -= 1;
            let flow = on_done(i, &o);
            results[i] = Some(o);
            flow
        };

        while left > 0 {
            let now = Instant::now();
            // Timers: retransmissions, give-ups, ends of back-off.
            let mut k = 0;
            while k < active.len() {
                let i = active[k];
                match state[i] {
                    State::InFlight { deadline, tries, busy } if now >= deadline => {
                        if tries >= opts.tries {
                            let o = Outcome::NoReply { tries };
                            if finish(i, o, &mut state, &mut active, &mut queues, &mut results, &mut left) == Flow::Stop
                            {
                                return Ok(results);
                            }
                            continue; // `active[k]` is another request now
                        }
                        self.send(&packets[i], calls[i].dst)?;
                        state[i] = State::InFlight { deadline: now + opts.timeout, tries: tries + 1, busy };
                    }
                    State::Backoff { until, tries, busy } if now >= until => {
                        self.send(&packets[i], calls[i].dst)?;
                        state[i] = State::InFlight { deadline: now + opts.timeout, tries, busy };
                    }
                    _ => {}
                }
                k += 1;
            }
            // Fill the windows.
            for (dst, q, inflight) in queues.iter_mut() {
                while *inflight < opts.window {
                    let Some(i) = q.pop_front() else { break };
                    self.send(&packets[i], *dst)?;
                    state[i] = State::InFlight { deadline: now + opts.timeout, tries: 1, busy: 0 };
                    *inflight += 1;
                    active.push(i);
                }
            }
            if left == 0 {
                break;
            }
            // Wait for a reply, at most until the next timer.
            let next = active
                .iter()
                .filter_map(|&i| match state[i] {
                    State::InFlight { deadline, .. } => Some(deadline),
                    State::Backoff { until, .. } => Some(until),
                    _ => None,
                })
                .min()
                .unwrap_or(now + Duration::from_millis(50));
            let wait = next
                .saturating_duration_since(Instant::now())
                .clamp(Duration::from_micros(200), Duration::from_millis(50));
            self.sock.set_read_timeout(Some(wait))?;
            let len = match self.sock.recv_from(&mut buf) {
                Ok((len, _)) => len,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                            | io::ErrorKind::ConnectionRefused
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(e),
            };
            let Ok((h, rest)) = Header::decode(&buf[..len]) else {
                continue;
            };
            let i = h.request_id.wrapping_sub(base);
            if i >= n as u64 {
                continue; // another batch's
            }
            let i = i as usize;
            let c = &calls[i];
            if h.op != c.req.op | wire::REPLY || h.object_id != c.req.object_id {
                continue;
            }
            let (tries, busy) = match state[i] {
                State::InFlight { tries, busy, .. } | State::Backoff { tries, busy, .. } => (tries, busy),
                State::Queued | State::Done => continue, // a duplicate
            };
            if h.status == wire::status::BUSY && busy < opts.busy_tries {
                let backoff = opts.busy_backoff * (1u32 << busy.min(6));
                state[i] = State::Backoff { until: Instant::now() + backoff, tries, busy: busy + 1 };
                continue;
            }
            let data_len = (h.length as usize).min(rest.len());
            let o = Outcome::Reply { status: h.status, data: rest[..data_len].to_vec() };
            if finish(i, o, &mut state, &mut active, &mut queues, &mut results, &mut left) == Flow::Stop {
                return Ok(results);
            }
        }
        Ok(results)
    }

    fn send(&self, pkt: &[u8], dst: SocketAddr) -> io::Result<()> {
        match self.sock.send_to(pkt, dst) {
            Ok(_) => Ok(()),
            // Treated as a lost packet: the retransmission timer covers it (a route that comes
            // back, a full socket buffer); a request that never gets out ends as `NoReply`.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::Interrupted
                        | io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::NetworkUnreachable
                        | io::ErrorKind::HostUnreachable
                        | io::ErrorKind::AddrNotAvailable
                ) || e.raw_os_error() == Some(libc::ENOBUFS) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

//! The mapping server: the slow path of NAT, on its own lcore.
//!
//! It owns the [`NatTable`] (and through it the port allocator) and is the
//! only writer of NAT state. Per message from a worker ([`super::msg`]):
//!
//! * a **request** (a held packet without a cache entry): parse, find or
//!   create the mapping and session (outbound), or find the mapping, apply
//!   the filter and find or create the session (inbound), or look the
//!   mapping up without creating anything (ICMP errors, RFC 5508); translate
//!   the packet in place; prepend the answer (the cache entries for the
//!   worker). A refused packet (pool exhausted, per-subscriber limit, no
//!   mapping, filtered, malformed) is returned as an error for the caller to
//!   count and free: nothing is evicted to make room.
//! * an **activity report**: refreshes the sessions workers saw traffic on
//!   and follows their TCP state.
//!
//! [`Mapper::tick`] retires idle sessions (bounded work per call) and
//! publishes the gauges and counters the metrics endpoint reads.
//! Every change of state is an event pushed to the sink, in causal order:
//! the block events are the RFC 6888 log, and the whole stream is what a
//! standby mapping server will replay.
//!
//! Pure: works on any [`PacketBuf`]; the lcore loop around it is
//! `crate::natcore`.

use std::sync::Arc;

use super::cache::Touch;
use super::msg::{self, Answer, ANSWER_LEN};
use super::session::{Expired, NatEvent, NatTable, SessionFilter, SessionInfo};
use super::translate::{self, FlowKey};
use super::{NatConfig, NatError, Sink};
use crate::stats::{Counter, DropCounters, Gauge};
use netwire::ethernet;
use netwire::PacketBuf;

/// What the mapping core publishes for the metrics endpoint (it is the only
/// writer; the scrape reads).
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct NatStats {
    pub sessions: Gauge,
    pub mappings: Gauge,
    pub subscribers: Gauge,
    pub blocks_allocated: Gauge,
    pub blocks_quarantined: Gauge,
    pub blocks_free: Gauge,
    pub ports_quarantined: Gauge,
    /// Bytes of memory the tables take (allocated at start).
    pub memory_bytes: Gauge,
    pub mappings_created: Counter,
    pub mappings_retired: Counter,
    pub sessions_created: Counter,
    pub sessions_retired: Counter,
    pub ports_allocated: Counter,
    pub ports_released: Counter,
    pub blocks_allocated_total: Counter,
    pub blocks_released_total: Counter,
    pub subscriber_limit_hits: Counter,
    pub pool_exhausted: Counter,
    pub ports_preserved: Counter,
    pub parity_not_kept: Counter,
    /// Requests answered, by kind.
    pub requests_outbound: Counter,
    pub requests_inbound: Counter,
    pub requests_hairpin: Counter,
    /// Activity records applied, and those naming a retired session.
    pub touches: Counter,
    pub touches_stale: Counter,
    /// Events the log writer could not take (its queue was full).
    pub events_dropped: Counter,
    /// Packets the mapping core refused, by reason.
    pub drops: DropCounters,
}

/// The mapping server. See the module doc.
pub struct Mapper<S: Sink<NatEvent>> {
    table: NatTable,
    sink: S,
    stats: Arc<NatStats>,
}

impl<S: Sink<NatEvent>> Mapper<S> {
    /// Allocates the tables from `config` (validated).
    pub fn new(config: &NatConfig, sink: S, stats: Arc<NatStats>) -> Mapper<S> {
        let table = NatTable::new(config);
        stats.memory_bytes.set(table.memory_bytes() as u64);
        let m = Mapper { table, sink, stats };
        m.publish();
        m
    }

    pub fn table(&self) -> &NatTable {
        &self.table
    }

    pub fn stats(&self) -> &Arc<NatStats> {
        &self.stats
    }

    pub fn sink(&mut self) -> &mut S {
        &mut self.sink
    }

    /// Handles a request: `pkt` is the held Ethernet frame, `tag` its kind
    /// ([`msg::TAG_OUTBOUND`], [`msg::TAG_INBOUND`], [`msg::TAG_HAIRPIN`]).
    /// On success the packet is translated and starts with the answer
    /// header; on error it is unchanged and the caller drops it (the reason
    /// is already counted in [`NatStats::drops`]).
    pub fn request<P: PacketBuf>(&mut self, pkt: &mut P, tag: u32, now_ms: u64) -> Result<(), NatError> {
        let r = match msg::RequestKind::from_tag(tag) {
            Some(kind) => self.translate(pkt, kind, now_ms),
            None => Err(NatError::WrongKind),
        };
        match r {
            Ok(answer) => {
                if !netwire::grow_front(pkt, ANSWER_LEN) {
                    // Cannot happen with mbufs (128 bytes of headroom): a
                    // packet that cannot carry the answer is malformed.
                    self.stats.drops.inc(NatError::Malformed.drop_reason());
                    return Err(NatError::Malformed);
                }
                answer.encode(pkt.data_mut());
                Ok(())
            }
            Err(e) => {
                self.stats.drops.inc(e.drop_reason());
                Err(e)
            }
        }
    }

    fn translate<P: PacketBuf>(
        &mut self,
        pkt: &mut P,
        kind: msg::RequestKind,
        now_ms: u64,
    ) -> Result<Answer, NatError> {
        use msg::RequestKind::{Hairpin, Inbound, Outbound};
        let ip = pkt.data_mut().get_mut(ethernet::HEADER_LEN..).ok_or(NatError::Malformed)?;
        let flow = translate::parse_flow(ip)?;
        let mut answer = Answer::default();
        match kind {
            Outbound | Hairpin => {
                if kind == Outbound {
                    self.stats.requests_outbound.inc();
                } else {
                    self.stats.requests_hairpin.inc();
                }
                let public = if flow.icmp_error {
                    let b = self.table.lookup_outbound(&flow.key).ok_or(NatError::NoMapping)?;
                    translate::translate_icmp_error_outbound(ip, b.public_addr, b.public_port)?;
                    (b.public_addr, b.public_port)
                } else {
                    let b = self.table.outbound(&flow.key, flow.tcp_flags, now_ms, &mut self.sink)?;
                    translate::rewrite_src(ip, b.public_addr, b.public_port)?;
                    let [out, inb] = msg::entries_of(&b);
                    answer.push(out);
                    if kind == Outbound {
                        answer.push(inb);
                    }
                    (b.public_addr, b.public_port)
                };
                if kind == Hairpin {
                    // The packet now comes from the public endpoint: it is
                    // an inbound packet of the destination's mapping.
                    let key = FlowKey { src: public.0, sport: public.1, ..flow.key };
                    let key = if flow.icmp_error { key } else { translate::flow_key(ip)? };
                    self.inbound(ip, &key, flow.icmp_error, flow.tcp_flags, now_ms, &mut answer, false)?;
                }
            }
            Inbound => {
                self.stats.requests_inbound.inc();
                self.inbound(ip, &flow.key, flow.icmp_error, flow.tcp_flags, now_ms, &mut answer, true)?;
            }
        }
        Ok(answer)
    }

    #[allow(clippy::too_many_arguments)]
    fn inbound(
        &mut self,
        ip: &mut [u8],
        key: &FlowKey,
        icmp_error: bool,
        tcp_flags: u8,
        now_ms: u64,
        answer: &mut Answer,
        both: bool,
    ) -> Result<(), NatError> {
        if icmp_error {
            let b = self.table.lookup_inbound(key)?;
            translate::translate_icmp_error_inbound(ip, b.inside_addr, b.inside_port)
        } else {
            let b = self.table.inbound(key, tcp_flags, now_ms, &mut self.sink)?;
            translate::rewrite_dst(ip, b.inside_addr, b.inside_port)?;
            let [out, inb] = msg::entries_of(&b);
            answer.push(inb);
            if both {
                answer.push(out);
            }
            Ok(())
        }
    }

    /// Applies an activity report's records.
    pub fn touches(&mut self, records: impl Iterator<Item = Touch>) {
        for t in records {
            let Some((direction, key)) = t.key.parts() else {
                self.stats.touches_stale.inc();
                continue;
            };
            if self.table.touch(direction, &key, t.tcp_flags, t.time_ms, &mut self.sink) {
                self.stats.touches.inc();
            } else {
                self.stats.touches_stale.inc();
            }
        }
    }

    /// Retires at most `max` idle sessions (and their mappings; and ends
    /// expired quarantines), then publishes the figures.
    pub fn tick(&mut self, now_ms: u64, max: usize) -> Expired {
        let expired = self.table.expire(now_ms, max, &mut self.sink);
        self.publish();
        expired
    }

    /// Copies the table's counters and sizes to [`NatStats`].
    pub fn publish(&self) {
        let s = &self.stats;
        let t = &self.table;
        let c = t.counters();
        let a = t.alloc().counters();
        s.sessions.set(t.session_count() as u64);
        s.mappings.set(t.mappings() as u64);
        s.subscribers.set(t.alloc().subscribers() as u64);
        s.blocks_allocated.set(t.alloc().blocks_allocated() as u64);
        s.blocks_quarantined.set(t.alloc().blocks_quarantined() as u64);
        s.blocks_free.set(t.alloc().blocks_free());
        s.ports_quarantined.set(t.alloc().ports_quarantined() as u64);
        set(&s.mappings_created, c.mappings_created);
        set(&s.mappings_retired, c.mappings_retired);
        set(&s.sessions_created, c.sessions_created);
        set(&s.sessions_retired, c.sessions_retired);
        set(&s.ports_allocated, a.ports_allocated);
        set(&s.ports_released, a.ports_released);
        set(&s.blocks_allocated_total, a.blocks_allocated);
        set(&s.blocks_released_total, a.blocks_released);
        set(&s.subscriber_limit_hits, a.subscriber_limit);
        set(&s.pool_exhausted, a.pool_exhausted);
        set(&s.ports_preserved, a.ports_preserved);
        set(&s.parity_not_kept, a.parity_not_kept);
    }

    /// Live sessions matching `filter`, at most `limit` (`show nat sessions`).
    /// Retires the sessions `filter` matches; returns how many.
    pub fn retire(&mut self, filter: &SessionFilter, now_ms: u64) -> usize {
        let n = self.table.retire_matching(filter, now_ms, &mut self.sink);
        self.publish();
        n
    }

    pub fn sessions(&self, filter: &SessionFilter, limit: usize) -> Vec<SessionInfo> {
        self.table.sessions(filter).take(limit).collect()
    }
}

/// Sets a counter the mapping core mirrors from the table (single writer).
fn set(c: &Counter, v: u64) {
    c.add(v.wrapping_sub(c.get()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::msg::{decode_touches, encode_touches};
    use crate::nat::session::Direction;
    use crate::nat::tests::small_config;
    use crate::nat::translate::tests::build as pk;
    use crate::nat::translate::Proto;
    use netwire::VecBuf;
    use std::net::Ipv4Addr;

    const IN: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 10);
    const IN2: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 11);
    const SRV: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);

    fn frame(ip: Vec<u8>) -> VecBuf {
        let mut f = vec![0u8; ethernet::HEADER_LEN];
        f[12] = 0x08;
        f.extend(ip);
        VecBuf::from_frame(&f, 0)
    }

    fn mapper() -> Mapper<Vec<NatEvent>> {
        Mapper::new(&small_config(2), Vec::new(), Arc::new(NatStats::default()))
    }

    fn strip(buf: &mut VecBuf) -> Answer {
        let a = Answer::decode(buf.data()).expect("answer header");
        assert!(buf.adj(ANSWER_LEN));
        a
    }

    #[test]
    fn retire_clears_only_what_the_filter_names() {
        let mut m = mapper();
        for sport in [4000, 4001] {
            let mut p = frame(pk::ip(IN, SRV, 17, &[], &pk::udp(IN, SRV, sport, 53, b"q", false)));
            m.request(&mut p, msg::TAG_OUTBOUND, 10).unwrap();
        }
        let mut t = frame(pk::ip(IN, SRV, 6, &[], &pk::tcp(IN, SRV, 5000, 80, 0x02, b"")));
        m.request(&mut t, msg::TAG_OUTBOUND, 10).unwrap();
        assert_eq!(m.table().session_count(), 3);
        let udp = SessionFilter { proto: Some(Proto::Udp), ..SessionFilter::default() };
        assert_eq!(m.retire(&udp, 20), 2);
        assert_eq!(m.table().session_count(), 1);
        assert_eq!(m.stats().sessions.get(), 1, "published at once");
        assert_eq!(m.retire(&SessionFilter::default(), 30), 1);
        assert_eq!((m.table().session_count(), m.table().mappings()), (0, 0));
    }

    #[test]
    fn outbound_request_creates_and_answers_both_entries() {
        let mut m = mapper();
        let mut p = frame(pk::ip(IN, SRV, 17, &[], &pk::udp(IN, SRV, 4000, 53, b"q", false)));
        m.request(&mut p, msg::TAG_OUTBOUND, 10).unwrap();
        let a = strip(&mut p);
        let entries: Vec<_> = a.entries().collect();
        assert_eq!(entries.len(), 2);
        let key = translate::flow_key(&p.data()[ethernet::HEADER_LEN..]).unwrap();
        assert!(m.table().is_public(key.src), "source translated to the pool");
        assert_eq!((key.dst, key.dport), (SRV, 53));
        // The outbound entry rewrites to what the packet now carries.
        let (k, rw) = entries[0];
        assert_eq!(k.parts().unwrap().0, Direction::Outbound);
        assert_eq!((rw.addr, rw.port), (key.src, key.sport));
        assert_eq!(m.table().session_count(), 1);
        m.publish();
        assert_eq!(m.stats().sessions.get(), 1);
        assert_eq!(m.stats().requests_outbound.get(), 1);
        assert!(m.sink().iter().any(|e| matches!(e, NatEvent::Block(_))), "block allocation logged");
    }

    #[test]
    fn inbound_without_mapping_is_refused_and_counted() {
        let mut m = mapper();
        let public = small_config(2).pool[0];
        let ip = pk::ip(SRV, public, 17, &[], &pk::udp(SRV, public, 53, 4000, b"r", false));
        let mut p = frame(ip.clone());
        assert_eq!(m.request(&mut p, msg::TAG_INBOUND, 1), Err(NatError::NoMapping));
        assert_eq!(&p.data()[ethernet::HEADER_LEN..], &ip[..], "unchanged");
        assert_eq!(m.stats().drops.get(crate::stats::DropReason::NatNoMapping), 1);
        assert_eq!(m.request(&mut p, 77, 1), Err(NatError::WrongKind));
    }

    #[test]
    fn return_traffic_and_hairpin() {
        let mut m = mapper();
        // Subscriber 2 opens a mapping (UDP 5000).
        let mut p = frame(pk::ip(IN2, SRV, 17, &[], &pk::udp(IN2, SRV, 5000, 9, b"x", false)));
        m.request(&mut p, msg::TAG_OUTBOUND, 1).unwrap();
        strip(&mut p);
        let pub2 = translate::flow_key(&p.data()[ethernet::HEADER_LEN..]).unwrap();
        // The server answers: inbound request, translated back.
        let mut r = frame(pk::ip(SRV, pub2.src, 17, &[], &pk::udp(SRV, pub2.src, 9, pub2.sport, b"y", false)));
        m.request(&mut r, msg::TAG_INBOUND, 2).unwrap();
        assert_eq!(strip(&mut r).entries().count(), 2);
        let k = translate::flow_key(&r.data()[ethernet::HEADER_LEN..]).unwrap();
        assert_eq!((k.dst, k.dport), (IN2, 5000));
        // Subscriber 1 sends to subscriber 2's public endpoint: hairpin.
        let mut h = frame(pk::ip(IN, pub2.src, 17, &[], &pk::udp(IN, pub2.src, 4000, pub2.sport, b"h", false)));
        m.request(&mut h, msg::TAG_HAIRPIN, 3).unwrap();
        let a = strip(&mut h);
        let k = translate::flow_key(&h.data()[ethernet::HEADER_LEN..]).unwrap();
        assert!(m.table().is_public(k.src), "source is subscriber 1's public endpoint");
        assert_ne!(k.src, IN);
        assert_eq!((k.dst, k.dport), (IN2, 5000), "destination is subscriber 2 itself");
        let dirs: Vec<_> = a.entries().map(|(k, _)| k.parts().unwrap().0).collect();
        assert_eq!(dirs, [Direction::Outbound, Direction::Inbound]);
        assert_eq!(m.stats().requests_hairpin.get(), 1);
    }

    #[test]
    fn icmp_error_lookup_creates_nothing() {
        let mut m = mapper();
        let mut p = frame(pk::ip(IN, SRV, 17, &[], &pk::udp(IN, SRV, 4000, 53, b"q", false)));
        m.request(&mut p, msg::TAG_OUTBOUND, 1).unwrap();
        strip(&mut p);
        let out = p.data()[ethernet::HEADER_LEN..].to_vec();
        let k = translate::flow_key(&out).unwrap();
        // The server says port unreachable, quoting the translated packet.
        let err = pk::ip(SRV, k.src, 1, &[], &pk::icmp_error(3, 3, &out[..28]));
        let mut e = frame(err);
        let sessions = m.table().session_count();
        m.request(&mut e, msg::TAG_INBOUND, 2).unwrap();
        assert_eq!(strip(&mut e).entries().count(), 0, "errors install nothing");
        assert_eq!(m.table().session_count(), sessions);
        let ip = &e.data()[ethernet::HEADER_LEN..];
        assert_eq!(Ipv4Addr::from(<[u8; 4]>::try_from(&ip[16..20]).unwrap()), IN, "outer destination translated");
        // An error about a flow with no mapping is refused.
        let stray = pk::ip(IN, SRV, 17, &[], &pk::udp(IN, SRV, 4001, 53, b"q", false));
        let err = pk::ip(SRV, k.src, 1, &[], &pk::icmp_error(3, 3, &stray[..28]));
        assert!(m.request(&mut frame(err), msg::TAG_INBOUND, 3).is_err());
    }

    #[test]
    fn touches_keep_a_session_alive_and_tick_retires_it() {
        let mut m = mapper();
        let udp_ms = small_config(2).udp_timeout_ms;
        let mut p = frame(pk::ip(IN, SRV, 17, &[], &pk::udp(IN, SRV, 4000, 53, b"q", false)));
        m.request(&mut p, msg::TAG_OUTBOUND, 0).unwrap();
        let (key, rw) = strip(&mut p).entries().next().unwrap();
        // Reports every udp_ms/2 keep it alive past several timeouts.
        let mut now = 0;
        for _ in 0..6 {
            now += udp_ms / 2;
            let t = Touch { key, addr: rw.addr, port: rw.port, tcp_flags: 0, time_ms: now };
            let mut buf = [0u8; 64];
            let n = encode_touches(&[t], &mut buf);
            m.touches(decode_touches(&buf[..n]));
            assert_eq!(m.tick(now, 100).sessions, 0);
        }
        assert_eq!(m.stats().touches.get(), 6);
        let e = m.tick(now + udp_ms, 100);
        assert_eq!((e.sessions, e.mappings), (1, 1));
        assert_eq!(m.stats().sessions.get(), 0);
        assert_eq!(m.stats().mappings_retired.get(), 1);
        // A report about the retired session is recognised as stale.
        m.touches(std::iter::once(Touch {
            key,
            addr: rw.addr,
            port: rw.port,
            tcp_flags: 0,
            time_ms: now + udp_ms + 1,
        }));
        assert_eq!(m.stats().touches_stale.get(), 1);
    }

    #[test]
    fn listing_filters() {
        let mut m = mapper();
        for (src, port) in [(IN, 1000), (IN, 1001), (IN2, 1000)] {
            let mut p = frame(pk::ip(src, SRV, 6, &[], &pk::tcp(src, SRV, port, 80, translate::tcp_flags::SYN, b"")));
            m.request(&mut p, msg::TAG_OUTBOUND, 0).unwrap();
        }
        let all = SessionFilter::default();
        assert_eq!(m.sessions(&all, 100).len(), 3);
        assert_eq!(m.sessions(&all, 2).len(), 2);
        let one = SessionFilter { inside_addr: Some(IN2), ..Default::default() };
        let s = m.sessions(&one, 100);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].binding.proto, Proto::Tcp);
        assert_eq!(s[0].binding.inside_port, 1000);
    }
}

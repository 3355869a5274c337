//! Who answers ARP for the NAT pool, and the announcements when that changes.
//!
//! A single NAT host serves its whole pool: the control core answers ARP
//! requests for every pool address that lies on an outside port's subnet (an
//! on-link pool), so hosts on that segment reach the pool without a route.
//! In a NAT cluster (docs/nat-ha.md) a shard's addresses are served by the
//! host active for the shard and by no other: [`PoolServer`] says which
//! addresses this host serves now, and
//!
//! * ARP requests for a pool address it does not serve are not answered (they
//!   count as `arp_not_for_us`), so exactly one host answers for each address;
//! * when it starts serving an on-link pool address (a takeover, a graceful
//!   handover, its first view after start), it announces the address on the
//!   port: an RFC 5227 ARP announcement (a broadcast request whose sender and
//!   target are the address, sender hardware address the port's MAC),
//!   [`ANNOUNCE_NUM`] times [`ANNOUNCE_INTERVAL_MS`] apart. Neighbours that
//!   hold the old owner's MAC take the new one: Linux updates an existing entry
//!   from any ARP packet of that sender, except within `locktime` (1 s by
//!   default) of the entry's last update, which the later announcements cover.
//!
//! The pool is IPv4 (NAT44): there is no unsolicited neighbour advertisement
//! to send. Limits: ownership is read every [`CHECK_MS`], so a host answers
//! for at most that long after it lost a shard (the new owner's announcements
//! come after its takeover and override such a late answer); announcements go
//! out only where the pool is on-link: a routed pool follows the routers' next
//! hops instead.

use std::net::Ipv4Addr;

use netwire::{arp, ethernet, MacAddr, PacketBuf, PacketPool};

use crate::nat::fast::Role;
use crate::pipeline::Pipeline;
use crate::stats::{ControlCounters, DropReason};

/// Announcements per address when a host starts serving it (RFC 5227's
/// ANNOUNCE_NUM).
pub const ANNOUNCE_NUM: u32 = 3;
/// Time between them (RFC 5227 says 2 s; 1 s gets the new owner into
/// neighbours' caches sooner and still spans Linux's 1 s locktime).
pub const ANNOUNCE_INTERVAL_MS: u64 = 1000;
/// How often the ownership is read.
pub const CHECK_MS: u64 = 10;

/// Which NAT pool addresses this host serves now.
pub trait PoolServer: Send {
    /// True when this host serves pool address `a` now.
    fn serves(&self, a: Ipv4Addr) -> bool;
}

/// Per on-link pool address: its port, whether it was served at the last
/// check, and the announcements still to send.
struct Target {
    port: u16,
    addr: Ipv4Addr,
    served: bool,
    left: u32,
    next_ms: u64,
}

/// The slow path's view of pool ownership (present in a NAT cluster).
pub(super) struct Announcer {
    server: Box<dyn PoolServer>,
    targets: Vec<Target>,
    next_check_ms: u64,
}

impl Announcer {
    pub(super) fn new(server: Box<dyn PoolServer>, pipeline: &Pipeline) -> Announcer {
        let mut a = Announcer { server, targets: Vec::new(), next_check_ms: 0 };
        a.rebuild(pipeline);
        a
    }

    pub(super) fn serves(&self, a: Ipv4Addr) -> bool {
        self.server.serves(a)
    }

    /// Every pool address on an outside port's subnet, with that port: at
    /// start and for each new pipeline (an address and port that stay keep
    /// their state).
    pub(super) fn rebuild(&mut self, pipeline: &Pipeline) {
        let Some(nat) = pipeline.nat() else {
            self.targets.clear();
            return;
        };
        let mut targets = Vec::new();
        for (port, info) in pipeline.ports().iter().enumerate() {
            if nat.roles.get(port) != Some(&Role::Outside) {
                continue;
            }
            for &addr in &nat.pool {
                if info.on_link(addr.into()) {
                    let old = self.targets.iter().find(|t| t.addr == addr && usize::from(t.port) == port);
                    let (served, left, next_ms) = old.map_or((false, 0, 0), |t| (t.served, t.left, t.next_ms));
                    targets.push(Target { port: port as u16, addr, served, left, next_ms });
                }
            }
        }
        self.targets = targets;
    }

    /// Reads the ownership (every [`CHECK_MS`]) and sends the announcements
    /// that are due.
    pub(super) fn tick<P: PacketBuf, Pool: PacketPool<Buf = P>>(
        &mut self,
        pipeline: &Pipeline,
        counters: &ControlCounters,
        now_ms: u64,
        pool: &mut Pool,
        send: &mut dyn FnMut(P),
    ) {
        if now_ms < self.next_check_ms {
            return;
        }
        self.next_check_ms = now_ms + CHECK_MS;
        for t in &mut self.targets {
            let served = self.server.serves(t.addr);
            if served && !t.served {
                t.left = ANNOUNCE_NUM;
                t.next_ms = now_ms;
            } else if !served {
                t.left = 0;
            }
            t.served = served;
            if t.left == 0 || now_ms < t.next_ms {
                continue;
            }
            let Some(mut out) = pool.alloc() else {
                counters.drops.inc(DropReason::NoMbuf);
                continue;
            };
            let mac = MacAddr(pipeline.ports()[usize::from(t.port)].mac);
            if !out.set_len(60) {
                continue;
            }
            let data = out.data_mut();
            data.fill(0);
            let ok = ethernet::emit_header(data, MacAddr::BROADCAST, mac, ethernet::EtherType::ARP).is_ok()
                && arp::emit_request(&mut data[ethernet::HEADER_LEN..], mac, t.addr, t.addr).is_ok();
            if ok {
                out.set_port(t.port);
                counters.arp_announcements_sent.inc();
                send(out);
                t.left -= 1;
                t.next_ms = now_ms + ANNOUNCE_INTERVAL_MS;
            }
        }
    }
}

//! The neighbour table: IP → MAC per port, for ARP (IPv4) and neighbour
//! discovery (IPv6).
//!
//! # Sharing
//! One writer (the control lcore: it alone handles ARP/ND and resolution) and
//! many readers (the workers, on every forwarded packet). Readers never write
//! shared memory, so the table costs them no cache-line transfers; they see a
//! consistent entry through a per-slot sequence lock built from atomics:
//! the writer makes the sequence odd, writes the fields, makes it even again;
//! a reader retries while the sequence is odd or changed under it.
//! The single-writer rule is enforced by types: only the one
//! [`NeighborWriter`] can change the table.
//!
//! # Layout and limits
//! Open addressing with linear probing over `2 * entries_max` slots rounded
//! up to a power of two, so the load factor stays at or below one half.
//! Entries are never removed, only moved between states (a neighbour that
//! stops answering becomes `Failed` and keeps its slot for the next attempt),
//! so probing needs no tombstones. At most `entries_max` distinct neighbours;
//! one more is refused with [`NeighborError::Full`] and counted by the caller.
//! IPv4 addresses are keyed as IPv4-mapped IPv6 addresses (::ffff:a.b.c.d).

use std::net::IpAddr;
use std::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// The state of a neighbour entry (RFC 4861 §7.3.2, simplified: the control
/// plane refreshes `Reachable` entries itself instead of using DELAY/PROBE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum NeighborState {
    /// Resolution in progress: no MAC yet.
    Incomplete = 1,
    /// Resolved and confirmed recently.
    Reachable = 2,
    /// Resolved, confirmation older than `reachable_ms`; still used while it
    /// is being refreshed.
    Stale = 3,
    /// Configured; never aged.
    Static = 4,
    /// Resolution failed; packets to it are dropped until it answers.
    Failed = 5,
}

impl NeighborState {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Incomplete,
            2 => Self::Reachable,
            3 => Self::Stale,
            4 => Self::Static,
            5 => Self::Failed,
            _ => return None,
        })
    }

    /// True when packets may be sent to the entry's MAC.
    pub fn is_usable(self) -> bool {
        matches!(self, Self::Reachable | Self::Stale | Self::Static)
    }

    /// Lower-case name used in metrics and listings.
    pub fn name(self) -> &'static str {
        match self {
            Self::Incomplete => "incomplete",
            Self::Reachable => "reachable",
            Self::Stale => "stale",
            Self::Static => "static",
            Self::Failed => "failed",
        }
    }

    pub const ALL: [NeighborState; 5] = [Self::Incomplete, Self::Reachable, Self::Stale, Self::Static, Self::Failed];
}

/// A snapshot of one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighborEntry {
    pub port: u16,
    pub ip: IpAddr,
    pub mac: [u8; 6],
    pub state: NeighborState,
    /// When the state last changed or was confirmed (control-plane clock, ms).
    pub updated_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NeighborError {
    #[error("neighbour table full ({0} entries)")]
    Full(usize),
}

/// Key of an IP address in the table.
#[inline]
pub fn ip_key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn key_ip(key: u128) -> IpAddr {
    let v6 = std::net::Ipv6Addr::from(key);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

#[repr(align(64))]
#[derive(Default)]
struct Slot {
    /// Sequence lock: odd while the writer is changing the slot; 0 = empty.
    seq: AtomicU64,
    key_hi: AtomicU64,
    key_lo: AtomicU64,
    /// port (16 bits) << 48 | MAC (48 bits).
    port_mac: AtomicU64,
    /// state (8 bits) << 56 | updated_ms (56 bits).
    state_time: AtomicU64,
}

/// The table, shared by `Arc` between the writer and the readers.
pub struct NeighborTable {
    slots: Box<[Slot]>,
    mask: usize,
    entries_max: usize,
    len: AtomicUsize,
    /// Longest probe sequence the writer has made: readers stop after it.
    max_probe: AtomicUsize,
}

#[inline]
fn hash(port: u16, key: u128) -> u64 {
    // A multiply-xorshift mix: fast, and good enough for addresses that differ
    // mostly in their low bits.
    let mut h = (key as u64) ^ ((key >> 64) as u64).rotate_left(29) ^ (u64::from(port) << 48);
    h = h.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^ (h >> 32)
}

#[inline]
fn pack_mac(port: u16, mac: [u8; 6]) -> u64 {
    let mut v = u64::from(port) << 48;
    for (i, b) in mac.iter().enumerate() {
        v |= u64::from(*b) << (40 - 8 * i);
    }
    v
}

#[inline]
fn unpack_mac(v: u64) -> (u16, [u8; 6]) {
    let mut mac = [0u8; 6];
    for (i, b) in mac.iter_mut().enumerate() {
        *b = (v >> (40 - 8 * i)) as u8;
    }
    ((v >> 48) as u16, mac)
}

/// The state byte of a removed entry (not a [`NeighborState`]: readers see
/// no entry).
const REMOVED: u8 = 0;

struct RawEntry {
    key: u128,
    port: u16,
    mac: [u8; 6],
    state: u8,
    updated_ms: u64,
}

impl NeighborTable {
    /// Creates an empty table for up to `entries_max` neighbours, and its
    /// one writer.
    pub fn new(entries_max: usize) -> (Arc<NeighborTable>, NeighborWriter) {
        let entries_max = entries_max.max(1);
        let slots_len = (entries_max * 2).next_power_of_two();
        let slots: Box<[Slot]> = (0..slots_len).map(|_| Slot::default()).collect();
        let table = Arc::new(NeighborTable {
            slots,
            mask: slots_len - 1,
            entries_max,
            len: AtomicUsize::new(0),
            max_probe: AtomicUsize::new(0),
        });
        (table.clone(), NeighborWriter { table })
    }

    /// Number of entries (any state).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.entries_max
    }

    /// Reads one slot consistently. `None` when the slot is empty.
    #[inline]
    fn read_slot(slot: &Slot) -> Option<RawEntry> {
        loop {
            let s1 = slot.seq.load(Ordering::Acquire);
            if s1 == 0 {
                return None;
            }
            if s1 & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let hi = slot.key_hi.load(Ordering::Relaxed);
            let lo = slot.key_lo.load(Ordering::Relaxed);
            let pm = slot.port_mac.load(Ordering::Relaxed);
            let st = slot.state_time.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if slot.seq.load(Ordering::Relaxed) == s1 {
                let (port, mac) = unpack_mac(pm);
                return Some(RawEntry {
                    key: (u128::from(hi) << 64) | u128::from(lo),
                    port,
                    mac,
                    state: (st >> 56) as u8,
                    updated_ms: st & ((1 << 56) - 1),
                });
            }
        }
    }

    /// Finds the slot index of (port, key), or `None`.
    #[inline]
    fn find(&self, port: u16, key: u128) -> Option<(usize, RawEntry)> {
        let max_probe = self.max_probe.load(Ordering::Acquire);
        let mut i = hash(port, key) as usize & self.mask;
        for _ in 0..=max_probe {
            match Self::read_slot(&self.slots[i]) {
                None => return None,
                Some(e) if e.key == key && e.port == port => return Some((i, e)),
                Some(_) => i = (i + 1) & self.mask,
            }
        }
        None
    }

    /// The MAC to send to `ip` on `port`, if the neighbour is resolved.
    /// This is the fast-path lookup: reads only, no locks.
    #[inline]
    pub fn lookup(&self, port: u16, ip: IpAddr) -> Option<[u8; 6]> {
        self.lookup_key(port, ip_key(ip))
    }

    /// As [`NeighborTable::lookup`], with the key already computed.
    #[inline]
    pub fn lookup_key(&self, port: u16, key: u128) -> Option<[u8; 6]> {
        let (_, e) = self.find(port, key)?;
        match NeighborState::from_u8(e.state) {
            Some(s) if s.is_usable() => Some(e.mac),
            _ => None,
        }
    }

    /// The whole entry for (port, ip).
    pub fn get(&self, port: u16, ip: IpAddr) -> Option<NeighborEntry> {
        let (_, e) = self.find(port, ip_key(ip))?;
        Some(NeighborEntry {
            port: e.port,
            ip: key_ip(e.key),
            mac: e.mac,
            state: NeighborState::from_u8(e.state)?,
            updated_ms: e.updated_ms,
        })
    }

    /// Every entry, in slot order (for listings and metrics).
    pub fn entries(&self) -> impl Iterator<Item = NeighborEntry> + '_ {
        self.slots.iter().filter_map(|s| {
            let e = Self::read_slot(s)?;
            Some(NeighborEntry {
                port: e.port,
                ip: key_ip(e.key),
                mac: e.mac,
                state: NeighborState::from_u8(e.state)?,
                updated_ms: e.updated_ms,
            })
        })
    }
}

/// The one handle that changes a [`NeighborTable`]. Not `Clone`.
pub struct NeighborWriter {
    table: Arc<NeighborTable>,
}

impl NeighborWriter {
    pub fn table(&self) -> &Arc<NeighborTable> {
        &self.table
    }

    /// Creates or updates the entry for (port, ip). A `Static` entry is only
    /// replaced by another `Static` one (learning never overrides
    /// configuration).
    pub fn set(
        &mut self,
        port: u16,
        ip: IpAddr,
        mac: [u8; 6],
        state: NeighborState,
        now_ms: u64,
    ) -> Result<(), NeighborError> {
        let t = &*self.table;
        let key = ip_key(ip);
        let mut i = hash(port, key) as usize & t.mask;
        // The first removed entry on the way: reused when the key is new.
        let mut hole: Option<(usize, usize)> = None;
        let mut free = None;
        for probe in 0..=t.mask {
            let slot = &t.slots[i];
            match NeighborTable::read_slot(slot) {
                Some(e) if e.key == key && e.port == port => {
                    if e.state == NeighborState::Static as u8 && state != NeighborState::Static {
                        return Ok(());
                    }
                    if e.state == REMOVED {
                        if t.len.load(Ordering::Relaxed) >= t.entries_max {
                            return Err(NeighborError::Full(t.entries_max));
                        }
                        t.len.fetch_add(1, Ordering::Relaxed);
                    }
                    Self::write_slot(slot, key, port, mac, state as u8, now_ms);
                    return Ok(());
                }
                Some(e) => {
                    if e.state == REMOVED && hole.is_none() {
                        hole = Some((i, probe));
                    }
                    i = (i + 1) & t.mask;
                }
                None => {
                    free = Some((i, probe));
                    break;
                }
            }
        }
        // A new key: the first removed slot on its probe sequence, else the
        // empty one that ended it (a table of removed slots has no empty one).
        let Some((i, probe)) = hole.or(free) else {
            return Err(NeighborError::Full(t.entries_max));
        };
        if t.len.load(Ordering::Relaxed) >= t.entries_max {
            return Err(NeighborError::Full(t.entries_max));
        }
        // Publish the probe length before the entry so that a reader that
        // can see the entry also probes far enough.
        if probe > t.max_probe.load(Ordering::Relaxed) {
            t.max_probe.store(probe, Ordering::Release);
        }
        Self::write_slot(&t.slots[i], key, port, mac, state as u8, now_ms);
        t.len.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Removes the entry for (port, ip), static or not; false if there is
    /// none. The slot keeps its key marked removed (readers probing past it
    /// still find what lies beyond) until a new entry reuses it.
    pub fn remove(&mut self, port: u16, ip: IpAddr) -> bool {
        let t = &*self.table;
        match t.find(port, ip_key(ip)) {
            Some((i, e)) if e.state != REMOVED => {
                Self::write_slot(&t.slots[i], e.key, port, e.mac, REMOVED, 0);
                t.len.fetch_sub(1, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }

    /// Removes every entry that is not static; returns how many.
    pub fn remove_learned(&mut self) -> usize {
        let learned: Vec<(u16, IpAddr)> =
            self.table.entries().filter(|e| e.state != NeighborState::Static).map(|e| (e.port, e.ip)).collect();
        learned.into_iter().filter(|&(port, ip)| self.remove(port, ip)).count()
    }

    /// Changes only the state (and time) of an existing entry, keeping its
    /// MAC. Returns false if there is no such entry. Static entries keep
    /// their state.
    pub fn set_state(&mut self, port: u16, ip: IpAddr, state: NeighborState, now_ms: u64) -> bool {
        let t = &*self.table;
        match t.find(port, ip_key(ip)) {
            Some((i, e)) => {
                if e.state == REMOVED {
                    return false;
                }
                if e.state != NeighborState::Static as u8 {
                    Self::write_slot(&t.slots[i], e.key, port, e.mac, state as u8, now_ms);
                }
                true
            }
            None => false,
        }
    }

    fn write_slot(slot: &Slot, key: u128, port: u16, mac: [u8; 6], state: u8, now_ms: u64) {
        let s = slot.seq.load(Ordering::Relaxed);
        // An empty slot has seq 0; its first write goes 1 (odd) then 2.
        slot.seq.store(s + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        slot.key_hi.store((key >> 64) as u64, Ordering::Relaxed);
        slot.key_lo.store(key as u64, Ordering::Relaxed);
        slot.port_mac.store(pack_mac(port, mac), Ordering::Relaxed);
        slot.state_time.store((u64::from(state) << 56) | (now_ms & ((1 << 56) - 1)), Ordering::Relaxed);
        slot.seq.store(s + 2, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const M1: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const M2: [u8; 6] = [2, 0, 0, 0, 0, 2];

    #[test]
    fn insert_lookup_update() {
        let (t, mut w) = NeighborTable::new(16);
        let a = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
        assert_eq!(t.lookup(0, a), None);
        w.set(0, a, M1, NeighborState::Reachable, 5).unwrap();
        assert_eq!(t.lookup(0, a), Some(M1));
        assert_eq!(t.lookup(1, a), None, "the port is part of the key");
        w.set(0, a, M2, NeighborState::Stale, 6).unwrap();
        assert_eq!(t.lookup(0, a), Some(M2));
        assert_eq!(t.len(), 1);
        let e = t.get(0, a).unwrap();
        assert_eq!((e.ip, e.state, e.updated_ms), (a, NeighborState::Stale, 6));
    }

    #[test]
    fn unusable_states_are_not_returned() {
        let (t, mut w) = NeighborTable::new(16);
        let a = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2));
        w.set(3, a, [0; 6], NeighborState::Incomplete, 0).unwrap();
        assert_eq!(t.lookup(3, a), None);
        w.set(3, a, M1, NeighborState::Reachable, 1).unwrap();
        assert!(w.set_state(3, a, NeighborState::Failed, 2));
        assert_eq!(t.lookup(3, a), None);
        assert!(w.set_state(3, a, NeighborState::Stale, 3));
        assert_eq!(t.lookup(3, a), Some(M1), "set_state keeps the MAC");
    }

    #[test]
    fn static_entries_are_not_overridden_by_learning() {
        let (t, mut w) = NeighborTable::new(16);
        let a = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2));
        w.set(1, a, M1, NeighborState::Static, 0).unwrap();
        w.set(1, a, M2, NeighborState::Reachable, 1).unwrap();
        assert!(w.set_state(1, a, NeighborState::Failed, 2));
        assert_eq!(t.lookup(1, a), Some(M1));
        assert_eq!(t.get(1, a).unwrap().state, NeighborState::Static);
    }

    #[test]
    fn removed_entries_are_gone_and_their_slots_reused() {
        let (t, mut w) = NeighborTable::new(2);
        let a = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
        let b = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 3));
        w.set(0, a, M1, NeighborState::Static, 0).unwrap();
        w.set(0, b, M2, NeighborState::Reachable, 0).unwrap();
        assert!(w.remove(0, a), "static entries can be removed by the operator");
        assert!(!w.remove(0, a));
        assert_eq!((t.lookup(0, a), t.get(0, a), t.len()), (None, None, 1));
        assert_eq!(t.lookup(0, b), Some(M2), "entries beyond a removed one are still found");
        assert!(!w.set_state(0, a, NeighborState::Stale, 1));
        w.set(0, a, M2, NeighborState::Reachable, 2).unwrap();
        assert_eq!((t.lookup(0, a), t.len()), (Some(M2), 2));
        assert_eq!(
            w.set(0, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 4)), M1, NeighborState::Reachable, 3),
            Err(NeighborError::Full(2))
        );
        assert_eq!(w.remove_learned(), 2);
        assert!(t.is_empty() && t.entries().count() == 0);
        for k in 0..50u8 {
            let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10 + k));
            w.set(1, ip, M1, NeighborState::Reachable, 4).unwrap();
            assert!(w.remove(1, ip));
        }
        // Every slot has held a key by now: new keys still find room.
        w.set(1, a, M1, NeighborState::Reachable, 5).unwrap();
        w.set(1, b, M1, NeighborState::Reachable, 5).unwrap();
        assert_eq!((t.lookup(1, a), t.lookup(1, b), t.len()), (Some(M1), Some(M1), 2));
    }

    #[test]
    fn full_table_refuses_new_entries_but_updates_old() {
        let (t, mut w) = NeighborTable::new(4);
        for i in 0..4u8 {
            w.set(0, IpAddr::V4(Ipv4Addr::new(10, 0, 0, i)), M1, NeighborState::Reachable, 0).unwrap();
        }
        let extra = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9));
        assert_eq!(w.set(0, extra, M1, NeighborState::Reachable, 0), Err(NeighborError::Full(4)));
        w.set(0, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3)), M2, NeighborState::Reachable, 0).unwrap();
        assert_eq!(t.lookup(0, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3))), Some(M2));
        assert_eq!(t.entries().count(), 4);
    }

    #[test]
    fn v4_and_v6_keys_round_trip() {
        let (t, mut w) = NeighborTable::new(8);
        let a = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
        let b = IpAddr::V6("2001:db8:1::7".parse().unwrap());
        w.set(0, a, M1, NeighborState::Reachable, 0).unwrap();
        w.set(0, b, M2, NeighborState::Reachable, 0).unwrap();
        let mut ips: Vec<IpAddr> = t.entries().map(|e| e.ip).collect();
        ips.sort();
        assert_eq!(ips, vec![a, b]);
    }

    #[test]
    fn many_entries_with_collisions() {
        let (t, mut w) = NeighborTable::new(1000);
        for i in 0..1000u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(0xc000_0000 + i * 256));
            let mac = [2, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8, 9];
            w.set((i % 3) as u16, ip, mac, NeighborState::Reachable, 0).unwrap();
        }
        for i in 0..1000u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(0xc000_0000 + i * 256));
            let mac = [2, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8, 9];
            assert_eq!(t.lookup((i % 3) as u16, ip), Some(mac), "entry {i}");
        }
    }

    #[test]
    fn readers_never_see_torn_entries() {
        // One writer flips an entry between two MACs while readers check that
        // what they see is always one of the two, never a mix.
        let (t, mut w) = NeighborTable::new(8);
        let a = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
        let ma = [0xaa; 6];
        let mb = [0x55; 6];
        w.set(0, a, ma, NeighborState::Reachable, 0).unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let started = Arc::new(AtomicUsize::new(0));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (t, stop, started) = (t.clone(), stop.clone(), started.clone());
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    loop {
                        let m = t.lookup(0, a).expect("entry stays usable");
                        assert!(m == ma || m == mb, "torn read {m:?}");
                        n += 1;
                        if n == 1 {
                            started.fetch_add(1, Ordering::SeqCst);
                        }
                        if stop.load(Ordering::Relaxed) {
                            return n;
                        }
                    }
                })
            })
            .collect();
        // Both readers run before the writer starts (on a loaded machine a
        // reader thread may otherwise not run at all while the writer does).
        while started.load(Ordering::SeqCst) < 2 {
            std::thread::yield_now();
        }
        for i in 0..200_000u64 {
            w.set(0, a, if i % 2 == 0 { mb } else { ma }, NeighborState::Reachable, i).unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
    }
}

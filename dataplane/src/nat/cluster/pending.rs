//! Packets parked on the mapping lcore while a remote mapping server answers
//! (or while their shard has no reachable owner): a fixed table of slots,
//! named by an id that carries a generation, so a late reply to a freed
//! slot is recognised.

use crate::nat::msg::{Answer, RequestKind};
use crate::nat::session::Direction;
use crate::nat::translate::FlowKey;

/// What a held packet still needs (one step: an outbound or inbound
/// decision; a hairpin has two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Job {
    pub worker: u8,
    pub kind: RequestKind,
    pub icmp_error: bool,
    pub tcp_flags: u8,
    /// The step to do next.
    pub dir: Direction,
    /// The key of that step.
    pub key: FlowKey,
    /// Cache entries gathered so far.
    pub answer: Answer,
    /// When the worker's request arrived (µs).
    pub started_us: u64,
}

/// A parked packet.
#[derive(Debug)]
pub struct Parked<P> {
    pub pkt: P,
    pub job: Job,
    pub shard: u16,
    /// The host the request went to; 0: waiting for an owner.
    pub sent_to: u16,
    pub sent_us: u64,
    pub deadline_ms: u64,
    /// Times it was sent (re-routing is bounded).
    pub sends: u8,
}

/// The table. See the module doc.
#[derive(Debug)]
pub struct Pending<P> {
    slots: Vec<Option<Parked<P>>>,
    generations: Vec<u16>,
    free: Vec<u32>,
}

impl<P> Pending<P> {
    /// A table of `capacity` slots (at most 65 536).
    pub fn new(capacity: usize) -> Pending<P> {
        let capacity = capacity.clamp(1, 1 << 16);
        Pending {
            slots: (0..capacity).map(|_| None).collect(),
            generations: vec![0; capacity],
            free: (0..capacity as u32).rev().collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_full(&self) -> bool {
        self.free.is_empty()
    }

    /// Parks `p`; returns its id, or gives it back when the table is full.
    #[allow(clippy::result_large_err)] // the packet comes back to be counted and freed
    pub fn insert(&mut self, p: Parked<P>) -> Result<u32, Parked<P>> {
        let Some(slot) = self.free.pop() else { return Err(p) };
        self.slots[slot as usize] = Some(p);
        Ok(u32::from(self.generations[slot as usize]) << 16 | slot)
    }

    fn slot_of(&self, id: u32) -> Option<usize> {
        let slot = (id & 0xffff) as usize;
        (slot < self.slots.len() && u32::from(self.generations[slot]) == id >> 16).then_some(slot)
    }

    pub fn get_mut(&mut self, id: u32) -> Option<&mut Parked<P>> {
        let slot = self.slot_of(id)?;
        self.slots[slot].as_mut()
    }

    /// Takes the packet out; its id is no longer valid.
    pub fn remove(&mut self, id: u32) -> Option<Parked<P>> {
        let slot = self.slot_of(id)?;
        let p = self.slots[slot].take()?;
        self.generations[slot] = self.generations[slot].wrapping_add(1);
        self.free.push(slot as u32);
        Some(p)
    }

    /// Ids of the parked packets for which `pick` says yes, into `out`
    /// (cleared first; its capacity is reused).
    pub fn select(&self, out: &mut Vec<u32>, mut pick: impl FnMut(&Parked<P>) -> bool) {
        out.clear();
        for (slot, p) in self.slots.iter().enumerate() {
            if let Some(p) = p.as_ref().filter(|p| pick(p)) {
                let _ = p;
                out.push(u32::from(self.generations[slot]) << 16 | slot as u32);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::translate::Proto;
    use std::net::Ipv4Addr;

    fn parked(v: u32) -> Parked<u32> {
        Parked {
            pkt: v,
            job: Job {
                worker: 0,
                kind: RequestKind::Outbound,
                icmp_error: false,
                tcp_flags: 0,
                dir: Direction::Outbound,
                key: FlowKey {
                    proto: Proto::Udp,
                    src: Ipv4Addr::new(100, 64, 0, 1),
                    sport: 1,
                    dst: Ipv4Addr::new(203, 0, 113, 1),
                    dport: 2,
                },
                answer: Answer::default(),
                started_us: 0,
            },
            shard: 0,
            sent_to: 0,
            sent_us: 0,
            deadline_ms: 0,
            sends: 0,
        }
    }

    #[test]
    fn ids_carry_a_generation_and_the_table_is_bounded() {
        let mut t = Pending::new(2);
        let a = t.insert(parked(1)).unwrap();
        let b = t.insert(parked(2)).unwrap();
        assert!(t.is_full());
        assert_eq!(t.insert(parked(3)).unwrap_err().pkt, 3);
        assert_eq!(t.remove(a).unwrap().pkt, 1);
        assert!(t.remove(a).is_none(), "twice");
        let c = t.insert(parked(4)).unwrap();
        assert_ne!(a, c, "same slot, new generation");
        assert!(t.get_mut(a).is_none(), "a late reply to the old id finds nothing");
        let mut ids = Vec::new();
        t.select(&mut ids, |p| p.pkt == 2);
        assert_eq!(ids, [b]);
        assert_eq!(t.len(), 2);
        assert!(t.get_mut(0xffff_0000 | 7).is_none());
    }
}

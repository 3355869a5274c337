//! Run-time table changes without stopping the workers or locking on the
//! fast path, the way DPDK's RCU library does it (`rte_rcu_qsbr`).
//!
//! The control core builds a new table (a whole [`dataplane::pipeline::Pipeline`])
//! and [`Published::publish`]es it: one atomic pointer swap plus a
//! generation bump. Each worker holds a [`Reader`]: at the top of its poll
//! loop (its quiescent point: no packet is being processed, no reference
//! into the table is held) it calls [`Reader::refresh`], which takes the new
//! table if the generation moved and reports the generation it has reached.
//! The control core keeps the replaced table until every reader has reached
//! the generation that replaced it ([`Published::reclaim`]); only then is
//! it dropped, on the control core, never on a worker.
//!
//! Costs on the fast path: one relaxed load of the generation and one
//! store of the reader's own (cache-line padded) counter per loop; when a
//! table changed, one lock-free `ArcSwap` load.
//!
//! Invariants: a worker uses one table for a whole loop iteration (bursts
//! never see two tables); a table is freed only after every reader has
//! passed a quiescent point after its replacement; readers that are idle
//! still pass quiescent points (the idle back-off sleeps inside the loop).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

/// A reader's progress, on its own cache line.
#[repr(align(64))]
#[derive(Default)]
struct Seen(AtomicU64);

/// A table published to workers.
pub struct Published<T> {
    current: ArcSwap<T>,
    generation: AtomicU64,
    readers: Vec<Seen>,
    /// Replaced tables and the generation that replaced them.
    retired: Mutex<Vec<(u64, Arc<T>)>>,
}

impl<T> Published<T> {
    /// A cell holding `initial` for `readers` readers (indices `0..readers`).
    pub fn new(initial: Arc<T>, readers: usize) -> Arc<Published<T>> {
        Arc::new(Published {
            current: ArcSwap::new(initial),
            generation: AtomicU64::new(0),
            readers: (0..readers).map(|_| Seen::default()).collect(),
            retired: Mutex::new(Vec::new()),
        })
    }

    /// The table now.
    pub fn load(&self) -> Arc<T> {
        self.current.load_full()
    }

    /// The current generation.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Replaces the table; returns the new generation. The old table is
    /// kept until [`Published::reclaim`] finds every reader past it.
    pub fn publish(&self, table: Arc<T>) -> u64 {
        let old = self.current.swap(table);
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        self.retired.lock().expect("not poisoned").push((generation, old));
        generation
    }

    /// The lowest generation every reader has reached.
    pub fn reached(&self) -> u64 {
        self.readers.iter().map(|r| r.0.load(Ordering::Acquire)).min().unwrap_or(u64::MAX)
    }

    /// Drops the replaced tables no reader can still use; returns how many
    /// are still waiting. Call from the control core.
    pub fn reclaim(&self) -> usize {
        let reached = self.reached();
        let mut retired = self.retired.lock().expect("not poisoned");
        retired.retain(|(generation, _)| *generation > reached);
        retired.len()
    }

    /// Reader `index`'s handle (one per worker; `index < readers`).
    pub fn reader(self: &Arc<Self>, index: usize) -> Reader<T> {
        assert!(index < self.readers.len(), "reader {index} of {}", self.readers.len());
        let generation = self.generation();
        self.readers[index].0.store(generation, Ordering::Release);
        Reader { cell: self.clone(), index, generation, table: self.load() }
    }
}

/// A worker's view of a [`Published`] table.
pub struct Reader<T> {
    cell: Arc<Published<T>>,
    index: usize,
    generation: u64,
    table: Arc<T>,
}

impl<T> Reader<T> {
    /// The table this reader uses until its next [`Reader::refresh`].
    #[inline]
    pub fn get(&self) -> &Arc<T> {
        &self.table
    }

    /// A quiescent point: takes a newer table if there is one and reports
    /// the generation reached. Call where no reference into the table is held.
    #[inline]
    pub fn refresh(&mut self) {
        let generation = self.cell.generation.load(Ordering::Acquire);
        if generation != self.generation {
            self.table = self.cell.current.load_full();
            self.generation = generation;
        }
        self.cell.readers[self.index].0.store(generation, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_tables_live_until_every_reader_passed() {
        let cell = Published::new(Arc::new(1u32), 2);
        let mut a = cell.reader(0);
        let mut b = cell.reader(1);
        let gen = cell.publish(Arc::new(2));
        assert_eq!((gen, **a.get(), **b.get()), (1, 1, 1), "readers keep their table until they refresh");
        assert_eq!(cell.reclaim(), 1, "nobody has passed yet");
        a.refresh();
        assert_eq!(**a.get(), 2);
        assert_eq!(cell.reclaim(), 1, "b may still use the old table");
        b.refresh();
        assert_eq!((cell.reached(), cell.reclaim()), (1, 0));
        let old = Arc::new(3u32);
        cell.publish(old.clone());
        cell.publish(Arc::new(4));
        a.refresh();
        b.refresh();
        assert_eq!(**b.get(), 4, "a reader skips straight to the newest table");
        assert_eq!(cell.reclaim(), 0);
        assert_eq!(Arc::strong_count(&old), 1, "the replaced table was dropped by reclaim");
    }

    #[test]
    fn readers_on_other_threads_see_the_new_table() {
        let cell = Published::new(Arc::new(0u64), 1);
        let mut r = cell.reader(0);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let t = std::thread::spawn(move || {
            let mut last = 0;
            while !s.load(Ordering::Relaxed) {
                r.refresh();
                assert!(**r.get() >= last, "tables never go back");
                last = **r.get();
            }
            last
        });
        for v in 1..=1000u64 {
            cell.publish(Arc::new(v));
            cell.reclaim();
        }
        while cell.reached() < 1000 {
            std::thread::yield_now();
        }
        stop.store(true, Ordering::Relaxed);
        assert_eq!(t.join().unwrap(), 1000);
        assert_eq!(cell.reclaim(), 0);
    }
}

use std::ptr::NonNull;

use crate::Mbuf;

/// Largest burst the appliance moves at once.
pub const BURST_MAX: usize = 64;

/// A fixed-capacity array of owned packets: what one rx/tx/ring call moves.
/// Lives on the worker's stack or in its context; never allocates.
pub struct Burst {
    ptrs: [*mut dpdk_sys::rte_mbuf; BURST_MAX],
    len: usize,
}

// SAFETY: the burst owns the mbufs it points to (see Mbuf's Send).
unsafe impl Send for Burst {}

impl Default for Burst {
    fn default() -> Self {
        Self::new()
    }
}

impl Burst {
    pub const fn new() -> Burst {
        Burst { ptrs: [std::ptr::null_mut(); BURST_MAX], len: 0 }
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    pub fn is_full(&self) -> bool {
        self.len == BURST_MAX
    }

    /// Adds a packet; gives it back when the burst is full.
    #[inline]
    pub fn push(&mut self, m: Mbuf) -> Result<(), Mbuf> {
        if self.len == BURST_MAX {
            return Err(m);
        }
        self.ptrs[self.len] = m.into_raw();
        self.len += 1;
        Ok(())
    }

    /// The packets, in order, without taking them out (to look ahead, e.g.
    /// to prefetch what their processing will touch).
    #[inline]
    pub fn as_slice(&self) -> &[Mbuf] {
        // SAFETY: Mbuf is repr(transparent) over NonNull<rte_mbuf>, which has
        // the layout of *mut rte_mbuf; the first `len` pointers are non-null,
        // owned, valid mbufs, borrowed here for as long as `self` is.
        unsafe { std::slice::from_raw_parts(self.ptrs.as_ptr().cast::<Mbuf>(), self.len) }
    }

    /// Takes every packet out, in order. Packets not taken by the end of the
    /// iteration are freed when the iterator drops.
    #[inline]
    pub fn drain(&mut self) -> Drain<'_> {
        let len = self.len;
        self.len = 0;
        Drain { burst: self, next: 0, end: len }
    }

    /// Raw room for an rx/dequeue call: (pointer, capacity). The caller must
    /// then call `set_filled` with the count the call returned.
    #[inline]
    pub(crate) fn fill_ptr(&mut self) -> (*mut *mut dpdk_sys::rte_mbuf, usize) {
        debug_assert_eq!(self.len, 0);
        (self.ptrs.as_mut_ptr(), BURST_MAX)
    }

    #[inline]
    pub(crate) fn set_filled(&mut self, n: usize) {
        debug_assert!(n <= BURST_MAX);
        self.len = n;
    }

    /// The owned pointers, for a tx/enqueue call.
    #[inline]
    pub(crate) fn as_ptrs(&mut self) -> &mut [*mut dpdk_sys::rte_mbuf] {
        &mut self.ptrs[..self.len]
    }

    /// Forgets the first `n` packets (the callee took them) and moves the
    /// rest to the front.
    #[inline]
    pub(crate) fn consumed(&mut self, n: usize) {
        debug_assert!(n <= self.len);
        self.ptrs.copy_within(n..self.len, 0);
        self.len -= n;
    }

    /// Total bytes (first segments) of the packets in the burst.
    #[inline]
    pub fn bytes(&self) -> u64 {
        self.ptrs[..self.len]
            .iter()
            // SAFETY: the first `len` pointers are owned, valid mbufs.
            .map(|&p| u64::from(unsafe { (*p).data_len }))
            .sum()
    }

    /// Frees every packet; returns how many there were.
    #[inline]
    pub fn free_all(&mut self) -> usize {
        let n = self.len;
        if n > 0 {
            // SAFETY: the first n pointers are owned, valid mbufs; after this
            // the burst is empty so none is freed twice.
            unsafe { dpdk_sys::shim_rte_pktmbuf_free_bulk(self.ptrs.as_mut_ptr(), n as u32) };
            self.len = 0;
        }
        n
    }
}

impl Drop for Burst {
    fn drop(&mut self) {
        self.free_all();
    }
}

/// Iterator returned by [`Burst::drain`].
pub struct Drain<'a> {
    burst: &'a mut Burst,
    next: usize,
    end: usize,
}

impl Iterator for Drain<'_> {
    type Item = Mbuf;
    #[inline]
    fn next(&mut self) -> Option<Mbuf> {
        if self.next == self.end {
            return None;
        }
        let p = self.burst.ptrs[self.next];
        self.next += 1;
        // SAFETY: slots below `end` hold owned, non-null mbufs (rx/dequeue
        // and push only store non-null pointers); each is handed out once.
        Some(Mbuf::from_raw_nonnull(unsafe { NonNull::new_unchecked(p) }))
    }
}

impl Drop for Drain<'_> {
    fn drop(&mut self) {
        for m in self.by_ref() {
            drop(m);
        }
    }
}

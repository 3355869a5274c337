use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::Arc;

use crate::{Burst, Eal, Mbuf, RteError};

/// A bounded single-producer single-consumer ring of packets (`rte_ring`
/// with SP_ENQ | SC_DEQ), the only way packets cross between cores. Split
/// into a [`RingProducer`] and a [`RingConsumer`] that each go to one thread.
/// A full ring never blocks: what does not fit is handed back to the caller,
/// which counts it as a drop.
pub struct MbufRing {
    raw: NonNull<dpdk_sys::rte_ring>,
    _eal: Arc<Eal>,
}

// SAFETY: rte_ring is a lock-free structure meant to be shared between lcores;
// the producer/consumer split keeps single-producer/single-consumer use.
unsafe impl Send for MbufRing {}
// SAFETY: as above; &self methods only read counters.
unsafe impl Sync for MbufRing {}

/// Occupancy of a ring.
#[derive(Debug, Clone, Copy, Default)]
pub struct RingStats {
    pub used: u32,
    pub capacity: u32,
}

impl MbufRing {
    /// Creates a ring of `size` slots (a power of two; it holds size-1),
    /// already split into its two ends.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(eal: &Arc<Eal>, name: &str, size: u32) -> Result<(RingProducer, RingConsumer), RteError> {
        if !size.is_power_of_two() {
            return Err(RteError::other("rte_ring_create", "size must be a power of two"));
        }
        let cname = CString::new(name).map_err(|_| RteError::other("rte_ring_create", "NUL in name"))?;
        // SAFETY: valid name; EAL initialised.
        let raw = unsafe {
            dpdk_sys::rte_ring_create(
                cname.as_ptr(),
                size,
                dpdk_sys::rte_socket_id() as i32,
                dpdk_sys::RING_F_SP_ENQ | dpdk_sys::RING_F_SC_DEQ,
            )
        };
        let raw = NonNull::new(raw).ok_or_else(|| RteError::last("rte_ring_create"))?;
        let ring = Arc::new(MbufRing { raw, _eal: eal.clone() });
        Ok((RingProducer { ring: ring.clone() }, RingConsumer { ring }))
    }

    /// Current occupancy (readable from any thread).
    pub fn stats(&self) -> RingStats {
        // SAFETY: reading the head/tail counters of a valid ring.
        let used = unsafe { dpdk_sys::shim_rte_ring_count(self.raw.as_ptr()) };
        // SAFETY: as above.
        let free = unsafe { dpdk_sys::shim_rte_ring_free_count(self.raw.as_ptr()) };
        RingStats { used, capacity: used + free }
    }
}

impl Drop for MbufRing {
    fn drop(&mut self) {
        // Free any packets still queued, then the ring.
        let mut burst = Burst::new();
        loop {
            let (ptr, cap) = burst.fill_ptr();
            // SAFETY: both handles are gone (they hold the Arc), so this is
            // the only user; dequeued pointers are owned mbufs.
            let n = unsafe {
                dpdk_sys::shim_rte_ring_dequeue_burst(
                    self.raw.as_ptr(),
                    ptr as *mut *mut _,
                    cap as u32,
                    std::ptr::null_mut(),
                )
            } as usize;
            burst.set_filled(n);
            if burst.free_all() == 0 {
                break;
            }
        }
        // SAFETY: no user left.
        unsafe { dpdk_sys::rte_ring_free(self.raw.as_ptr()) }
    }
}

/// The enqueue side of an [`MbufRing`], owned by one thread.
pub struct RingProducer {
    ring: Arc<MbufRing>,
}

/// The dequeue side of an [`MbufRing`], owned by one thread.
pub struct RingConsumer {
    ring: Arc<MbufRing>,
}

impl RingProducer {
    /// Enqueues one packet; hands it back if the ring is full.
    #[inline]
    pub fn enqueue(&mut self, m: Mbuf) -> Result<(), Mbuf> {
        let p = m.into_raw();
        let obj = p as *mut std::os::raw::c_void;
        // SAFETY: single producer (this handle); on success the ring owns the
        // mbuf, on failure we take it back below.
        let n = unsafe { dpdk_sys::shim_rte_ring_enqueue_burst(self.ring.raw.as_ptr(), &obj, 1, std::ptr::null_mut()) };
        if n == 1 {
            Ok(())
        } else {
            // SAFETY: the ring did not take p, so we still own it.
            Err(Mbuf::from_raw_nonnull(unsafe { NonNull::new_unchecked(p) }))
        }
    }

    /// Enqueues as much of `burst` as fits; the rest stays in `burst`.
    /// Returns the number enqueued.
    #[inline]
    pub fn enqueue_burst(&mut self, burst: &mut Burst) -> usize {
        let ptrs = burst.as_ptrs();
        if ptrs.is_empty() {
            return 0;
        }
        // SAFETY: single producer; ownership of the first n passes to the ring.
        let n = unsafe {
            dpdk_sys::shim_rte_ring_enqueue_burst(
                self.ring.raw.as_ptr(),
                ptrs.as_ptr() as *const *mut _,
                ptrs.len() as u32,
                std::ptr::null_mut(),
            )
        } as usize;
        burst.consumed(n);
        n
    }

    pub fn ring(&self) -> &Arc<MbufRing> {
        &self.ring
    }
}

impl RingConsumer {
    /// Dequeues up to `max` packets into an empty `burst`; returns the count.
    #[inline]
    pub fn dequeue_burst(&mut self, burst: &mut Burst, max: usize) -> usize {
        let (ptr, cap) = burst.fill_ptr();
        // SAFETY: single consumer (this handle); dequeued pointers are owned
        // mbufs put there by the producer.
        let n = unsafe {
            dpdk_sys::shim_rte_ring_dequeue_burst(
                self.ring.raw.as_ptr(),
                ptr as *mut *mut _,
                max.min(cap) as u32,
                std::ptr::null_mut(),
            )
        } as usize;
        burst.set_filled(n);
        n
    }

    pub fn ring(&self) -> &Arc<MbufRing> {
        &self.ring
    }
}

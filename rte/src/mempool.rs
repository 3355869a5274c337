use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::Arc;

use crate::{Eal, Mbuf, RteError};

/// A pool of packet buffers (`rte_pktmbuf_pool_create`), created at start-up.
/// Cheap to clone; never freed before EAL cleanup (see the crate doc).
#[derive(Clone)]
pub struct Mempool {
    raw: NonNull<dpdk_sys::rte_mempool>,
    _eal: Arc<Eal>,
}

// SAFETY: rte_mempool is designed for concurrent use from many lcores: get/put
// go through per-lcore caches or the lock-free ring behind them.
unsafe impl Send for Mempool {}
// SAFETY: as above; the counters read through &self are thread-safe.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Creates a pool of `mbufs` packet buffers with a per-lcore cache of
    /// `cache_size` and `data_room_bytes` (headroom included) each, in the
    /// memory of the calling lcore's NUMA socket.
    pub fn new_pktmbuf(
        eal: &Arc<Eal>,
        name: &str,
        mbufs: u32,
        cache_size: u32,
        data_room_bytes: u16,
    ) -> Result<Mempool, RteError> {
        // SAFETY: EAL is initialised (we hold it).
        let socket = unsafe { dpdk_sys::rte_socket_id() } as i32;
        Self::new_pktmbuf_on(eal, name, mbufs, cache_size, data_room_bytes, socket)
    }

    /// [`new_pktmbuf`](Self::new_pktmbuf) in the memory of NUMA socket
    /// `socket` (`-1`: any socket).
    pub fn new_pktmbuf_on(
        eal: &Arc<Eal>,
        name: &str,
        mbufs: u32,
        cache_size: u32,
        data_room_bytes: u16,
        socket: i32,
    ) -> Result<Mempool, RteError> {
        let cname = CString::new(name).map_err(|_| RteError::other("rte_pktmbuf_pool_create", "NUL in name"))?;
        // SAFETY: cname is a valid C string; EAL is initialised (we hold it).
        let raw =
            unsafe { dpdk_sys::rte_pktmbuf_pool_create(cname.as_ptr(), mbufs, cache_size, 0, data_room_bytes, socket) };
        let raw = NonNull::new(raw).ok_or_else(|| RteError::last("rte_pktmbuf_pool_create"))?;
        Ok(Mempool { raw, _eal: eal.clone() })
    }

    /// Takes one buffer from the pool, reset to empty; `None` when exhausted.
    #[inline]
    pub fn alloc(&self) -> Option<Mbuf> {
        // SAFETY: the pool is a valid pktmbuf pool.
        let m = unsafe { dpdk_sys::shim_rte_pktmbuf_alloc(self.raw.as_ptr()) };
        NonNull::new(m).map(Mbuf::from_raw_nonnull)
    }

    /// Buffers currently free (in the pool and its caches).
    pub fn available(&self) -> u32 {
        // SAFETY: reading counters of a valid pool.
        unsafe { dpdk_sys::shim_rte_mempool_avail_count(self.raw.as_ptr()) }
    }

    /// Buffers currently taken.
    pub fn in_use(&self) -> u32 {
        // SAFETY: reading counters of a valid pool.
        unsafe { dpdk_sys::shim_rte_mempool_in_use_count(self.raw.as_ptr()) }
    }

    /// The pool's capacity.
    pub fn capacity(&self) -> u32 {
        // SAFETY: reading a field of a valid pool.
        unsafe { (*self.raw.as_ptr()).size }
    }

    pub(crate) fn as_ptr(&self) -> *mut dpdk_sys::rte_mempool {
        self.raw.as_ptr()
    }
}

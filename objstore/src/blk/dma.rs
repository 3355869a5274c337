//! DMA-able buffers: one region mapped at start, cut into fixed-size 4 KiB-aligned buffers.
//!
//! The region is anonymous `MAP_HUGETLB` memory (2 MiB pages, reserved by the kernel at mmap
//! time, so a short supply shows up here and not as a SIGBUS later). When no hugepages are free
//! it falls back to ordinary anonymous memory (page aligned, hence 4 KiB aligned) and logs a
//! warning. The whole region is touched once at start so no page fault happens on the data path.
//!
//! Handing out and returning buffers is lock-free and allocation-free: a bitmap of free buffers
//! in atomic words. A [`DmaBuf`] returns itself to its pool when dropped. The region stays mapped
//! while the pool or any of its buffers is alive (they share an `Arc`).
//!
//! Limits: at most `u32::MAX` buffers; the region must fit in 1 GiB to be registered with
//! io_uring as one buffer (checked by the io_uring backend, which then falls back).
#![allow(unsafe_code)]

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use super::BLOCK_SIZE;
use crate::{Error, Result};

const HUGE_PAGE: usize = 2 << 20;

struct Region {
    base: NonNull<u8>,
    len: usize,
    hugepage: bool,
}

// SAFETY: the region is plain memory owned by this struct; access to its bytes is partitioned
// into buffers, each owned by exactly one `DmaBuf` at a time (see `Shared::alloc`).
unsafe impl Send for Region {}
// SAFETY: as above; `Region` itself only exposes its base address and length.
unsafe impl Sync for Region {}

impl Region {
    fn map(len: usize, hugepages: bool) -> Result<Region> {
        if hugepages {
            let huge_len = len.div_ceil(HUGE_PAGE) * HUGE_PAGE;
            if let Some(base) = mmap_anon(huge_len, libc::MAP_HUGETLB) {
                return Ok(Region { base, len: huge_len, hugepage: true });
            }
            tracing::warn!(
                bytes = len,
                "no free hugepages for the DMA pool; falling back to ordinary page-aligned memory"
            );
        }
        let page_len = len.div_ceil(BLOCK_SIZE) * BLOCK_SIZE;
        let base =
            mmap_anon(page_len, 0).ok_or_else(|| Error::os("mmap of the DMA pool", std::io::Error::last_os_error()))?;
        Ok(Region { base, len: page_len, hugepage: false })
    }
}

fn mmap_anon(len: usize, extra_flags: libc::c_int) -> Option<NonNull<u8>> {
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing; it aliases no
    // existing Rust object. The result is checked for MAP_FAILED before use.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE | extra_flags,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    let base = NonNull::new(p.cast::<u8>())?;
    // SAFETY: `base` points to `len` freshly mapped writable bytes that nothing else references.
    // Zeroing them faults every page in now rather than on the data path.
    unsafe { std::ptr::write_bytes(base.as_ptr(), 0, len) };
    Some(base)
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly what mmap returned; the last `Arc<Shared>` is gone, so
        // no `DmaBuf` (and no in-flight I/O, which holds its `DmaBuf`) refers to the memory.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

struct Shared {
    region: Region,
    buf_size: usize,
    count: usize,
    /// Bit set = buffer free.
    free: Box<[AtomicU64]>,
    free_count: AtomicUsize,
    hint: AtomicUsize,
}

impl Shared {
    fn alloc(&self) -> Option<u32> {
        let words = self.free.len();
        let start = self.hint.load(Ordering::Relaxed) % words;
        for i in 0..words {
            let w = (start + i) % words;
            let word = &self.free[w];
            let mut cur = word.load(Ordering::Acquire);
            while cur != 0 {
                let bit = cur.trailing_zeros();
                match word.compare_exchange_weak(cur, cur & !(1u64 << bit), Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => {
                        self.hint.store(w, Ordering::Relaxed);
                        self.free_count.fetch_sub(1, Ordering::Relaxed);
                        return Some((w * 64) as u32 + bit);
                    }
                    Err(now) => cur = now,
                }
            }
        }
        None
    }

    fn release(&self, index: u32) {
        let (w, bit) = (index as usize / 64, index % 64);
        let prev = self.free[w].fetch_or(1u64 << bit, Ordering::AcqRel);
        debug_assert_eq!(prev & (1u64 << bit), 0, "DMA buffer {index} freed twice");
        self.free_count.fetch_add(1, Ordering::Relaxed);
    }
}

/// A pool of `count` buffers of `buf_blocks` blocks each. Cloning shares the pool.
#[derive(Clone)]
pub struct DmaPool {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for DmaPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmaPool")
            .field("count", &self.shared.count)
            .field("buf_size", &self.shared.buf_size)
            .field("free", &self.free_count())
            .field("hugepage", &self.is_hugepage())
            .finish()
    }
}

impl DmaPool {
    /// Map a pool of `count` buffers of `buf_blocks` 4 KiB blocks each, from hugepages when
    /// any are free.
    pub fn new(count: usize, buf_blocks: usize) -> Result<DmaPool> {
        Self::with_hugepages(count, buf_blocks, true)
    }

    /// As [`DmaPool::new`]; `hugepages: false` maps ordinary memory straight away (what the
    /// fallback does).
    pub fn with_hugepages(count: usize, buf_blocks: usize, hugepages: bool) -> Result<DmaPool> {
        if count == 0 || buf_blocks == 0 || count > u32::MAX as usize {
            return Err(Error::Config(format!("DMA pool of {count} buffers of {buf_blocks} blocks")));
        }
        let buf_size = buf_blocks * BLOCK_SIZE;
        let len = count.checked_mul(buf_size).ok_or_else(|| Error::Config("DMA pool too large".into()))?;
        let region = Region::map(len, hugepages)?;
        let words = count.div_ceil(64);
        let free: Box<[AtomicU64]> = (0..words)
            .map(|w| {
                let n = (count - w * 64).min(64);
                AtomicU64::new(if n == 64 { u64::MAX } else { (1u64 << n) - 1 })
            })
            .collect();
        Ok(DmaPool {
            shared: Arc::new(Shared {
                region,
                buf_size,
                count,
                free,
                free_count: AtomicUsize::new(count),
                hint: AtomicUsize::new(0),
            }),
        })
    }

    /// A free buffer, or `None` when all are in use. Lock-free, no allocation. The buffer's
    /// contents are whatever its previous user left.
    pub fn alloc(&self) -> Option<DmaBuf> {
        let index = self.shared.alloc()?;
        let offset = index as usize * self.shared.buf_size;
        // SAFETY: `offset + buf_size <= region.len` because `index < count` and the region holds
        // `count * buf_size` bytes, so the pointer stays inside the mapping.
        let ptr = unsafe { self.shared.region.base.add(offset) };
        Some(DmaBuf { shared: Arc::clone(&self.shared), index, ptr })
    }

    pub fn buf_size(&self) -> usize {
        self.shared.buf_size
    }
    pub fn count(&self) -> usize {
        self.shared.count
    }
    pub fn free_count(&self) -> usize {
        self.shared.free_count.load(Ordering::Relaxed)
    }
    /// Whether the region is hugepage memory.
    pub fn is_hugepage(&self) -> bool {
        self.shared.region.hugepage
    }
    /// Base address and length of the whole region (for registration with the kernel).
    pub fn region(&self) -> (*mut u8, usize) {
        (self.shared.region.base.as_ptr(), self.shared.region.len)
    }
    /// Whether `buf` was cut from this pool.
    pub fn owns(&self, buf: &DmaBuf) -> bool {
        Arc::ptr_eq(&self.shared, &buf.shared)
    }
}

/// One buffer of a [`DmaPool`], owned exclusively; returns to the pool when dropped.
pub struct DmaBuf {
    shared: Arc<Shared>,
    index: u32,
    ptr: NonNull<u8>,
}

// SAFETY: a `DmaBuf` is the only handle to its bytes (the pool hands each index out once until it
// is released), like a `Box<[u8]>`; the shared pool state is atomics and immutable fields.
unsafe impl Send for DmaBuf {}
// SAFETY: `&DmaBuf` only gives `&[u8]`.
unsafe impl Sync for DmaBuf {}

impl DmaBuf {
    pub fn capacity(&self) -> usize {
        self.shared.buf_size
    }
    /// Start address (for the kernel). Valid while `self` is alive.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }
    /// Start address for the kernel to write into. Valid while `self` is alive.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
    /// Index of the buffer in its pool.
    pub fn index(&self) -> u32 {
        self.index
    }
}

impl std::ops::Deref for DmaBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` points to `buf_size` initialised (zeroed at map time) bytes of the live
        // region (kept alive by `shared`), owned exclusively by this `DmaBuf`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.shared.buf_size) }
    }
}

impl std::ops::DerefMut for DmaBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` guarantees no other reference to the bytes.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.shared.buf_size) }
    }
}

impl Drop for DmaBuf {
    fn drop(&mut self) {
        self.shared.release(self.index);
    }
}

impl std::fmt::Debug for DmaBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmaBuf").field("index", &self.index).field("size", &self.capacity()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_all_then_free() {
        let pool = DmaPool::new(70, 1).unwrap();
        let mut bufs: Vec<DmaBuf> = (0..70).map(|_| pool.alloc().unwrap()).collect();
        assert!(pool.alloc().is_none());
        assert_eq!(pool.free_count(), 0);
        let mut idx: Vec<u32> = bufs.iter().map(|b| b.index()).collect();
        idx.sort_unstable();
        idx.dedup();
        assert_eq!(idx.len(), 70);
        for b in &mut bufs {
            assert_eq!(b.as_ptr() as usize % BLOCK_SIZE, 0);
            b.fill(0xAB);
        }
        bufs.truncate(10);
        assert_eq!(pool.free_count(), 60);
        assert!(pool.owns(&bufs[0]));
        assert!(bufs.iter().all(|b| b.iter().all(|&x| x == 0xAB)));
        drop(bufs);
        assert_eq!(pool.free_count(), 70);
    }

    #[test]
    fn buffers_do_not_overlap() {
        let pool = DmaPool::new(8, 2).unwrap();
        let mut bufs: Vec<DmaBuf> = (0..8).map(|_| pool.alloc().unwrap()).collect();
        for (i, b) in bufs.iter_mut().enumerate() {
            b.fill(i as u8);
        }
        for (i, b) in bufs.iter().enumerate() {
            assert_eq!(b.len(), 2 * BLOCK_SIZE);
            assert!(b.iter().all(|&x| x == i as u8));
        }
    }

    #[test]
    fn ordinary_memory_fallback() {
        let pool = DmaPool::with_hugepages(3, 1, false).unwrap();
        assert!(!pool.is_hugepage());
        let (base, len) = pool.region();
        assert_eq!(base as usize % BLOCK_SIZE, 0);
        assert_eq!(len, 3 * BLOCK_SIZE);
        let mut b = pool.alloc().unwrap();
        b.fill(1);
        assert_eq!(b.as_ptr() as usize % BLOCK_SIZE, 0);
    }

    #[test]
    fn buffer_outlives_pool_handle() {
        let pool = DmaPool::new(1, 1).unwrap();
        let mut b = pool.alloc().unwrap();
        drop(pool);
        b[0] = 7;
        assert_eq!(b[0], 7);
    }
}

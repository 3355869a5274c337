//! Memory placement for large fast-path tables.
//!
//! A table spread over hundreds of megabytes of 4 KiB pages costs a TLB miss
//! (and, in a VM, a two-dimensional page walk) on nearly every random
//! access. DPDK's own memory sits on hugepages; tables the Rust code owns
//! (the NAT flow cache) ask the kernel for transparent huge pages instead.
#![allow(unsafe_code)]

/// Allocates a vector of `n` copies of `fill` whose memory the kernel is
/// asked to back with transparent huge pages (`madvise(MADV_HUGEPAGE)`
/// before the first touch). Where THP is off (`never`) or the advice fails,
/// this is an ordinary vector: correct, only slower.
pub fn huge_vec<T: Clone>(n: usize, fill: T) -> Vec<T> {
    let mut v: Vec<T> = Vec::with_capacity(n);
    let spare = v.spare_capacity_mut();
    let start = spare.as_mut_ptr() as usize;
    let len = std::mem::size_of_val(spare);
    const PAGE: usize = 4096;
    let aligned = (start + PAGE - 1) & !(PAGE - 1);
    let end = (start + len) & !(PAGE - 1);
    if end > aligned {
        // SAFETY: the range lies inside the vector's own, still untouched
        // allocation; MADV_HUGEPAGE only changes how the kernel backs those
        // pages (never their contents or validity), and an error is harmless.
        unsafe {
            libc::madvise(aligned as *mut libc::c_void, end - aligned, libc::MADV_HUGEPAGE);
        }
    }
    v.resize(n, fill);
    v
}

/// A zeroed vector of `n` `u32`s for a large, mostly empty table: the
/// allocator hands out zeroed pages the kernel backs lazily (only the pages
/// written are ever allocated), advised onto transparent huge pages.
pub fn zeroed_u32(n: usize) -> Vec<u32> {
    let v = vec![0u32; n];
    advise_huge(&v);
    v
}

/// Advises the kernel to back the whole pages inside `items` with
/// transparent huge pages (pages not yet touched get them on first touch).
fn advise_huge<T>(items: &[T]) {
    const PAGE: usize = 4096;
    let start = items.as_ptr() as usize;
    let aligned = (start + PAGE - 1) & !(PAGE - 1);
    let end = (start + std::mem::size_of_val(items)) & !(PAGE - 1);
    if end > aligned {
        // SAFETY: the range lies inside `items`' own allocation; MADV_HUGEPAGE
        // only changes how the kernel backs those pages (never their contents
        // or validity), and an error is harmless.
        unsafe {
            libc::madvise(aligned as *mut libc::c_void, end - aligned, libc::MADV_HUGEPAGE);
        }
    }
}

/// Asks the CPU to bring the cache lines of `items` into its caches (a
/// hint: it never faults and never changes anything). The fast path uses it
/// to overlap a burst's table lookups with each other.
#[inline(always)]
pub fn prefetch<T>(items: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        let start = items.as_ptr() as usize;
        let end = start + std::mem::size_of_val(items);
        let mut line = start & !63;
        while line < end {
            // SAFETY: PREFETCHT0 is a hint that cannot fault or write; the
            // address lies inside `items`.
            unsafe { core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(line as *const i8) };
            line += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = items;
}

#[cfg(test)]
mod tests {
    #[test]
    fn huge_vec_is_an_ordinary_vector() {
        let v = super::huge_vec(3 << 20, 7u8);
        assert_eq!(v.len(), 3 << 20);
        assert!(v.iter().all(|&b| b == 7));
        assert!(super::huge_vec(0, 1u64).is_empty());
        let z = super::zeroed_u32(1 << 22);
        assert!(z.len() == 1 << 22 && z[0] == 0 && z[(1 << 22) - 1] == 0);
    }
}

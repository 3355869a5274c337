use std::ptr::NonNull;

/// One owned packet buffer (`rte_mbuf`). Freed to its pool on drop; moved
/// into a transmit burst or a ring to send it on.
///
/// The appliance works on single-segment packets: [`Mbuf::data`] is the first
/// (and, for anything the pipeline accepts, only) segment; `is_contiguous`
/// tells the two apart so that multi-segment packets can be dropped by name.
#[repr(transparent)]
pub struct Mbuf {
    raw: NonNull<dpdk_sys::rte_mbuf>,
}

// SAFETY: an Mbuf is uniquely owned; moving it to another thread moves the
// ownership with it (DPDK's own model for rings between lcores).
unsafe impl Send for Mbuf {}

impl Mbuf {
    #[inline]
    pub(crate) fn from_raw_nonnull(raw: NonNull<dpdk_sys::rte_mbuf>) -> Mbuf {
        Mbuf { raw }
    }

    /// Gives up ownership (for a burst or a ring).
    #[inline]
    pub(crate) fn into_raw(self) -> *mut dpdk_sys::rte_mbuf {
        let p = self.raw.as_ptr();
        std::mem::forget(self);
        p
    }

    #[inline]
    fn m(&self) -> &dpdk_sys::rte_mbuf {
        // SAFETY: raw points to a live mbuf that we own.
        unsafe { self.raw.as_ref() }
    }

    #[inline]
    fn m_mut(&mut self) -> &mut dpdk_sys::rte_mbuf {
        // SAFETY: raw points to a live mbuf that we own exclusively.
        unsafe { self.raw.as_mut() }
    }

    /// The bytes of the first segment.
    #[inline]
    pub fn data(&self) -> &[u8] {
        let m = self.m();
        // SAFETY: buf_addr + data_off .. + data_len lies inside the mbuf's
        // buffer (an mbuf invariant DPDK maintains), and we own the mbuf.
        unsafe { std::slice::from_raw_parts((m.buf_addr as *const u8).add(m.data_off as usize), m.data_len as usize) }
    }

    /// The bytes of the first segment, writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        let m = self.m_mut();
        // SAFETY: as for `data`, and we hold the only reference.
        unsafe { std::slice::from_raw_parts_mut((m.buf_addr as *mut u8).add(m.data_off as usize), m.data_len as usize) }
    }

    /// Length of the first segment in bytes.
    #[inline]
    pub fn data_len(&self) -> usize {
        self.m().data_len as usize
    }

    /// Length of the whole packet (all segments) in bytes.
    #[inline]
    pub fn pkt_len(&self) -> usize {
        self.m().pkt_len as usize
    }

    /// True when the packet is one segment.
    #[inline]
    pub fn is_contiguous(&self) -> bool {
        self.m().nb_segs == 1
    }

    /// Free bytes before the data.
    #[inline]
    pub fn headroom(&self) -> usize {
        self.m().data_off as usize
    }

    /// Free bytes after the data in the last (only) segment.
    #[inline]
    pub fn tailroom(&self) -> usize {
        let m = self.m();
        m.buf_len as usize - m.data_off as usize - m.data_len as usize
    }

    /// Grows the packet at the front by `len` bytes and returns the new
    /// bytes; `None` (and no change) if the headroom is too small.
    #[inline]
    pub fn prepend(&mut self, len: usize) -> Option<&mut [u8]> {
        if len > self.headroom() {
            return None;
        }
        // SAFETY: headroom checked; rte_pktmbuf_prepend updates data_off,
        // data_len and pkt_len of an mbuf we own.
        let p = unsafe { dpdk_sys::shim_rte_pktmbuf_prepend(self.raw.as_ptr(), len as u16) };
        if p.is_null() {
            return None;
        }
        Some(&mut self.data_mut()[..len])
    }

    /// Grows the packet at the end by `len` bytes and returns the new bytes;
    /// `None` (and no change) if the tailroom is too small.
    #[inline]
    pub fn append(&mut self, len: usize) -> Option<&mut [u8]> {
        if len > self.tailroom() || !self.is_contiguous() {
            return None;
        }
        // SAFETY: tailroom checked; single segment; we own the mbuf.
        let p = unsafe { dpdk_sys::shim_rte_pktmbuf_append(self.raw.as_ptr(), len as u16) };
        if p.is_null() {
            return None;
        }
        let n = self.data_len();
        Some(&mut self.data_mut()[n - len..])
    }

    /// Removes `len` bytes from the front; false (and no change) if the
    /// first segment is shorter.
    #[inline]
    pub fn adj(&mut self, len: usize) -> bool {
        if len > self.data_len() {
            return false;
        }
        // SAFETY: length checked; we own the mbuf.
        !unsafe { dpdk_sys::shim_rte_pktmbuf_adj(self.raw.as_ptr(), len as u16) }.is_null()
    }

    /// Removes `len` bytes from the end; false (and no change) if the last
    /// segment is shorter.
    #[inline]
    pub fn trim(&mut self, len: usize) -> bool {
        if len > self.data_len() {
            return false;
        }
        // SAFETY: length checked; we own the mbuf.
        unsafe { dpdk_sys::shim_rte_pktmbuf_trim(self.raw.as_ptr(), len as u16) == 0 }
    }

    /// Sets the data length of a single-segment packet (grows into tailroom or
    /// shrinks); false if it does not fit.
    #[inline]
    pub fn set_len(&mut self, len: usize) -> bool {
        let cur = self.data_len();
        if len >= cur {
            self.append(len - cur).is_some()
        } else {
            self.trim(cur - len)
        }
    }

    /// The port the packet arrived on, or (for packets handed between cores)
    /// the port it is to leave by.
    #[inline]
    pub fn port(&self) -> u16 {
        self.m().port
    }

    /// Sets [`Mbuf::port`].
    #[inline]
    pub fn set_port(&mut self, port: u16) {
        self.m_mut().port = port;
    }

    /// A 32-bit application tag carried with the packet between cores (the
    /// mbuf's `hash.usr` field; meaningless on received packets until set).
    #[inline]
    pub fn tag(&self) -> u32 {
        // SAFETY: reading a plain u32 member of a union we own.
        unsafe { self.m().__bindgen_anon_2.hash.usr }
    }

    /// Sets [`Mbuf::tag`].
    #[inline]
    pub fn set_tag(&mut self, tag: u32) {
        self.m_mut().__bindgen_anon_2.hash.usr = tag;
    }
}

impl Drop for Mbuf {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: we own the mbuf; it is returned to its pool exactly once.
        unsafe { dpdk_sys::shim_rte_pktmbuf_free(self.raw.as_ptr()) }
    }
}

impl std::fmt::Debug for Mbuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mbuf").field("port", &self.port()).field("len", &self.data_len()).finish()
    }
}

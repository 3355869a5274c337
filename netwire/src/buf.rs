//! The packet-buffer abstraction the pure pipeline code works through, so
//! that the same code runs on DPDK mbufs in the appliance and on plain
//! vectors in unit tests.

/// An owned packet buffer: one contiguous frame plus the port it came in on
/// (or goes out of).
pub trait PacketBuf {
    fn data(&self) -> &[u8];
    fn data_mut(&mut self) -> &mut [u8];
    /// Sets the frame length (growing into tailroom or shrinking); false if it
    /// does not fit.
    fn set_len(&mut self, len: usize) -> bool;
    fn port(&self) -> u16;
    fn set_port(&mut self, port: u16);
    /// Grows the frame at the front by `len` bytes (into headroom); false,
    /// and no change, if there is not enough.
    fn prepend(&mut self, len: usize) -> bool;
    /// Removes `len` bytes from the front; false, and no change, if the
    /// frame is shorter.
    fn adj(&mut self, len: usize) -> bool;
}

/// Grows `pkt` at the front by `len` bytes: into headroom when there is
/// enough, else by moving the frame towards the tail (tailroom permitting).
/// The new bytes are at the start and hold stale data.
pub fn grow_front<P: PacketBuf>(pkt: &mut P, len: usize) -> bool {
    if pkt.prepend(len) {
        return true;
    }
    let old = pkt.data().len();
    if !pkt.set_len(old + len) {
        return false;
    }
    pkt.data_mut().copy_within(0..old, len);
    true
}

/// Where new packets (replies, errors, solicitations) come from.
pub trait PacketPool {
    type Buf: PacketBuf;
    /// A new empty buffer, or `None` when the pool is exhausted.
    fn alloc(&mut self) -> Option<Self::Buf>;
}

/// A vector-backed packet for tests and tools: `HEADROOM` bytes before the
/// frame and a fixed capacity, like an mbuf's data room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VecBuf {
    bytes: Vec<u8>,
    start: usize,
    len: usize,
    port: u16,
}

impl VecBuf {
    /// Data room, headroom included (an mbuf's default).
    pub const CAPACITY: usize = 2176;
    /// Free bytes before a new frame (RTE_PKTMBUF_HEADROOM).
    pub const HEADROOM: usize = 128;

    /// A buffer holding a copy of `frame`, received on `port`.
    pub fn from_frame(frame: &[u8], port: u16) -> VecBuf {
        let mut bytes = vec![0u8; Self::CAPACITY.max(Self::HEADROOM + frame.len())];
        bytes[Self::HEADROOM..Self::HEADROOM + frame.len()].copy_from_slice(frame);
        VecBuf { bytes, start: Self::HEADROOM, len: frame.len(), port }
    }

    /// An empty buffer.
    pub fn empty() -> VecBuf {
        VecBuf { bytes: vec![0u8; Self::CAPACITY], start: Self::HEADROOM, len: 0, port: 0 }
    }

    /// The frame, copied out.
    pub fn to_vec(&self) -> Vec<u8> {
        self.data().to_vec()
    }

    /// Frame length.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl PacketBuf for VecBuf {
    fn data(&self) -> &[u8] {
        &self.bytes[self.start..self.start + self.len]
    }
    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[self.start..self.start + self.len]
    }
    fn set_len(&mut self, len: usize) -> bool {
        if self.start + len > self.bytes.len() {
            return false;
        }
        self.len = len;
        true
    }
    fn port(&self) -> u16 {
        self.port
    }
    fn set_port(&mut self, port: u16) {
        self.port = port;
    }
    fn prepend(&mut self, len: usize) -> bool {
        if len > self.start {
            return false;
        }
        self.start -= len;
        self.len += len;
        true
    }
    fn adj(&mut self, len: usize) -> bool {
        if len > self.len {
            return false;
        }
        self.start += len;
        self.len -= len;
        true
    }
}

/// A pool of [`VecBuf`]s with a fixed number of buffers left.
#[derive(Debug)]
pub struct VecPool {
    pub remaining: usize,
}

impl PacketPool for VecPool {
    type Buf = VecBuf;
    fn alloc(&mut self) -> Option<VecBuf> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        Some(VecBuf::empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vecbuf_grows_and_shrinks_at_the_front() {
        let mut b = VecBuf::from_frame(&[1, 2, 3], 4);
        assert!(b.prepend(2));
        b.data_mut()[..2].copy_from_slice(&[8, 9]);
        assert_eq!(b.data(), &[8, 9, 1, 2, 3]);
        assert!(b.adj(3));
        assert_eq!(b.data(), &[2, 3]);
        assert!(!b.adj(3));
        assert!(!b.prepend(VecBuf::HEADROOM + 10));
        assert!(grow_front(&mut b, VecBuf::HEADROOM + 10), "falls back to moving the frame");
        assert_eq!(&b.data()[VecBuf::HEADROOM + 10..], &[2, 3]);
        assert_eq!(b.port(), 4);
    }
}

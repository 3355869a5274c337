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
}

/// Where new packets (replies, errors, solicitations) come from.
pub trait PacketPool {
    type Buf: PacketBuf;
    /// A new empty buffer, or `None` when the pool is exhausted.
    fn alloc(&mut self) -> Option<Self::Buf>;
}

impl PacketBuf for rte::Mbuf {
    #[inline]
    fn data(&self) -> &[u8] {
        rte::Mbuf::data(self)
    }
    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        rte::Mbuf::data_mut(self)
    }
    #[inline]
    fn set_len(&mut self, len: usize) -> bool {
        rte::Mbuf::set_len(self, len)
    }
    #[inline]
    fn port(&self) -> u16 {
        rte::Mbuf::port(self)
    }
    #[inline]
    fn set_port(&mut self, port: u16) {
        rte::Mbuf::set_port(self, port)
    }
}

impl PacketPool for rte::Mempool {
    type Buf = rte::Mbuf;
    fn alloc(&mut self) -> Option<rte::Mbuf> {
        rte::Mempool::alloc(self)
    }
}

/// A vector-backed packet for tests and tools (capacity fixed at creation,
/// like an mbuf's data room).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VecBuf {
    pub bytes: Vec<u8>,
    pub len: usize,
    pub port: u16,
}

impl VecBuf {
    pub const CAPACITY: usize = 2048;

    pub fn from_frame(frame: &[u8], port: u16) -> VecBuf {
        let mut bytes = vec![0u8; Self::CAPACITY.max(frame.len())];
        bytes[..frame.len()].copy_from_slice(frame);
        VecBuf { bytes, len: frame.len(), port }
    }
}

impl PacketBuf for VecBuf {
    fn data(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[..self.len]
    }
    fn set_len(&mut self, len: usize) -> bool {
        if len > self.bytes.len() {
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
        Some(VecBuf { bytes: vec![0u8; VecBuf::CAPACITY], len: 0, port: 0 })
    }
}

//! `netwire`'s packet-buffer traits for DPDK mbufs and pools: the pure
//! pipeline works on [`Mbuf`]s through them, and on vectors in tests.

use netwire::{PacketBuf, PacketPool};

use crate::{Mbuf, Mempool};

impl PacketBuf for Mbuf {
    #[inline]
    fn data(&self) -> &[u8] {
        Mbuf::data(self)
    }
    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        Mbuf::data_mut(self)
    }
    #[inline]
    fn set_len(&mut self, len: usize) -> bool {
        Mbuf::set_len(self, len)
    }
    #[inline]
    fn port(&self) -> u16 {
        Mbuf::port(self)
    }
    #[inline]
    fn set_port(&mut self, port: u16) {
        Mbuf::set_port(self, port)
    }
    #[inline]
    fn prepend(&mut self, len: usize) -> bool {
        Mbuf::prepend(self, len).is_some()
    }
    #[inline]
    fn adj(&mut self, len: usize) -> bool {
        Mbuf::adj(self, len)
    }
}

impl PacketPool for Mempool {
    type Buf = Mbuf;
    fn alloc(&mut self) -> Option<Mbuf> {
        Mempool::alloc(self)
    }
}

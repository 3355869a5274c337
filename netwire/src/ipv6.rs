//! IPv6 fixed headers (RFC 8200 §3).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version| Traffic Class |           Flow Label                  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |         Payload Length        |  Next Header  |   Hop Limit   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                                                               |
//! +                                                               +
//! |                         Source Address                        |
//! +                                                               +
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                                                               |
//! +                                                               +
//! |                      Destination Address                      |
//! +                                                               +
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Extension headers are not parsed: [`Packet::next_header`] names the first one and
//! [`Packet::payload`] starts right after the fixed header. The payload ends at
//! `40 + payload_len`, so link padding is excluded. Jumbograms (payload length 0 with a
//! Hop-by-Hop jumbo option) are not supported: their payload reads as empty.
//!
//! [`Packet::new_checked`] validates version 6 and `40 + payload_len <= buffer length`.
//!
//! Panics: accessors panic only on a view made with [`Packet::new_unchecked`] over a
//! buffer shorter than the header or than `40 + payload_len`; after
//! [`Packet::new_checked`] none do (unless `set_payload_len` breaks that again).

use std::net::Ipv6Addr;

use super::ipv4::Protocol;
use super::{read_ipv6, read_u16, read_u32, write_u16, write_u32, WireError};

/// Length in bytes of the fixed IPv6 header.
pub const HEADER_LEN: usize = 40;

/// The minimum link MTU every IPv6 link supports (RFC 8200 §5).
pub const MIN_MTU: usize = 1280;

/// The hop limit our own packets (echo replies, ICMPv6 errors) carry.
pub const DEFAULT_HOP_LIMIT: u8 = 64;

/// All-nodes link-local multicast group `ff02::1`.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// All-routers link-local multicast group `ff02::2`.
pub const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);

mod field {
    use core::ops::Range;

    pub const VERSION_TC_FLOW: usize = 0;
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: usize = 8;
    pub const DST_ADDR: usize = 24;
    pub const SRC_DST: Range<usize> = 8..40;
    pub const PAYLOAD: usize = 40;
}

/// The solicited-node multicast group of `addr` (RFC 4291 §2.7.1):
/// `ff02::1:ffXX:XXXX` with the low 24 bits of `addr`.
pub fn solicited_node_multicast(addr: Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::from([0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, o[13], o[14], o[15]])
}

/// Whether `addr` is a solicited-node multicast group `ff02::1:ff00:0/104`.
pub fn is_solicited_node_multicast(addr: Ipv6Addr) -> bool {
    let o = addr.octets();
    o[..13] == [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff]
}

/// A zero-copy view of an IPv6 packet's fixed header and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after [`Packet::check`].
    pub fn new_checked(buffer: T) -> Result<Packet<T>, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check()?;
        Ok(packet)
    }

    /// Checks the buffer holds the 40-byte header ([`WireError::Truncated`]), version is
    /// 6 ([`WireError::Malformed`]) and the buffer holds `40 + payload_len` bytes
    /// ([`WireError::Truncated`]).
    pub fn check(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if self.version() != 6 {
            return Err(WireError::Malformed);
        }
        if HEADER_LEN + usize::from(self.payload_len()) > len {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole underlying buffer (may extend past the packet).
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Version field (6).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION_TC_FLOW] >> 4
    }

    /// Traffic class (DSCP in the high 6 bits, ECN in the low 2).
    pub fn traffic_class(&self) -> u8 {
        (read_u32(self.buffer.as_ref(), field::VERSION_TC_FLOW) >> 20) as u8
    }

    /// Flow label (20 bits).
    pub fn flow_label(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::VERSION_TC_FLOW) & 0x000f_ffff
    }

    /// Payload length in bytes (everything after the fixed header).
    pub fn payload_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::PAYLOAD_LEN)
    }

    /// Next header: the first extension header or the upper-layer protocol.
    pub fn next_header(&self) -> Protocol {
        Protocol(self.buffer.as_ref()[field::NEXT_HEADER])
    }

    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        read_ipv6(self.buffer.as_ref(), field::SRC_ADDR)
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        read_ipv6(self.buffer.as_ref(), field::DST_ADDR)
    }

    /// The payload: `payload_len` bytes after the fixed header.
    pub fn payload(&self) -> &[u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        &self.buffer.as_ref()[field::PAYLOAD..end]
    }

    /// The packet itself: the first `40 + payload_len` bytes, without link padding.
    pub fn packet(&self) -> &[u8] {
        &self.buffer.as_ref()[..HEADER_LEN + usize::from(self.payload_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the version field.
    pub fn set_version(&mut self, version: u8) {
        let b = &mut self.buffer.as_mut()[field::VERSION_TC_FLOW];
        *b = (*b & 0x0f) | (version << 4);
    }

    /// Sets the traffic class.
    pub fn set_traffic_class(&mut self, traffic_class: u8) {
        let old = read_u32(self.buffer.as_ref(), field::VERSION_TC_FLOW);
        let new = (old & 0xf00f_ffff) | (u32::from(traffic_class) << 20);
        write_u32(self.buffer.as_mut(), field::VERSION_TC_FLOW, new);
    }

    /// Sets the flow label (low 20 bits used).
    pub fn set_flow_label(&mut self, flow_label: u32) {
        let old = read_u32(self.buffer.as_ref(), field::VERSION_TC_FLOW);
        let new = (old & 0xfff0_0000) | (flow_label & 0x000f_ffff);
        write_u32(self.buffer.as_mut(), field::VERSION_TC_FLOW, new);
    }

    /// Sets the payload length in bytes.
    pub fn set_payload_len(&mut self, payload_len: u16) {
        write_u16(self.buffer.as_mut(), field::PAYLOAD_LEN, payload_len);
    }

    /// Sets the next header.
    pub fn set_next_header(&mut self, next_header: Protocol) {
        self.buffer.as_mut()[field::NEXT_HEADER] = next_header.0;
    }

    /// Sets the hop limit.
    pub fn set_hop_limit(&mut self, hop_limit: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = hop_limit;
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        let start = field::SRC_ADDR;
        self.buffer.as_mut()[start..start + 16].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        let start = field::DST_ADDR;
        self.buffer.as_mut()[start..start + 16].copy_from_slice(&addr.octets());
    }

    /// Exchanges source and destination addresses in place.
    pub fn swap_addrs(&mut self) {
        let addrs = &mut self.buffer.as_mut()[field::SRC_DST];
        let (src, dst) = addrs.split_at_mut(16);
        src.swap_with_slice(dst);
    }

    /// The payload, mutable: `payload_len` bytes after the fixed header.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        &mut self.buffer.as_mut()[field::PAYLOAD..end]
    }
}

/// Writes a 40-byte IPv6 header into `out` (traffic class and flow label 0); returns
/// [`HEADER_LEN`]. [`WireError::BufferTooSmall`] if `out` is shorter than 40 bytes,
/// [`WireError::Malformed`] if `payload_len` exceeds 65535.
pub fn emit_header(
    out: &mut [u8],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next_header: Protocol,
    hop_limit: u8,
    payload_len: usize,
) -> Result<usize, WireError> {
    if out.len() < HEADER_LEN {
        return Err(WireError::BufferTooSmall);
    }
    let payload_len = u16::try_from(payload_len).map_err(|_| WireError::Malformed)?;
    write_u32(out, field::VERSION_TC_FLOW, 6 << 28);
    let mut packet = Packet::new_unchecked(&mut out[..HEADER_LEN]);
    packet.set_payload_len(payload_len);
    packet.set_next_header(next_header);
    packet.set_hop_limit(hop_limit);
    packet.set_src_addr(src);
    packet.set_dst_addr(dst);
    Ok(HEADER_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A captured IPv6 header of a neighbor solicitation (fe80::1 asking for
    /// fe80::2e0:4cff:fe68:2d6 via its solicited-node group), payload 32 bytes.
    const NS_HEADER: [u8; 40] = [
        0x60, 0x00, 0x00, 0x00, 0x00, 0x20, 0x3a, 0xff, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
        0xff, 0x68, 0x02, 0xd6,
    ];

    fn ns_packet() -> Vec<u8> {
        let mut bytes = NS_HEADER.to_vec();
        bytes.extend_from_slice(&[0u8; 32]);
        bytes
    }

    #[test]
    fn parse_captured_header() {
        let bytes = ns_packet();
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.version(), 6);
        assert_eq!(packet.traffic_class(), 0);
        assert_eq!(packet.flow_label(), 0);
        assert_eq!(packet.payload_len(), 32);
        assert_eq!(packet.next_header(), Protocol::ICMPV6);
        assert_eq!(packet.hop_limit(), 255);
        assert_eq!(packet.src_addr(), "fe80::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(packet.dst_addr(), "ff02::1:ff68:2d6".parse::<Ipv6Addr>().unwrap());
        assert_eq!(packet.payload().len(), 32);
        assert!(is_solicited_node_multicast(packet.dst_addr()));
    }

    #[test]
    fn check_rejects() {
        let bytes = ns_packet();
        assert_eq!(Packet::new_checked(&bytes[..39]), Err(WireError::Truncated));
        assert_eq!(Packet::new_checked(&bytes[..71]), Err(WireError::Truncated));
        let mut wrong_version = bytes.clone();
        wrong_version[0] = 0x40;
        assert_eq!(Packet::new_checked(&wrong_version[..]), Err(WireError::Malformed));
        let mut padded = bytes.clone();
        padded.extend_from_slice(&[0; 8]);
        let packet = Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(packet.payload().len(), 32);
        assert_eq!(packet.packet(), &bytes[..]);
    }

    #[test]
    fn traffic_class_and_flow_label() {
        let mut bytes = ns_packet();
        let mut packet = Packet::new_checked(&mut bytes[..]).unwrap();
        packet.set_traffic_class(0xb8);
        packet.set_flow_label(0xabcde);
        assert_eq!(packet.version(), 6);
        assert_eq!(packet.traffic_class(), 0xb8);
        assert_eq!(packet.flow_label(), 0xabcde);
        assert_eq!(&bytes[..4], &[0x6b, 0x8a, 0xbc, 0xde]);
    }

    #[test]
    fn solicited_node() {
        let addr: Ipv6Addr = "2001:db8::2e0:4cff:fe68:2d6".parse().unwrap();
        let group = solicited_node_multicast(addr);
        assert_eq!(group, "ff02::1:ff68:2d6".parse::<Ipv6Addr>().unwrap());
        assert!(is_solicited_node_multicast(group));
        assert!(!is_solicited_node_multicast(ALL_NODES));
        assert!(!is_solicited_node_multicast(addr));
        assert!(!is_solicited_node_multicast("ff02::1:fe00:1".parse().unwrap()));
    }

    #[test]
    fn swap_addrs() {
        let mut bytes = ns_packet();
        let mut packet = Packet::new_checked(&mut bytes[..]).unwrap();
        let (src, dst) = (packet.src_addr(), packet.dst_addr());
        packet.swap_addrs();
        assert_eq!((packet.src_addr(), packet.dst_addr()), (dst, src));
    }

    proptest! {
        #[test]
        fn emit_parse_round_trip(
            src in any::<[u8; 16]>(),
            dst in any::<[u8; 16]>(),
            next_header in any::<u8>(),
            hop_limit in any::<u8>(),
            payload_len in 0usize..64,
            traffic_class in any::<u8>(),
            flow_label in 0u32..(1 << 20),
            low in any::<[u8; 3]>(),
        ) {
            let mut out = vec![0xaau8; HEADER_LEN + payload_len];
            emit_header(&mut out, src.into(), dst.into(), Protocol(next_header), hop_limit,
                payload_len).unwrap();
            let mut packet = Packet::new_checked(&mut out[..]).unwrap();
            packet.set_traffic_class(traffic_class);
            packet.set_flow_label(flow_label);
            prop_assert_eq!(packet.version(), 6);
            prop_assert_eq!(packet.traffic_class(), traffic_class);
            prop_assert_eq!(packet.flow_label(), flow_label);
            prop_assert_eq!(packet.src_addr(), Ipv6Addr::from(src));
            prop_assert_eq!(packet.dst_addr(), Ipv6Addr::from(dst));
            prop_assert_eq!(packet.next_header(), Protocol(next_header));
            prop_assert_eq!(packet.hop_limit(), hop_limit);
            prop_assert_eq!(packet.payload().len(), payload_len);

            let mut addr = [0u8; 16];
            addr[13..].copy_from_slice(&low);
            let group = solicited_node_multicast(Ipv6Addr::from(addr));
            prop_assert!(is_solicited_node_multicast(group));
            prop_assert_eq!(&group.octets()[13..], &low[..]);
        }

        #[test]
        fn new_checked_never_panics(
            mut bytes in proptest::collection::vec(any::<u8>(), 0..100),
            force_version in any::<bool>(),
        ) {
            if force_version && bytes.len() >= 6 {
                bytes[0] = 0x60 | (bytes[0] & 0x0f);
                bytes[4] = 0;
                bytes[5] %= 64;
            }
            if let Ok(mut packet) = Packet::new_checked(&mut bytes[..]) {
                let _ = (packet.version(), packet.traffic_class(), packet.flow_label(),
                    packet.payload_len(), packet.next_header(), packet.hop_limit(),
                    packet.src_addr(), packet.dst_addr(), packet.payload().len(),
                    packet.packet().len());
                packet.swap_addrs();
                let _ = packet.payload_mut().len();
            }
        }
    }
}

//! IPv4 headers (RFC 791).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version|  IHL  |    DSCP   |ECN|          Total Length         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |         Identification        |0|D|M|     Fragment Offset     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Time to Live |    Protocol   |         Header Checksum       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       Source Address                          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Destination Address                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Options (IHL > 5)          |    Padding    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Options are not parsed: [`Packet::options`] returns their raw bytes and the payload
//! starts at [`Packet::header_len`]. The payload ends at [`Packet::total_len`], so link
//! padding after the packet is excluded.
//!
//! [`Packet::new_checked`] validates version 4, IHL ≥ 5 and
//! `header_len <= total_len <= buffer length`.
//!
//! Panics: accessors panic only on a view made with [`Packet::new_unchecked`] over a
//! buffer shorter than the header or than `total_len`; after [`Packet::new_checked`]
//! none do (setters that change the IHL or total length can break that again).

use std::net::Ipv4Addr;

use super::{checksum, read_u16, write_u16, WireError};

/// Length in bytes of an IPv4 header without options.
pub const HEADER_LEN: usize = 20;

/// The TTL our own packets (echo replies, ICMP errors) carry.
pub const DEFAULT_TTL: u8 = 64;

mod field {
    use core::ops::Range;

    pub const VERSION_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const TOTAL_LEN: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLAGS_FRAG_OFFSET: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC_ADDR: Range<usize> = 12..16;
    pub const DST_ADDR: Range<usize> = 16..20;
    pub const OPTIONS: usize = 20;
}

const FLAG_DONT_FRAG: u16 = 0x4000;
const FLAG_MORE_FRAGS: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1fff;

/// An IP protocol number (IPv4 Protocol field, IPv6 Next Header field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Protocol(pub u8);

impl Protocol {
    /// IPv6 Hop-by-Hop Options extension header.
    pub const HOP_BY_HOP: Protocol = Protocol(0);
    /// Internet Control Message Protocol.
    pub const ICMP: Protocol = Protocol(1);
    /// Transmission Control Protocol.
    pub const TCP: Protocol = Protocol(6);
    /// User Datagram Protocol.
    pub const UDP: Protocol = Protocol(17);
    /// IPv6 Routing extension header.
    pub const IPV6_ROUTING: Protocol = Protocol(43);
    /// IPv6 Fragment extension header.
    pub const IPV6_FRAGMENT: Protocol = Protocol(44);
    /// ICMP for IPv6.
    pub const ICMPV6: Protocol = Protocol(58);
    /// IPv6 No Next Header.
    pub const IPV6_NO_NEXT_HEADER: Protocol = Protocol(59);
    /// IPv6 Destination Options extension header.
    pub const IPV6_DEST_OPTIONS: Protocol = Protocol(60);
}

impl From<u8> for Protocol {
    fn from(value: u8) -> Self {
        Protocol(value)
    }
}

impl From<Protocol> for u8 {
    fn from(value: Protocol) -> Self {
        value.0
    }
}

/// A zero-copy view of an IPv4 packet.
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

    /// Checks the buffer holds a 20-byte header ([`WireError::Truncated`]), version is 4
    /// and `20 <= header_len <= total_len` ([`WireError::Malformed`]), and the buffer
    /// holds `total_len` bytes ([`WireError::Truncated`]). Does not verify the checksum.
    pub fn check(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if self.version() != 4 {
            return Err(WireError::Malformed);
        }
        let header_len = self.header_len();
        let total_len = usize::from(self.total_len());
        if header_len < HEADER_LEN || header_len > total_len {
            return Err(WireError::Malformed);
        }
        if total_len > len {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole underlying buffer (may extend past `total_len`).
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Version field (4).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION_IHL] >> 4
    }

    /// Header length in bytes (IHL × 4), options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VERSION_IHL] & 0x0f) * 4
    }

    /// Differentiated Services Code Point (6 bits).
    pub fn dscp(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] >> 2
    }

    /// Explicit Congestion Notification (2 bits).
    pub fn ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] & 0x03
    }

    /// Total length in bytes, header included.
    pub fn total_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::TOTAL_LEN)
    }

    /// Identification field.
    pub fn ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::IDENT)
    }

    /// Don't Fragment flag.
    pub fn dont_frag(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLAGS_FRAG_OFFSET) & FLAG_DONT_FRAG != 0
    }

    /// More Fragments flag.
    pub fn more_frags(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLAGS_FRAG_OFFSET) & FLAG_MORE_FRAGS != 0
    }

    /// Fragment offset in bytes (the field counts 8-byte units).
    pub fn frag_offset_bytes(&self) -> u16 {
        (read_u16(self.buffer.as_ref(), field::FLAGS_FRAG_OFFSET) & FRAG_OFFSET_MASK) * 8
    }

    /// Whether this packet is a fragment (More Fragments set or a non-zero offset).
    pub fn is_fragment(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLAGS_FRAG_OFFSET) & (FLAG_MORE_FRAGS | FRAG_OFFSET_MASK) != 0
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Protocol of the payload.
    pub fn protocol(&self) -> Protocol {
        Protocol(self.buffer.as_ref()[field::PROTOCOL])
    }

    /// Header checksum field.
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::SRC_ADDR];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::DST_ADDR];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// The header, options included (`header_len` bytes).
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.header_len()]
    }

    /// The raw option bytes (empty when IHL is 5).
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::OPTIONS..self.header_len()]
    }

    /// Whether the header checksum is correct.
    pub fn verify_checksum(&self) -> bool {
        checksum::sum(self.header()) == 0xffff
    }

    /// The payload: bytes from `header_len` to `total_len`.
    pub fn payload(&self) -> &[u8] {
        let end = usize::from(self.total_len());
        &self.buffer.as_ref()[self.header_len()..end]
    }

    /// The packet itself: the first `total_len` bytes, without link padding.
    pub fn packet(&self) -> &[u8] {
        &self.buffer.as_ref()[..usize::from(self.total_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the version field.
    pub fn set_version(&mut self, version: u8) {
        let b = &mut self.buffer.as_mut()[field::VERSION_IHL];
        *b = (*b & 0x0f) | (version << 4);
    }

    /// Sets the header length in bytes (rounded down to a multiple of 4; at most 60).
    pub fn set_header_len(&mut self, header_len: usize) {
        let ihl = ((header_len / 4) & 0x0f) as u8;
        let b = &mut self.buffer.as_mut()[field::VERSION_IHL];
        *b = (*b & 0xf0) | ihl;
    }

    /// Sets the DSCP (low 6 bits used).
    pub fn set_dscp(&mut self, dscp: u8) {
        let b = &mut self.buffer.as_mut()[field::DSCP_ECN];
        *b = (*b & 0x03) | (dscp << 2);
    }

    /// Sets the ECN bits (low 2 bits used).
    pub fn set_ecn(&mut self, ecn: u8) {
        let b = &mut self.buffer.as_mut()[field::DSCP_ECN];
        *b = (*b & 0xfc) | (ecn & 0x03);
    }

    /// Sets the total length in bytes.
    pub fn set_total_len(&mut self, total_len: u16) {
        write_u16(self.buffer.as_mut(), field::TOTAL_LEN, total_len);
    }

    /// Sets the identification field.
    pub fn set_ident(&mut self, ident: u16) {
        write_u16(self.buffer.as_mut(), field::IDENT, ident);
    }

    fn set_flag(&mut self, flag: u16, value: bool) {
        let old = read_u16(self.buffer.as_ref(), field::FLAGS_FRAG_OFFSET);
        let new = if value { old | flag } else { old & !flag };
        write_u16(self.buffer.as_mut(), field::FLAGS_FRAG_OFFSET, new);
    }

    /// Sets the Don't Fragment flag.
    pub fn set_dont_frag(&mut self, value: bool) {
        self.set_flag(FLAG_DONT_FRAG, value);
    }

    /// Sets the More Fragments flag.
    pub fn set_more_frags(&mut self, value: bool) {
        self.set_flag(FLAG_MORE_FRAGS, value);
    }

    /// Sets the fragment offset in bytes (rounded down to a multiple of 8).
    pub fn set_frag_offset_bytes(&mut self, offset_bytes: u16) {
        let old = read_u16(self.buffer.as_ref(), field::FLAGS_FRAG_OFFSET);
        let new = (old & !FRAG_OFFSET_MASK) | (offset_bytes / 8);
        write_u16(self.buffer.as_mut(), field::FLAGS_FRAG_OFFSET, new);
    }

    /// Sets the time to live (checksum not updated).
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    /// Sets the protocol.
    pub fn set_protocol(&mut self, protocol: Protocol) {
        self.buffer.as_mut()[field::PROTOCOL] = protocol.0;
    }

    /// Sets the header checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Sets the source address (checksum not updated).
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address (checksum not updated).
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// Recomputes and writes the header checksum over `header_len` bytes.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let value = checksum::checksum(self.header());
        self.set_checksum(value);
    }

    /// Decrements the TTL and updates the header checksum incrementally (RFC 1624);
    /// returns the new TTL. A TTL of 0 is left unchanged (and 0 returned): check
    /// `ttl() <= 1` first and send Time Exceeded instead of forwarding.
    pub fn decrement_ttl_incremental(&mut self) -> u8 {
        let ttl = self.ttl();
        if ttl == 0 {
            return 0;
        }
        let protocol = self.protocol().0;
        let old_word = u16::from_be_bytes([ttl, protocol]);
        let new_word = u16::from_be_bytes([ttl - 1, protocol]);
        let new_checksum = checksum::update16(self.checksum(), old_word, new_word);
        self.set_ttl(ttl - 1);
        self.set_checksum(new_checksum);
        ttl - 1
    }

    /// The header, mutable (`header_len` bytes).
    pub fn header_mut(&mut self) -> &mut [u8] {
        let header_len = self.header_len();
        &mut self.buffer.as_mut()[..header_len]
    }

    /// The payload, mutable: bytes from `header_len` to `total_len`.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        let end = usize::from(self.total_len());
        &mut self.buffer.as_mut()[start..end]
    }
}

/// Writes a 20-byte IPv4 header without options into `out` (DSCP/ECN 0, ident 0, DF
/// clear, not a fragment) with `total_len = 20 + payload_len` and a correct checksum;
/// returns [`HEADER_LEN`]. [`WireError::BufferTooSmall`] if `out` is shorter than 20
/// bytes, [`WireError::Malformed`] if the total length would exceed 65535.
pub fn emit_header(
    out: &mut [u8],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: Protocol,
    ttl: u8,
    payload_len: usize,
) -> Result<usize, WireError> {
    if out.len() < HEADER_LEN {
        return Err(WireError::BufferTooSmall);
    }
    let total_len = u16::try_from(HEADER_LEN + payload_len).map_err(|_| WireError::Malformed)?;
    let mut packet = Packet::new_unchecked(&mut out[..HEADER_LEN]);
    packet.buffer.fill(0);
    packet.set_version(4);
    packet.set_header_len(HEADER_LEN);
    packet.set_total_len(total_len);
    packet.set_ttl(ttl);
    packet.set_protocol(protocol);
    packet.set_src_addr(src);
    packet.set_dst_addr(dst);
    packet.fill_checksum();
    Ok(HEADER_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A captured IPv4/ICMP echo request (ping 8.8.8.8 from 192.168.1.10), 84 bytes.
    const ECHO_REQUEST: [u8; 84] = [
        0x45, 0x00, 0x00, 0x54, 0x4e, 0x3a, 0x40, 0x00, 0x40, 0x01, 0x1a, 0xad, 0xc0, 0xa8, 0x01, 0x0a, 0x08, 0x08,
        0x08, 0x08, // IP header
        0x08, 0x00, 0x3e, 0x1e, 0x00, 0x05, 0x00, 0x01, // ICMP echo header
        0x6d, 0x2f, 0xad, 0x65, 0x00, 0x00, 0x00, 0x00, 0xd4, 0x73, 0x0c, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x11,
        0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x21, 0x22, 0x23,
        0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f, 0x30, 0x31, 0x32, 0x33, 0x34, 0x35,
        0x36, 0x37,
    ];

    #[test]
    fn parse_captured_packet() {
        let packet = Packet::new_checked(&ECHO_REQUEST[..]).unwrap();
        assert_eq!(packet.version(), 4);
        assert_eq!(packet.header_len(), 20);
        assert_eq!(packet.dscp(), 0);
        assert_eq!(packet.ecn(), 0);
        assert_eq!(packet.total_len(), 84);
        assert_eq!(packet.ident(), 0x4e3a);
        assert!(packet.dont_frag());
        assert!(!packet.more_frags());
        assert_eq!(packet.frag_offset_bytes(), 0);
        assert!(!packet.is_fragment());
        assert_eq!(packet.ttl(), 64);
        assert_eq!(packet.protocol(), Protocol::ICMP);
        assert_eq!(packet.checksum(), 0x1aad);
        assert_eq!(packet.src_addr(), Ipv4Addr::new(192, 168, 1, 10));
        assert_eq!(packet.dst_addr(), Ipv4Addr::new(8, 8, 8, 8));
        assert!(packet.options().is_empty());
        assert_eq!(packet.payload().len(), 64);
        assert_eq!(packet.payload()[0], 8);
        assert!(packet.verify_checksum());
    }

    #[test]
    fn fill_checksum_restores_capture() {
        let mut bytes = ECHO_REQUEST;
        let mut packet = Packet::new_checked(&mut bytes[..]).unwrap();
        packet.set_checksum(0x1234);
        assert!(!packet.verify_checksum());
        packet.fill_checksum();
        assert_eq!(packet.checksum(), 0x1aad);
        assert_eq!(bytes, ECHO_REQUEST);
    }

    #[test]
    fn decrement_ttl_matches_recomputation() {
        let mut bytes = ECHO_REQUEST;
        let mut packet = Packet::new_checked(&mut bytes[..]).unwrap();
        assert_eq!(packet.decrement_ttl_incremental(), 63);
        assert_eq!(packet.ttl(), 63);
        assert!(packet.verify_checksum());
        assert_eq!(packet.checksum(), 0x1bad);
        packet.set_ttl(0);
        packet.fill_checksum();
        assert_eq!(packet.decrement_ttl_incremental(), 0);
        assert!(packet.verify_checksum());
    }

    #[test]
    fn padding_and_options() {
        // Ethernet padding after total_len is excluded from the payload.
        let mut padded = ECHO_REQUEST.to_vec();
        padded.extend_from_slice(&[0; 6]);
        let packet = Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(packet.payload().len(), 64);
        assert_eq!(packet.packet(), &ECHO_REQUEST[..]);

        // IHL 6 with a 4-byte option (Router Alert).
        let mut with_option = vec![0x46, 0, 0, 28, 0, 0, 0, 0, 1, 2, 0, 0, 10, 0, 0, 1, 224, 0, 0, 22];
        with_option.extend_from_slice(&[0x94, 0x04, 0x00, 0x00, 0xaa, 0xbb, 0xcc, 0xdd]);
        let mut packet = Packet::new_checked(&mut with_option[..]).unwrap();
        packet.fill_checksum();
        assert!(packet.verify_checksum());
        assert_eq!(packet.header_len(), 24);
        assert_eq!(packet.options(), &[0x94, 0x04, 0x00, 0x00]);
        assert_eq!(packet.payload(), &[0xaa, 0xbb, 0xcc, 0xdd]);
    }

    #[test]
    fn check_rejects() {
        assert_eq!(Packet::new_checked(&ECHO_REQUEST[..19]), Err(WireError::Truncated));
        assert_eq!(Packet::new_checked(&ECHO_REQUEST[..83]), Err(WireError::Truncated));
        let mutate = |offset: usize, value: u8| {
            let mut bytes = ECHO_REQUEST;
            bytes[offset] = value;
            Packet::new_checked(bytes.to_vec()).map(|_| ())
        };
        assert_eq!(mutate(0, 0x65), Err(WireError::Malformed)); // version 6
        assert_eq!(mutate(0, 0x44), Err(WireError::Malformed)); // IHL 4
        assert_eq!(mutate(3, 19), Err(WireError::Malformed)); // total_len < 20
        let mut long_header = ECHO_REQUEST;
        long_header[0] = 0x4f; // header_len 60
        long_header[3] = 40; // > total_len 40
        assert_eq!(Packet::new_checked(&long_header[..]), Err(WireError::Malformed));
        long_header[3] = 60;
        assert!(Packet::new_checked(&long_header[..]).is_ok());
    }

    #[test]
    fn fragment_fields() {
        let mut bytes = ECHO_REQUEST;
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_dont_frag(false);
        packet.set_more_frags(true);
        packet.set_frag_offset_bytes(1480);
        assert!(!packet.dont_frag());
        assert!(packet.more_frags());
        assert_eq!(packet.frag_offset_bytes(), 1480);
        assert!(packet.is_fragment());
        assert_eq!(&bytes[6..8], &[0x20, 0xb9]);
    }

    proptest! {
        #[test]
        fn emit_parse_round_trip(
            src in any::<[u8; 4]>(),
            dst in any::<[u8; 4]>(),
            protocol in any::<u8>(),
            ttl in any::<u8>(),
            payload_len in 0usize..100,
            dscp in 0u8..64,
            ecn in 0u8..4,
            ident in any::<u16>(),
        ) {
            let mut out = vec![0u8; HEADER_LEN + payload_len];
            emit_header(&mut out, src.into(), dst.into(), Protocol(protocol), ttl, payload_len)
                .unwrap();
            let mut packet = Packet::new_checked(&mut out[..]).unwrap();
            prop_assert!(packet.verify_checksum());
            packet.set_dscp(dscp);
            packet.set_ecn(ecn);
            packet.set_ident(ident);
            packet.fill_checksum();
            prop_assert_eq!(packet.src_addr(), Ipv4Addr::from(src));
            prop_assert_eq!(packet.dst_addr(), Ipv4Addr::from(dst));
            prop_assert_eq!(packet.protocol(), Protocol(protocol));
            prop_assert_eq!(packet.ttl(), ttl);
            prop_assert_eq!(packet.dscp(), dscp);
            prop_assert_eq!(packet.ecn(), ecn);
            prop_assert_eq!(packet.ident(), ident);
            prop_assert_eq!(packet.payload().len(), payload_len);
            prop_assert!(packet.verify_checksum());
        }

        #[test]
        fn decrement_ttl_keeps_checksum_valid(
            ttl in 1u8..=255,
            rest in any::<[u8; 20]>(),
        ) {
            let mut header = rest;
            header[0] = 0x45;
            header[2] = 0;
            header[3] = 20;
            header[8] = ttl;
            let mut packet = Packet::new_checked(&mut header[..]).unwrap();
            packet.fill_checksum();
            prop_assert_eq!(packet.decrement_ttl_incremental(), ttl - 1);
            prop_assert!(packet.verify_checksum());
            let incremental = packet.checksum();
            packet.fill_checksum();
            prop_assert_eq!(incremental, packet.checksum());
        }

        #[test]
        fn new_checked_never_panics(
            mut bytes in proptest::collection::vec(any::<u8>(), 0..80),
            force_version in any::<bool>(),
        ) {
            if force_version && !bytes.is_empty() {
                bytes[0] = 0x40 | (bytes[0] & 0x0f);
            }
            if let Ok(mut packet) = Packet::new_checked(&mut bytes[..]) {
                let _ = (packet.version(), packet.header_len(), packet.dscp(), packet.ecn(),
                    packet.total_len(), packet.ident(), packet.dont_frag(), packet.more_frags(),
                    packet.frag_offset_bytes(), packet.is_fragment(), packet.ttl(),
                    packet.protocol(), packet.checksum(), packet.src_addr(), packet.dst_addr(),
                    packet.header().len(), packet.options().len(), packet.verify_checksum(),
                    packet.payload().len(), packet.packet().len());
                packet.decrement_ttl_incremental();
                packet.fill_checksum();
                let _ = packet.payload_mut().len() + packet.header_mut().len();
            }
        }
    }
}

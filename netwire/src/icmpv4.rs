//! ICMP for IPv4 (RFC 792, RFC 1812 §4.3).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     Type      |     Code      |          Checksum             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                     Rest of header                            |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     Data ...
//! +-+-+-+-+-+-+-+-+-
//!
//! Echo request / reply rest of header:
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |           Identifier          |        Sequence Number        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!
//! Error messages (destination unreachable, time exceeded, parameter problem):
//! rest of header is unused, the next-hop MTU (fragmentation needed, RFC 1191) or the
//! pointer (parameter problem); the data quotes the offending IP packet.
//! ```
//!
//! The view covers the whole ICMP message (the IPv4 payload); the checksum covers it
//! all, with no pseudo-header.
//!
//! Panics: accessors panic only on a view made with [`Packet::new_unchecked`] over a
//! buffer shorter than [`HEADER_LEN`]; after [`Packet::new_checked`] none do.

use std::net::Ipv4Addr;

use super::ipv4::{self, Protocol};
use super::{checksum, read_u16, read_u32, write_u16, write_u32, WireError};

/// Length in bytes of the ICMP header (type, code, checksum, rest of header).
pub const HEADER_LEN: usize = 8;

/// The largest IPv4 packet an ICMP error we originate may make (RFC 1812 §4.3.2.3).
pub const MAX_ERROR_IP_PACKET_LEN: usize = 576;

/// The largest ICMP error message [`emit_error`] writes: 576 minus a 20-byte IPv4 header.
pub const MAX_ERROR_LEN: usize = MAX_ERROR_IP_PACKET_LEN - ipv4::HEADER_LEN;

mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const REST_OF_HEADER: usize = 4;
    pub const ECHO_IDENT: usize = 4;
    pub const ECHO_SEQ_NO: usize = 6;
    pub const DATA: usize = 8;
}

/// An ICMP message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Message(pub u8);

impl Message {
    /// Echo reply.
    pub const ECHO_REPLY: Message = Message(0);
    /// Destination unreachable (codes in [`dest_unreachable`]).
    pub const DEST_UNREACHABLE: Message = Message(3);
    /// Redirect.
    pub const REDIRECT: Message = Message(5);
    /// Echo request.
    pub const ECHO_REQUEST: Message = Message(8);
    /// Time exceeded (codes in [`time_exceeded`]).
    pub const TIME_EXCEEDED: Message = Message(11);
    /// Parameter problem.
    pub const PARAMETER_PROBLEM: Message = Message(12);

    /// Whether this is an error message (one about which no ICMP error is sent).
    pub fn is_error(self) -> bool {
        matches!(self.0, 3 | 4 | 5 | 11 | 12)
    }
}

/// Destination unreachable codes.
pub mod dest_unreachable {
    /// Network unreachable (no route).
    pub const NET_UNREACHABLE: u8 = 0;
    /// Host unreachable (no neighbor).
    pub const HOST_UNREACHABLE: u8 = 1;
    /// Protocol unreachable.
    pub const PROTOCOL_UNREACHABLE: u8 = 2;
    /// Port unreachable.
    pub const PORT_UNREACHABLE: u8 = 3;
    /// Fragmentation needed and DF set; rest of header carries the next-hop MTU.
    pub const FRAG_NEEDED: u8 = 4;
    /// Communication administratively prohibited (RFC 1812).
    pub const ADMIN_PROHIBITED: u8 = 13;
}

/// Time exceeded codes.
pub mod time_exceeded {
    /// TTL reached zero in transit.
    pub const TTL_EXCEEDED: u8 = 0;
    /// Fragment reassembly time exceeded.
    pub const REASSEMBLY_TIME_EXCEEDED: u8 = 1;
}

/// Rest-of-header value for "fragmentation needed": the next-hop MTU in the low 16 bits.
pub fn frag_needed_rest_of_header(next_hop_mtu: u16) -> u32 {
    u32::from(next_hop_mtu)
}

/// Rest-of-header value for "parameter problem": the byte offset of the bad field in
/// the high 8 bits.
pub fn parameter_problem_rest_of_header(pointer: u8) -> u32 {
    u32::from(pointer) << 24
}

/// A zero-copy view of an ICMP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after checking it holds the 8-byte header ([`WireError::Truncated`]).
    pub fn new_checked(buffer: T) -> Result<Packet<T>, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the buffer holds the 8-byte header.
    pub fn check_len(&self) -> Result<(), WireError> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(WireError::Truncated)
        } else {
            Ok(())
        }
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole message.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Message type.
    pub fn msg_type(&self) -> Message {
        Message(self.buffer.as_ref()[field::TYPE])
    }

    /// Message code.
    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The 4 bytes after the checksum, big-endian.
    pub fn rest_of_header(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::REST_OF_HEADER)
    }

    /// Echo identifier (echo request/reply only).
    pub fn echo_ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ECHO_IDENT)
    }

    /// Echo sequence number (echo request/reply only).
    pub fn echo_seq_no(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ECHO_SEQ_NO)
    }

    /// The bytes after the 8-byte header (echo data, or the quoted packet of an error).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DATA..]
    }

    /// Whether the checksum over the whole message is correct.
    pub fn verify_checksum(&self) -> bool {
        checksum::sum(self.buffer.as_ref()) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the message type (checksum not updated).
    pub fn set_msg_type(&mut self, value: Message) {
        self.buffer.as_mut()[field::TYPE] = value.0;
    }

    /// Sets the message code (checksum not updated).
    pub fn set_msg_code(&mut self, value: u8) {
        self.buffer.as_mut()[field::CODE] = value;
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Sets the 4 bytes after the checksum.
    pub fn set_rest_of_header(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::REST_OF_HEADER, value);
    }

    /// Sets the echo identifier.
    pub fn set_echo_ident(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::ECHO_IDENT, value);
    }

    /// Sets the echo sequence number.
    pub fn set_echo_seq_no(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::ECHO_SEQ_NO, value);
    }

    /// Recomputes and writes the checksum over the whole message.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let value = checksum::checksum(self.buffer.as_ref());
        self.set_checksum(value);
    }

    /// The bytes after the 8-byte header, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::DATA..]
    }
}

/// Writes an ICMP error message into `out` and returns its length in bytes.
///
/// The message is the 8-byte header (`msg_type`, `code`, `rest_of_header`, checksum
/// filled) followed by as much of `offending_ip_packet` as fits in [`MAX_ERROR_LEN`]
/// (RFC 1812 §4.3.2.3: the IPv4 packet carrying the error stays within 576 bytes, and
/// includes at least the offending IP header and 8 bytes of its payload). If
/// `offending_ip_packet` is a valid IPv4 packet, bytes past its `total_len` (link
/// padding) are not quoted. The caller writes the IPv4 header (protocol ICMP).
///
/// [`WireError::BufferTooSmall`] if `out` cannot hold the message.
pub fn emit_error(
    out: &mut [u8],
    msg_type: Message,
    code: u8,
    rest_of_header: u32,
    offending_ip_packet: &[u8],
) -> Result<usize, WireError> {
    let offending = match ipv4::Packet::new_checked(offending_ip_packet) {
        Ok(packet) => &offending_ip_packet[..usize::from(packet.total_len())],
        Err(_) => offending_ip_packet,
    };
    let quoted_len = offending.len().min(MAX_ERROR_LEN - HEADER_LEN);
    let len = HEADER_LEN + quoted_len;
    if out.len() < len {
        return Err(WireError::BufferTooSmall);
    }
    let mut packet = Packet::new_unchecked(&mut out[..len]);
    packet.set_msg_type(msg_type);
    packet.set_msg_code(code);
    packet.set_rest_of_header(rest_of_header);
    packet.payload_mut().copy_from_slice(&offending[..quoted_len]);
    packet.fill_checksum();
    Ok(len)
}

/// Whether RFC 1812 §4.3.2.7 allows sending an ICMP error about `offending_ip_packet`:
/// it must be a valid IPv4 packet, not a non-initial fragment, not sent to a multicast
/// or limited-broadcast address, from a source that is not unspecified, multicast,
/// limited broadcast or loopback, and not itself an ICMP error message. (Subnet-directed
/// broadcasts and link-layer broadcast are for the caller to check.)
pub fn is_error_allowed(offending_ip_packet: &[u8]) -> bool {
    let Ok(packet) = ipv4::Packet::new_checked(offending_ip_packet) else {
        return false;
    };
    if packet.frag_offset_bytes() != 0 {
        return false;
    }
    let (src, dst) = (packet.src_addr(), packet.dst_addr());
    if dst.is_multicast() || dst.is_broadcast() {
        return false;
    }
    if src.is_unspecified() || src.is_multicast() || src.is_broadcast() || src.is_loopback() {
        return false;
    }
    if packet.protocol() == Protocol::ICMP {
        if let Some(&icmp_type) = packet.payload().first() {
            return !Message(icmp_type).is_error();
        }
    }
    true
}

/// Turns an IPv4 packet holding an ICMP echo request into the echo reply, in place:
/// swaps source and destination, sets type 0 and updates the ICMP checksum
/// incrementally, resets the TTL to [`ipv4::DEFAULT_TTL`] and recomputes the IPv4
/// header checksum. Options and link padding are left as they are.
///
/// Errors: the IPv4 packet's own [`ipv4::Packet::new_checked`] errors;
/// [`WireError::BadChecksum`] if either checksum is wrong; [`WireError::Unsupported`] if
/// it is not an unfragmented ICMP echo request, or was sent to a multicast or limited
/// broadcast address (a reply must come from one of our unicast addresses, which this
/// function does not know).
pub fn echo_request_to_reply(ip_packet: &mut [u8]) -> Result<(), WireError> {
    let mut ip = ipv4::Packet::new_checked(ip_packet)?;
    if !ip.verify_checksum() {
        return Err(WireError::BadChecksum);
    }
    if ip.protocol() != Protocol::ICMP || ip.is_fragment() {
        return Err(WireError::Unsupported);
    }
    let (src, dst): (Ipv4Addr, Ipv4Addr) = (ip.src_addr(), ip.dst_addr());
    if dst.is_multicast() || dst.is_broadcast() {
        return Err(WireError::Unsupported);
    }
    {
        let mut icmp = Packet::new_checked(ip.payload_mut())?;
        if icmp.msg_type() != Message::ECHO_REQUEST {
            return Err(WireError::Unsupported);
        }
        if !icmp.verify_checksum() {
            return Err(WireError::BadChecksum);
        }
        let code = icmp.msg_code();
        let old_word = u16::from_be_bytes([Message::ECHO_REQUEST.0, code]);
        let new_word = u16::from_be_bytes([Message::ECHO_REPLY.0, code]);
        icmp.set_msg_type(Message::ECHO_REPLY);
        let updated = checksum::update16(icmp.checksum(), old_word, new_word);
        if updated == 0 {
            // RFC 1624 yields 0x0000 instead of 0xffff when the message is all zeros.
            icmp.fill_checksum();
        } else {
            icmp.set_checksum(updated);
        }
    }
    ip.set_src_addr(dst);
    ip.set_dst_addr(src);
    ip.set_ttl(ipv4::DEFAULT_TTL);
    ip.fill_checksum();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A captured IPv4/ICMP echo request (ping 8.8.8.8 from 192.168.1.10, id 5, seq 1).
    const ECHO_REQUEST: [u8; 84] = [
        0x45, 0x00, 0x00, 0x54, 0x4e, 0x3a, 0x40, 0x00, 0x40, 0x01, 0x1a, 0xad, 0xc0, 0xa8, 0x01, 0x0a, 0x08, 0x08,
        0x08, 0x08, // IP header
        0x08, 0x00, 0x3e, 0x1e, 0x00, 0x05, 0x00, 0x01, // ICMP echo header
        0x6d, 0x2f, 0xad, 0x65, 0x00, 0x00, 0x00, 0x00, 0xd4, 0x73, 0x0c, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x11,
        0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x21, 0x22, 0x23,
        0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f, 0x30, 0x31, 0x32, 0x33, 0x34, 0x35,
        0x36, 0x37,
    ];

    /// A captured traceroute probe: UDP 192.168.1.10:54321 -> 203.0.113.7:33434, TTL 1.
    const UDP_PROBE: [u8; 60] = [
        0x45, 0x00, 0x00, 0x3c, 0x1c, 0x46, 0x00, 0x00, 0x01, 0x11, 0x9f, 0xb1, 0xc0, 0xa8, 0x01, 0x0a, 0xcb, 0x00,
        0x71, 0x07, 0xd4, 0x31, 0x82, 0x9a, 0x00, 0x28, 0xb6, 0x12, 0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47,
        0x48, 0x49, 0x4a, 0x4b, 0x4c, 0x4d, 0x4e, 0x4f, 0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59,
        0x5a, 0x5b, 0x5c, 0x5d, 0x5e, 0x5f,
    ];

    #[test]
    fn parse_captured_echo() {
        let icmp = Packet::new_checked(&ECHO_REQUEST[20..]).unwrap();
        assert_eq!(icmp.msg_type(), Message::ECHO_REQUEST);
        assert_eq!(icmp.msg_code(), 0);
        assert_eq!(icmp.checksum(), 0x3e1e);
        assert_eq!(icmp.echo_ident(), 5);
        assert_eq!(icmp.echo_seq_no(), 1);
        assert_eq!(icmp.rest_of_header(), 0x0005_0001);
        assert_eq!(icmp.payload().len(), 56);
        assert!(icmp.verify_checksum());
    }

    #[test]
    fn fill_checksum_matches_capture() {
        let mut bytes = ECHO_REQUEST;
        let mut icmp = Packet::new_checked(&mut bytes[20..]).unwrap();
        icmp.set_checksum(0);
        assert!(!icmp.verify_checksum());
        icmp.fill_checksum();
        assert_eq!(bytes, ECHO_REQUEST);
    }

    #[test]
    fn echo_reply_from_capture() {
        let mut bytes = ECHO_REQUEST;
        echo_request_to_reply(&mut bytes).unwrap();
        let ip = ipv4::Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(ip.src_addr(), Ipv4Addr::new(8, 8, 8, 8));
        assert_eq!(ip.dst_addr(), Ipv4Addr::new(192, 168, 1, 10));
        assert_eq!(ip.ttl(), 64);
        assert_eq!(ip.checksum(), 0x1aad); // addresses swapped: same sum
        assert!(ip.verify_checksum());
        let icmp = Packet::new_checked(ip.payload()).unwrap();
        assert_eq!(icmp.msg_type(), Message::ECHO_REPLY);
        assert_eq!(icmp.checksum(), 0x461e);
        assert!(icmp.verify_checksum());
        assert_eq!((icmp.echo_ident(), icmp.echo_seq_no()), (5, 1));
        assert_eq!(&bytes[28..], &ECHO_REQUEST[28..]);
    }

    #[test]
    fn echo_reply_rejects() {
        let mut not_echo = ECHO_REQUEST;
        echo_request_to_reply(&mut not_echo).unwrap();
        assert_eq!(echo_request_to_reply(&mut not_echo), Err(WireError::Unsupported));

        let mut bad_icmp = ECHO_REQUEST;
        bad_icmp[40] ^= 1;
        assert_eq!(echo_request_to_reply(&mut bad_icmp), Err(WireError::BadChecksum));

        let mut bad_ip = ECHO_REQUEST;
        bad_ip[8] = 63;
        assert_eq!(echo_request_to_reply(&mut bad_ip), Err(WireError::BadChecksum));

        let mut multicast = ECHO_REQUEST;
        multicast[16..20].copy_from_slice(&[224, 0, 0, 1]);
        ipv4::Packet::new_unchecked(&mut multicast[..]).fill_checksum();
        assert_eq!(echo_request_to_reply(&mut multicast), Err(WireError::Unsupported));

        let mut udp = UDP_PROBE;
        assert_eq!(echo_request_to_reply(&mut udp), Err(WireError::Unsupported));
        assert_eq!(echo_request_to_reply(&mut [0x45; 10]), Err(WireError::Truncated));
        assert_eq!(udp, UDP_PROBE);
    }

    #[test]
    fn echo_reply_all_zero_message() {
        // id 0, seq 0, no data: the reply message is all zeros, checksum must be 0xffff.
        let mut bytes = [0u8; 28];
        ipv4::emit_header(&mut bytes, Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2), Protocol::ICMP, 64, 8)
            .unwrap();
        bytes[20] = 8;
        Packet::new_unchecked(&mut bytes[20..]).fill_checksum();
        echo_request_to_reply(&mut bytes).unwrap();
        let icmp = Packet::new_checked(&bytes[20..]).unwrap();
        assert_eq!(icmp.checksum(), 0xffff);
        assert!(icmp.verify_checksum());
    }

    #[test]
    fn time_exceeded_for_captured_probe() {
        let mut out = [0u8; MAX_ERROR_LEN];
        let mut padded = UDP_PROBE.to_vec();
        padded.extend_from_slice(&[0; 4]); // link padding is not quoted
        let len = emit_error(&mut out, Message::TIME_EXCEEDED, time_exceeded::TTL_EXCEEDED, 0, &padded).unwrap();
        assert_eq!(len, 68);
        let icmp = Packet::new_checked(&out[..len]).unwrap();
        assert_eq!(icmp.msg_type(), Message::TIME_EXCEEDED);
        assert_eq!(icmp.msg_code(), 0);
        assert_eq!(icmp.rest_of_header(), 0);
        assert_eq!(icmp.checksum(), 0xf2f3);
        assert!(icmp.verify_checksum());
        assert_eq!(icmp.payload(), &UDP_PROBE[..]);
        assert!(is_error_allowed(&UDP_PROBE));
    }

    #[test]
    fn error_is_capped_at_576() {
        let mut big = vec![0u8; 1500];
        ipv4::emit_header(&mut big, Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2), Protocol::UDP, 64, 1480)
            .unwrap();
        let mut out = [0u8; 1500];
        let len = emit_error(
            &mut out,
            Message::DEST_UNREACHABLE,
            dest_unreachable::FRAG_NEEDED,
            frag_needed_rest_of_header(1400),
            &big,
        )
        .unwrap();
        assert_eq!(len, MAX_ERROR_LEN);
        assert_eq!(len + ipv4::HEADER_LEN, 576);
        let icmp = Packet::new_checked(&out[..len]).unwrap();
        assert_eq!(icmp.rest_of_header(), 1400);
        assert!(icmp.verify_checksum());
        assert_eq!(icmp.payload(), &big[..548]);
        assert_eq!(emit_error(&mut out[..555], Message::DEST_UNREACHABLE, 4, 0, &big), Err(WireError::BufferTooSmall));
    }

    #[test]
    fn error_allowed_rules() {
        assert!(!is_error_allowed(&UDP_PROBE[..30]));
        let with = |offset: usize, bytes: &[u8]| {
            let mut packet = UDP_PROBE;
            packet[offset..offset + bytes.len()].copy_from_slice(bytes);
            is_error_allowed(&packet)
        };
        assert!(!with(16, &[224, 0, 0, 5]));
        assert!(!with(16, &[255, 255, 255, 255]));
        assert!(!with(12, &[0, 0, 0, 0]));
        assert!(!with(12, &[127, 0, 0, 1]));
        assert!(!with(6, &[0x00, 0x10])); // non-initial fragment
        assert!(with(6, &[0x20, 0x00])); // first fragment
        let icmp = |icmp_type: u8| {
            let mut packet = UDP_PROBE;
            packet[9] = 1;
            packet[20] = icmp_type;
            is_error_allowed(&packet)
        };
        assert!(!icmp(11)); // ICMP time exceeded
        assert!(!icmp(3)); // ICMP destination unreachable
        assert!(icmp(8)); // ICMP echo request
    }

    proptest! {
        #[test]
        fn emit_error_round_trip(
            ty in any::<u8>(),
            code in any::<u8>(),
            rest in any::<u32>(),
            offending in proptest::collection::vec(any::<u8>(), 0..700),
        ) {
            let mut out = [0u8; MAX_ERROR_LEN];
            let len = emit_error(&mut out, Message(ty), code, rest, &offending).unwrap();
            prop_assert!(len <= MAX_ERROR_LEN);
            let icmp = Packet::new_checked(&out[..len]).unwrap();
            prop_assert_eq!(icmp.msg_type(), Message(ty));
            prop_assert_eq!(icmp.msg_code(), code);
            prop_assert_eq!(icmp.rest_of_header(), rest);
            prop_assert!(icmp.verify_checksum());
            let quoted = icmp.payload();
            prop_assert_eq!(quoted, &offending[..quoted.len()]);
            prop_assert!(quoted.len() == offending.len() || quoted.len() == 548
                || ipv4::Packet::new_checked(&offending[..]).is_ok());
        }

        #[test]
        fn echo_reply_round_trip(
            src in any::<[u8; 4]>(),
            dst in 1u32..0xe000_0000,
            ttl in any::<u8>(),
            ident in any::<u16>(),
            seq in any::<u16>(),
            data in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let dst = Ipv4Addr::from(dst);
            let icmp_len = HEADER_LEN + data.len();
            let mut bytes = vec![0u8; ipv4::HEADER_LEN + icmp_len];
            ipv4::emit_header(&mut bytes, src.into(), dst, Protocol::ICMP, ttl, icmp_len).unwrap();
            {
                let mut icmp = Packet::new_unchecked(&mut bytes[ipv4::HEADER_LEN..]);
                icmp.set_msg_type(Message::ECHO_REQUEST);
                icmp.set_echo_ident(ident);
                icmp.set_echo_seq_no(seq);
                icmp.payload_mut().copy_from_slice(&data);
                icmp.fill_checksum();
            }
            echo_request_to_reply(&mut bytes).unwrap();
            let ip = ipv4::Packet::new_checked(&bytes[..]).unwrap();
            prop_assert!(ip.verify_checksum());
            prop_assert_eq!(ip.src_addr(), dst);
            prop_assert_eq!(ip.dst_addr(), Ipv4Addr::from(src));
            prop_assert_eq!(ip.ttl(), 64);
            let icmp = Packet::new_checked(ip.payload()).unwrap();
            prop_assert!(icmp.verify_checksum());
            prop_assert_eq!(icmp.msg_type(), Message::ECHO_REPLY);
            prop_assert_eq!(icmp.echo_ident(), ident);
            prop_assert_eq!(icmp.echo_seq_no(), seq);
            prop_assert_eq!(icmp.payload(), &data[..]);
        }

        #[test]
        fn new_checked_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(icmp) = Packet::new_checked(&bytes[..]) {
                let _ = (icmp.msg_type(), icmp.msg_type().is_error(), icmp.msg_code(),
                    icmp.checksum(), icmp.rest_of_header(), icmp.echo_ident(),
                    icmp.echo_seq_no(), icmp.payload().len(), icmp.verify_checksum());
            }
        }

        #[test]
        fn ip_level_functions_never_panic(
            mut bytes in proptest::collection::vec(any::<u8>(), 0..120),
            shape in any::<bool>(),
        ) {
            if shape && bytes.len() >= 20 {
                let len = bytes.len() as u16;
                bytes[0] = 0x45;
                bytes[2..4].copy_from_slice(&len.to_be_bytes());
                bytes[9] = 1;
            }
            let _ = is_error_allowed(&bytes);
            let mut out = [0u8; 200];
            let _ = emit_error(&mut out, Message::DEST_UNREACHABLE, 1, 0, &bytes);
            let _ = echo_request_to_reply(&mut bytes);
        }
    }
}

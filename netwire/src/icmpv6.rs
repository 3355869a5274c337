//! ICMPv6 (RFC 4443) and Neighbor Discovery (RFC 4861).
//!
//! ```text
//! ICMPv6 header:
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     Type      |     Code      |          Checksum             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |   Rest of header: echo identifier + sequence number, MTU      |
//! |   (packet too big), pointer (parameter problem) or unused     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     Data ... (echo data, or as much of the offending packet as fits)
//!
//! Neighbor Solicitation (type 135) / Advertisement (type 136):
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     Type      |     Code      |          Checksum             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |R|S|O|                     Reserved  (NS: all reserved)        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                                                               |
//! +                       Target Address                          +
//! |                        (16 bytes)                             |
//! +                                                               +
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |   Options ...
//! +-+-+-+-+-+-+-+-+-+-+-+-
//!
//! NDP option (length in units of 8 bytes, type and length included; 0 is invalid):
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     Type      |    Length     |  Link-layer address (type 1/2) ...
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! The checksum covers the IPv6 pseudo-header (source, destination, length, next
//! header 58) and the whole ICMPv6 message, so [`Packet::verify_checksum`] and
//! [`Packet::fill_checksum`] take the IPv6 addresses. The builders here
//! ([`emit_neighbor_solicit`], [`emit_neighbor_advert`], [`emit_error`]) leave the
//! checksum zero: the caller writes the IPv6 header, then fills it.
//!
//! Panics: accessors panic only on a view made with `new_unchecked` over a buffer
//! shorter than the fixed part of the message ([`HEADER_LEN`] for [`Packet`],
//! [`ND_MIN_LEN`] for [`NeighborSolicit`] / [`NeighborAdvert`]); after `new_checked`
//! none do. The option iterator never panics.

use core::ops::BitOr;
use std::net::Ipv6Addr;

use super::ipv4::Protocol;
use super::ipv6;
use super::{checksum, read_ipv6, read_u16, read_u32, write_u16, write_u32, MacAddr, WireError};

/// Length in bytes of the ICMPv6 header (type, code, checksum, rest of header).
pub const HEADER_LEN: usize = 8;

/// The largest ICMPv6 error message [`emit_error`] writes, so that with a 40-byte IPv6
/// header it fits the minimum MTU of 1280 bytes (RFC 4443 §2.4(c)).
pub const MAX_ERROR_LEN: usize = ipv6::MIN_MTU - ipv6::HEADER_LEN;

/// Length in bytes of a neighbor solicitation or advertisement without options.
pub const ND_MIN_LEN: usize = 24;

/// The hop limit every Neighbor Discovery message must carry (RFC 4861 §6.1, §7.1).
pub const ND_HOP_LIMIT: u8 = 255;

/// Length in bytes of a link-layer address option for Ethernet (one 8-byte unit).
pub const LINK_LAYER_OPTION_LEN: usize = 8;

mod field {
    use core::ops::Range;

    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const REST_OF_HEADER: usize = 4;
    pub const ECHO_IDENT: usize = 4;
    pub const ECHO_SEQ_NO: usize = 6;
    pub const DATA: usize = 8;

    pub const ND_FLAGS: usize = 4;
    pub const ND_TARGET: Range<usize> = 8..24;
    pub const ND_OPTIONS: usize = 24;
}

/// An ICMPv6 message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Message(pub u8);

impl Message {
    /// Destination unreachable (codes in [`dest_unreachable`]).
    pub const DEST_UNREACHABLE: Message = Message(1);
    /// Packet too big; rest of header carries the MTU.
    pub const PACKET_TOO_BIG: Message = Message(2);
    /// Time exceeded (codes in [`time_exceeded`]).
    pub const TIME_EXCEEDED: Message = Message(3);
    /// Parameter problem (codes in [`parameter_problem`]); rest of header is a pointer.
    pub const PARAMETER_PROBLEM: Message = Message(4);
    /// Echo request.
    pub const ECHO_REQUEST: Message = Message(128);
    /// Echo reply.
    pub const ECHO_REPLY: Message = Message(129);
    /// Router solicitation.
    pub const ROUTER_SOLICIT: Message = Message(133);
    /// Router advertisement.
    pub const ROUTER_ADVERT: Message = Message(134);
    /// Neighbor solicitation.
    pub const NEIGHBOR_SOLICIT: Message = Message(135);
    /// Neighbor advertisement.
    pub const NEIGHBOR_ADVERT: Message = Message(136);
    /// Redirect.
    pub const REDIRECT: Message = Message(137);

    /// Whether this is an error message (types 0..=127).
    pub fn is_error(self) -> bool {
        self.0 < 128
    }

    /// Whether this is a Neighbor Discovery message (types 133..=137).
    pub fn is_nd(self) -> bool {
        (133..=137).contains(&self.0)
    }
}

/// Destination unreachable codes.
pub mod dest_unreachable {
    /// No route to destination.
    pub const NO_ROUTE: u8 = 0;
    /// Communication administratively prohibited.
    pub const ADMIN_PROHIBITED: u8 = 1;
    /// Beyond scope of source address.
    pub const BEYOND_SCOPE: u8 = 2;
    /// Address unreachable (neighbor resolution failed).
    pub const ADDRESS_UNREACHABLE: u8 = 3;
    /// Port unreachable.
    pub const PORT_UNREACHABLE: u8 = 4;
}

/// Time exceeded codes.
pub mod time_exceeded {
    /// Hop limit exceeded in transit.
    pub const HOP_LIMIT_EXCEEDED: u8 = 0;
    /// Fragment reassembly time exceeded.
    pub const REASSEMBLY_TIME_EXCEEDED: u8 = 1;
}

/// Parameter problem codes.
pub mod parameter_problem {
    /// Erroneous header field encountered.
    pub const ERRONEOUS_HEADER_FIELD: u8 = 0;
    /// Unrecognized next header type encountered.
    pub const UNRECOGNIZED_NEXT_HEADER: u8 = 1;
    /// Unrecognized IPv6 option encountered.
    pub const UNRECOGNIZED_OPTION: u8 = 2;
}

/// A zero-copy view of an ICMPv6 message (the whole upper-layer payload).
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

    /// The 4 bytes after the checksum, big-endian (MTU, pointer, or echo id + seq).
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

    /// The bytes after the 8-byte header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DATA..]
    }

    /// Sum of the pseudo-header and the whole message, checksum field included.
    fn full_sum(&self, src: Ipv6Addr, dst: Ipv6Addr) -> u16 {
        let message = self.buffer.as_ref();
        // An ICMPv6 message longer than u32::MAX bytes cannot exist; saturate anyway.
        let len = u32::try_from(message.len()).unwrap_or(u32::MAX);
        let pseudo = checksum::pseudo_header_v6(src, dst, Protocol::ICMPV6.0, len);
        checksum::add(pseudo, checksum::sum(message))
    }

    /// Whether the checksum is correct for a packet from `src` to `dst`.
    pub fn verify_checksum(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        self.full_sum(src, dst) == 0xffff
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

    /// Computes and writes the checksum for a packet from `src` to `dst`.
    pub fn fill_checksum(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        self.set_checksum(0);
        let value = checksum::finish(self.full_sum(src, dst));
        self.set_checksum(value);
    }

    /// The bytes after the 8-byte header, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::DATA..]
    }
}

/// Neighbor advertisement flags (the high 3 bits of the byte after the checksum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NaFlags(pub u8);

impl NaFlags {
    /// No flag set.
    pub const NONE: NaFlags = NaFlags(0);
    /// R: the sender is a router.
    pub const ROUTER: NaFlags = NaFlags(0x80);
    /// S: sent in response to a solicitation.
    pub const SOLICITED: NaFlags = NaFlags(0x40);
    /// O: override an existing cache entry.
    pub const OVERRIDE: NaFlags = NaFlags(0x20);

    /// Whether every flag in `other` is set in `self`.
    pub fn contains(self, other: NaFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for NaFlags {
    type Output = NaFlags;

    /// Union of the flags.
    fn bitor(self, rhs: NaFlags) -> NaFlags {
        NaFlags(self.0 | rhs.0)
    }
}

/// NDP option type: source link-layer address.
pub const OPTION_SOURCE_LINK_LAYER_ADDR: u8 = 1;
/// NDP option type: target link-layer address.
pub const OPTION_TARGET_LINK_LAYER_ADDR: u8 = 2;
/// NDP option type: prefix information.
pub const OPTION_PREFIX_INFO: u8 = 3;
/// NDP option type: redirected header.
pub const OPTION_REDIRECTED_HEADER: u8 = 4;
/// NDP option type: MTU.
pub const OPTION_MTU: u8 = 5;

/// One NDP option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NdpOption<'a> {
    /// Source link-layer address (type 1): the first 6 bytes after type and length.
    SourceLinkLayerAddr(MacAddr),
    /// Target link-layer address (type 2): the first 6 bytes after type and length.
    TargetLinkLayerAddr(MacAddr),
    /// Any other option: its type and the bytes after type and length.
    Other {
        /// Option type.
        option_type: u8,
        /// Option bytes after the type and length fields (`8 * length - 2` bytes).
        data: &'a [u8],
    },
}

/// An iterator over the NDP options in a byte slice (RFC 4861 §4.6).
///
/// Yields `Err(WireError::Malformed)` for an option of length 0 and
/// `Err(WireError::Truncated)` for one running past the end of the slice, then stops.
#[derive(Debug, Clone)]
pub struct NdpOptionIter<'a> {
    remaining: &'a [u8],
}

impl<'a> NdpOptionIter<'a> {
    /// Iterates over the options in `options` (the bytes after the fixed part).
    pub fn new(options: &'a [u8]) -> NdpOptionIter<'a> {
        NdpOptionIter { remaining: options }
    }

    /// Checks every option is well formed.
    pub fn validate(self) -> Result<(), WireError> {
        for option in self {
            option?;
        }
        Ok(())
    }
}

impl<'a> Iterator for NdpOptionIter<'a> {
    type Item = Result<NdpOption<'a>, WireError>;

    /// The next option, or the error that ends the iteration.
    fn next(&mut self) -> Option<Self::Item> {
        let remaining = self.remaining;
        if remaining.is_empty() {
            return None;
        }
        self.remaining = &[];
        let (option_type, length_units) = match remaining {
            [option_type, length_units, ..] => (*option_type, *length_units),
            _ => return Some(Err(WireError::Truncated)),
        };
        if length_units == 0 {
            return Some(Err(WireError::Malformed));
        }
        let len = usize::from(length_units) * 8;
        if len > remaining.len() {
            return Some(Err(WireError::Truncated));
        }
        let (option, rest) = remaining.split_at(len);
        self.remaining = rest;
        let data = &option[2..];
        Some(Ok(match option_type {
            OPTION_SOURCE_LINK_LAYER_ADDR => NdpOption::SourceLinkLayerAddr(MacAddr::from_slice(data)),
            OPTION_TARGET_LINK_LAYER_ADDR => NdpOption::TargetLinkLayerAddr(MacAddr::from_slice(data)),
            _ => NdpOption::Other { option_type, data },
        }))
    }
}

/// The first link-layer address option of the wanted kind in `options`.
fn find_link_layer_addr(options: &[u8], want_source: bool) -> Result<Option<MacAddr>, WireError> {
    for option in NdpOptionIter::new(options) {
        match option? {
            NdpOption::SourceLinkLayerAddr(mac) if want_source => return Ok(Some(mac)),
            NdpOption::TargetLinkLayerAddr(mac) if !want_source => return Ok(Some(mac)),
            _ => {}
        }
    }
    Ok(None)
}

/// Checks a buffer holds a fixed ND part of the wanted type.
fn check_nd(buffer: &[u8], msg_type: Message) -> Result<(), WireError> {
    if buffer.len() < ND_MIN_LEN {
        return Err(WireError::Truncated);
    }
    if buffer[field::TYPE] != msg_type.0 {
        return Err(WireError::Unsupported);
    }
    Ok(())
}

/// A zero-copy view of a neighbor solicitation (the whole ICMPv6 message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighborSolicit<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> NeighborSolicit<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> NeighborSolicit<T> {
        NeighborSolicit { buffer }
    }

    /// Wraps a buffer after checking it holds [`ND_MIN_LEN`] bytes
    /// ([`WireError::Truncated`]) and the type is 135 ([`WireError::Unsupported`]).
    /// See [`validate_nd`] for the RFC 4861 validity checks.
    pub fn new_checked(buffer: T) -> Result<NeighborSolicit<T>, WireError> {
        check_nd(buffer.as_ref(), Message::NEIGHBOR_SOLICIT)?;
        Ok(NeighborSolicit { buffer })
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The address whose link-layer address is asked for.
    pub fn target_addr(&self) -> Ipv6Addr {
        read_ipv6(self.buffer.as_ref(), field::ND_TARGET.start)
    }

    /// The raw option bytes.
    pub fn options_bytes(&self) -> &[u8] {
        &self.buffer.as_ref()[field::ND_OPTIONS..]
    }

    /// Iterates over the options.
    pub fn options(&self) -> NdpOptionIter<'_> {
        NdpOptionIter::new(self.options_bytes())
    }

    /// The first source link-layer address option, if any; an error if an option
    /// before it is malformed.
    pub fn source_link_layer_addr(&self) -> Result<Option<MacAddr>, WireError> {
        find_link_layer_addr(self.options_bytes(), true)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> NeighborSolicit<T> {
    /// Sets the target address.
    pub fn set_target_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::ND_TARGET].copy_from_slice(&addr.octets());
    }

    /// The raw option bytes, mutable.
    pub fn options_bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::ND_OPTIONS..]
    }
}

/// A zero-copy view of a neighbor advertisement (the whole ICMPv6 message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighborAdvert<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> NeighborAdvert<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> NeighborAdvert<T> {
        NeighborAdvert { buffer }
    }

    /// Wraps a buffer after checking it holds [`ND_MIN_LEN`] bytes
    /// ([`WireError::Truncated`]) and the type is 136 ([`WireError::Unsupported`]).
    /// See [`validate_nd`] for the RFC 4861 validity checks.
    pub fn new_checked(buffer: T) -> Result<NeighborAdvert<T>, WireError> {
        check_nd(buffer.as_ref(), Message::NEIGHBOR_ADVERT)?;
        Ok(NeighborAdvert { buffer })
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The R, S and O flags.
    pub fn flags(&self) -> NaFlags {
        NaFlags(self.buffer.as_ref()[field::ND_FLAGS] & 0xe0)
    }

    /// R: the sender is a router.
    pub fn router_flag(&self) -> bool {
        self.flags().contains(NaFlags::ROUTER)
    }

    /// S: sent in response to a solicitation.
    pub fn solicited_flag(&self) -> bool {
        self.flags().contains(NaFlags::SOLICITED)
    }

    /// O: the advertisement should override an existing cache entry.
    pub fn override_flag(&self) -> bool {
        self.flags().contains(NaFlags::OVERRIDE)
    }

    /// The address whose link-layer address is advertised.
    pub fn target_addr(&self) -> Ipv6Addr {
        read_ipv6(self.buffer.as_ref(), field::ND_TARGET.start)
    }

    /// The raw option bytes.
    pub fn options_bytes(&self) -> &[u8] {
        &self.buffer.as_ref()[field::ND_OPTIONS..]
    }

    /// Iterates over the options.
    pub fn options(&self) -> NdpOptionIter<'_> {
        NdpOptionIter::new(self.options_bytes())
    }

    /// The first target link-layer address option, if any; an error if an option
    /// before it is malformed.
    pub fn target_link_layer_addr(&self) -> Result<Option<MacAddr>, WireError> {
        find_link_layer_addr(self.options_bytes(), false)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> NeighborAdvert<T> {
    /// Sets the R, S and O flags (the reserved bits are cleared).
    pub fn set_flags(&mut self, flags: NaFlags) {
        self.buffer.as_mut()[field::ND_FLAGS] = flags.0 & 0xe0;
    }

    /// Sets the target address.
    pub fn set_target_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::ND_TARGET].copy_from_slice(&addr.octets());
    }

    /// The raw option bytes, mutable.
    pub fn options_bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::ND_OPTIONS..]
    }
}

/// The RFC 4861 validity checks for a received Neighbor Discovery message that need
/// no addresses (§6.1.1, §6.1.2, §7.1.1, §7.1.2): the IPv6 hop limit is 255, the code
/// is 0, the message is long enough for its type (RS 8, RA 16, NS and NA 24, redirect
/// 40 bytes), an NS/NA target is not multicast and every option has a non-zero length
/// and fits.
///
/// Errors: [`WireError::Unsupported`] for a non-ND type, [`WireError::Truncated`] for a
/// short message or option, [`WireError::Malformed`] otherwise. The checksum is checked
/// separately with [`Packet::verify_checksum`]; address-dependent rules (e.g. no source
/// link-layer option from the unspecified address) are the caller's.
pub fn validate_nd(ipv6_hop_limit: u8, icmp_packet: &[u8]) -> Result<(), WireError> {
    let packet = Packet::new_checked(icmp_packet)?;
    let (min_len, options_start) = match packet.msg_type() {
        Message::ROUTER_SOLICIT => (8, 8),
        Message::ROUTER_ADVERT => (16, 16),
        Message::NEIGHBOR_SOLICIT | Message::NEIGHBOR_ADVERT => (ND_MIN_LEN, ND_MIN_LEN),
        Message::REDIRECT => (40, 40),
        _ => return Err(WireError::Unsupported),
    };
    if ipv6_hop_limit != ND_HOP_LIMIT || packet.msg_code() != 0 {
        return Err(WireError::Malformed);
    }
    if icmp_packet.len() < min_len {
        return Err(WireError::Truncated);
    }
    if matches!(packet.msg_type(), Message::NEIGHBOR_SOLICIT | Message::NEIGHBOR_ADVERT)
        && read_ipv6(icmp_packet, field::ND_TARGET.start).is_multicast()
    {
        return Err(WireError::Malformed);
    }
    NdpOptionIter::new(&icmp_packet[options_start..]).validate()
}

/// Writes a link-layer address option at the start of `out`.
fn write_link_layer_option(out: &mut [u8], option_type: u8, mac: MacAddr) {
    out[0] = option_type;
    out[1] = 1;
    out[2..8].copy_from_slice(mac.as_bytes());
}

/// Writes the fixed part of an NS/NA into `out[..ND_MIN_LEN]`.
fn write_nd_fixed(out: &mut [u8], msg_type: Message, flags: NaFlags, target: Ipv6Addr) {
    out[..ND_MIN_LEN].fill(0);
    out[field::TYPE] = msg_type.0;
    out[field::ND_FLAGS] = flags.0 & 0xe0;
    out[field::ND_TARGET].copy_from_slice(&target.octets());
}

/// Writes a neighbor solicitation for `target` (ICMPv6 message only, checksum zero),
/// with a source link-layer address option when `source_mac` is given (it must be
/// omitted when the IPv6 source is the unspecified address, RFC 4861 §4.3). Returns the
/// length: 32 bytes with the option, 24 without. Send it with hop limit 255 to
/// [`ipv6::solicited_node_multicast`]`(target)` (or to the target for unicast probes),
/// then fill the checksum. [`WireError::BufferTooSmall`] if `out` is too short.
pub fn emit_neighbor_solicit(
    out: &mut [u8],
    target: Ipv6Addr,
    source_mac: Option<MacAddr>,
) -> Result<usize, WireError> {
    let len = ND_MIN_LEN + if source_mac.is_some() { LINK_LAYER_OPTION_LEN } else { 0 };
    if out.len() < len {
        return Err(WireError::BufferTooSmall);
    }
    write_nd_fixed(out, Message::NEIGHBOR_SOLICIT, NaFlags::NONE, target);
    if let Some(mac) = source_mac {
        write_link_layer_option(&mut out[ND_MIN_LEN..], OPTION_SOURCE_LINK_LAYER_ADDR, mac);
    }
    Ok(len)
}

/// Writes a neighbor advertisement for `target` with `flags` and a target link-layer
/// address option carrying `our_mac` (ICMPv6 message only, checksum zero); returns 32.
/// Send it with hop limit 255, then fill the checksum. A solicited reply goes to the
/// solicitation's source (with [`NaFlags::SOLICITED`]), or to [`ipv6::ALL_NODES`] without
/// it when that source was unspecified. [`WireError::BufferTooSmall`] if `out` is too
/// short.
pub fn emit_neighbor_advert(
    out: &mut [u8],
    target: Ipv6Addr,
    flags: NaFlags,
    our_mac: MacAddr,
) -> Result<usize, WireError> {
    let len = ND_MIN_LEN + LINK_LAYER_OPTION_LEN;
    if out.len() < len {
        return Err(WireError::BufferTooSmall);
    }
    write_nd_fixed(out, Message::NEIGHBOR_ADVERT, flags, target);
    write_link_layer_option(&mut out[ND_MIN_LEN..], OPTION_TARGET_LINK_LAYER_ADDR, our_mac);
    Ok(len)
}

/// Writes an ICMPv6 error message (ICMPv6 message only, checksum zero: fill it with
/// [`Packet::fill_checksum`] once the addresses are known) and returns its length.
///
/// The message is the 8-byte header (`msg_type`, `code`, `param`: the MTU for packet
/// too big, the pointer for parameter problem, else 0) followed by as much of
/// `offending_ipv6_packet` as fits in [`MAX_ERROR_LEN`], so that the IPv6 packet
/// carrying it fits the minimum MTU (RFC 4443 §2.4(c)). If `offending_ipv6_packet` is
/// a valid IPv6 packet, bytes past `40 + payload_len` (link padding) are not quoted.
///
/// [`WireError::BufferTooSmall`] if `out` cannot hold the message.
pub fn emit_error(
    out: &mut [u8],
    msg_type: Message,
    code: u8,
    param: u32,
    offending_ipv6_packet: &[u8],
) -> Result<usize, WireError> {
    let offending = match ipv6::Packet::new_checked(offending_ipv6_packet) {
        Ok(packet) => &offending_ipv6_packet[..ipv6::HEADER_LEN + usize::from(packet.payload_len())],
        Err(_) => offending_ipv6_packet,
    };
    let quoted_len = offending.len().min(MAX_ERROR_LEN - HEADER_LEN);
    let len = HEADER_LEN + quoted_len;
    if out.len() < len {
        return Err(WireError::BufferTooSmall);
    }
    let mut packet = Packet::new_unchecked(&mut out[..len]);
    packet.set_msg_type(msg_type);
    packet.set_msg_code(code);
    packet.set_checksum(0);
    packet.set_rest_of_header(param);
    packet.payload_mut().copy_from_slice(&offending[..quoted_len]);
    Ok(len)
}

/// Whether RFC 4443 §2.4(e) allows sending the error `msg_type`/`code` about
/// `offending_ipv6_packet`: it must be a valid IPv6 packet whose source is not
/// unspecified or multicast, that is not itself an ICMPv6 error (when ICMPv6 directly
/// follows the fixed header), and whose destination is not multicast unless the error
/// is packet too big or parameter problem code 2. (Link-layer multicast/broadcast
/// reception is for the caller to check.)
pub fn is_error_allowed(offending_ipv6_packet: &[u8], msg_type: Message, code: u8) -> bool {
    let Ok(packet) = ipv6::Packet::new_checked(offending_ipv6_packet) else {
        return false;
    };
    let src = packet.src_addr();
    if src.is_unspecified() || src.is_multicast() {
        return false;
    }
    let multicast_exception = msg_type == Message::PACKET_TOO_BIG
        || (msg_type == Message::PARAMETER_PROBLEM && code == parameter_problem::UNRECOGNIZED_OPTION);
    if packet.dst_addr().is_multicast() && !multicast_exception {
        return false;
    }
    if packet.next_header() == Protocol::ICMPV6 {
        if let Some(&icmp_type) = packet.payload().first() {
            return !Message(icmp_type).is_error();
        }
    }
    true
}

/// Turns an IPv6 packet holding an ICMPv6 echo request (directly after the fixed
/// header) into the echo reply, in place: swaps source and destination, sets type 129
/// and updates the checksum incrementally (the pseudo-header sum is unchanged by the
/// swap), and sets the hop limit to [`ipv6::DEFAULT_HOP_LIMIT`].
///
/// Errors: the IPv6 packet's own [`ipv6::Packet::new_checked`] errors;
/// [`WireError::BadChecksum`] if the ICMPv6 checksum is wrong; [`WireError::Unsupported`]
/// if it is not an echo request right after the fixed header, or was sent to a
/// multicast address (a reply must come from one of our unicast addresses, which this
/// function does not know).
pub fn echo_request_to_reply(ipv6_packet: &mut [u8]) -> Result<(), WireError> {
    let mut ip = ipv6::Packet::new_checked(ipv6_packet)?;
    if ip.next_header() != Protocol::ICMPV6 {
        return Err(WireError::Unsupported);
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    if dst.is_multicast() {
        return Err(WireError::Unsupported);
    }
    {
        let mut icmp = Packet::new_checked(ip.payload_mut())?;
        if icmp.msg_type() != Message::ECHO_REQUEST {
            return Err(WireError::Unsupported);
        }
        if !icmp.verify_checksum(src, dst) {
            return Err(WireError::BadChecksum);
        }
        let code = icmp.msg_code();
        let old_word = u16::from_be_bytes([Message::ECHO_REQUEST.0, code]);
        let new_word = u16::from_be_bytes([Message::ECHO_REPLY.0, code]);
        icmp.set_msg_type(Message::ECHO_REPLY);
        let updated = checksum::update16(icmp.checksum(), old_word, new_word);
        icmp.set_checksum(updated);
    }
    ip.swap_addrs();
    ip.set_hop_limit(ipv6::DEFAULT_HOP_LIMIT);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addr(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    const TARGET: &str = "fe80::2e0:4cff:fe68:2d6";

    /// A captured neighbor solicitation from fe80::1 (00:00:5e:00:53:01) to
    /// ff02::1:ff68:2d6 asking for fe80::2e0:4cff:fe68:2d6.
    const NS: [u8; 32] = [
        0x87, 0x00, 0x77, 0x3e, 0x00, 0x00, 0x00, 0x00, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0xe0,
        0x4c, 0xff, 0xfe, 0x68, 0x02, 0xd6, 0x01, 0x01, 0x00, 0x00, 0x5e, 0x00, 0x53, 0x01,
    ];

    /// The captured solicited advertisement answering [`NS`], from the target to fe80::1,
    /// flags S and O, target link-layer address 00:e0:4c:68:02:d6.
    const NA: [u8; 32] = [
        0x88, 0x00, 0x27, 0xc5, 0x60, 0x00, 0x00, 0x00, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0xe0,
        0x4c, 0xff, 0xfe, 0x68, 0x02, 0xd6, 0x02, 0x01, 0x00, 0xe0, 0x4c, 0x68, 0x02, 0xd6,
    ];

    /// A captured IPv6 echo request 2001:db8::1 -> 2001:db8::2, id 0x1234, seq 1.
    const ECHO_REQUEST: [u8; 64] = [
        0x60, 0x00, 0x00, 0x00, 0x00, 0x18, 0x3a, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x02, 0x80, 0x00, 0x6f, 0x65, 0x12, 0x34, 0x00, 0x01, 0xa8, 0xe7, 0xad, 0x65, 0x00, 0x00,
        0x00, 0x00, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17,
    ];

    #[test]
    fn parse_captured_ns() {
        let icmp = Packet::new_checked(&NS[..]).unwrap();
        assert_eq!(icmp.msg_type(), Message::NEIGHBOR_SOLICIT);
        assert_eq!(icmp.checksum(), 0x773e);
        assert!(icmp.verify_checksum(addr("fe80::1"), addr("ff02::1:ff68:2d6")));
        assert!(!icmp.verify_checksum(addr("fe80::2"), addr("ff02::1:ff68:2d6")));
        assert_eq!(validate_nd(255, &NS), Ok(()));

        let ns = NeighborSolicit::new_checked(&NS[..]).unwrap();
        assert_eq!(ns.target_addr(), addr(TARGET));
        assert_eq!(ns.source_link_layer_addr(), Ok(Some(MacAddr([0x00, 0x00, 0x5e, 0x00, 0x53, 0x01]))));
        let options: Vec<_> = ns.options().collect();
        assert_eq!(options, vec![Ok(NdpOption::SourceLinkLayerAddr(MacAddr([0x00, 0x00, 0x5e, 0x00, 0x53, 0x01])))]);
        assert_eq!(NeighborAdvert::new_checked(&NS[..]), Err(WireError::Unsupported));
    }

    #[test]
    fn parse_captured_na() {
        let icmp = Packet::new_checked(&NA[..]).unwrap();
        assert!(icmp.verify_checksum(addr(TARGET), addr("fe80::1")));
        assert_eq!(validate_nd(255, &NA), Ok(()));
        let na = NeighborAdvert::new_checked(&NA[..]).unwrap();
        assert_eq!(na.flags(), NaFlags::SOLICITED | NaFlags::OVERRIDE);
        assert!(!na.router_flag());
        assert!(na.solicited_flag());
        assert!(na.override_flag());
        assert_eq!(na.target_addr(), addr(TARGET));
        assert_eq!(na.target_link_layer_addr(), Ok(Some(MacAddr([0x00, 0xe0, 0x4c, 0x68, 0x02, 0xd6]))));
        assert_eq!(NeighborSolicit::new_checked(&NA[..]), Err(WireError::Unsupported));
        assert_eq!(NeighborAdvert::new_checked(&NA[..23]), Err(WireError::Truncated));
    }

    #[test]
    fn builders_reproduce_captures() {
        let mut out = [0u8; 40];
        let len =
            emit_neighbor_solicit(&mut out, addr(TARGET), Some(MacAddr([0x00, 0x00, 0x5e, 0x00, 0x53, 0x01]))).unwrap();
        assert_eq!(len, 32);
        let mut icmp = Packet::new_checked(&mut out[..len]).unwrap();
        assert_eq!(icmp.checksum(), 0);
        icmp.fill_checksum(addr("fe80::1"), addr("ff02::1:ff68:2d6"));
        assert_eq!(out[..len], NS);

        let mut out = [0xffu8; 32];
        let len = emit_neighbor_advert(
            &mut out,
            addr(TARGET),
            NaFlags::SOLICITED | NaFlags::OVERRIDE,
            MacAddr([0x00, 0xe0, 0x4c, 0x68, 0x02, 0xd6]),
        )
        .unwrap();
        Packet::new_checked(&mut out[..len]).unwrap().fill_checksum(addr(TARGET), addr("fe80::1"));
        assert_eq!(out, NA);

        let mut out = [0xffu8; 24];
        assert_eq!(emit_neighbor_solicit(&mut out, addr(TARGET), None), Ok(24));
        let ns = NeighborSolicit::new_checked(&out[..]).unwrap();
        assert_eq!(ns.source_link_layer_addr(), Ok(None));
        assert_eq!(&out[4..8], &[0, 0, 0, 0]);
        assert_eq!(emit_neighbor_solicit(&mut out, addr(TARGET), Some(MacAddr::ZERO)), Err(WireError::BufferTooSmall));
        assert_eq!(
            emit_neighbor_advert(&mut out, addr(TARGET), NaFlags::NONE, MacAddr::ZERO),
            Err(WireError::BufferTooSmall)
        );
    }

    #[test]
    fn validate_nd_rules() {
        assert_eq!(validate_nd(254, &NS), Err(WireError::Malformed));
        let mut bad_code = NS;
        bad_code[1] = 1;
        assert_eq!(validate_nd(255, &bad_code), Err(WireError::Malformed));
        assert_eq!(validate_nd(255, &NS[..23]), Err(WireError::Truncated));
        assert_eq!(validate_nd(255, &NS[..24]), Ok(()));
        assert_eq!(validate_nd(255, &NS[..30]), Err(WireError::Truncated));
        let mut zero_option = NS;
        zero_option[25] = 0;
        assert_eq!(validate_nd(255, &zero_option), Err(WireError::Malformed));
        let mut multicast_target = NS;
        multicast_target[8] = 0xff;
        assert_eq!(validate_nd(255, &multicast_target), Err(WireError::Malformed));
        assert_eq!(validate_nd(255, &ECHO_REQUEST[40..]), Err(WireError::Unsupported));
        assert_eq!(validate_nd(255, &[133, 0, 0, 0, 0, 0, 0, 0]), Ok(()));
        assert_eq!(validate_nd(255, &[134, 0, 0, 0, 0, 0, 0, 0]), Err(WireError::Truncated));
    }

    #[test]
    fn option_iterator_errors() {
        let options = [1, 1, 1, 2, 3, 4, 5, 6, 9, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let parsed: Vec<_> = NdpOptionIter::new(&options).collect();
        assert_eq!(
            parsed,
            vec![
                Ok(NdpOption::SourceLinkLayerAddr(MacAddr([1, 2, 3, 4, 5, 6]))),
                Ok(NdpOption::Other { option_type: 9, data: &[0; 14] }),
            ]
        );
        let parsed: Vec<_> = NdpOptionIter::new(&[1, 0, 0, 0, 0, 0, 0, 0]).collect();
        assert_eq!(parsed, vec![Err(WireError::Malformed)]);
        let parsed: Vec<_> = NdpOptionIter::new(&[2, 2, 0, 0, 0, 0, 0, 0]).collect();
        assert_eq!(parsed, vec![Err(WireError::Truncated)]);
        let parsed: Vec<_> = NdpOptionIter::new(&[2]).collect();
        assert_eq!(parsed, vec![Err(WireError::Truncated)]);
        assert_eq!(NdpOptionIter::new(&[]).count(), 0);
    }

    #[test]
    fn echo_reply_from_capture() {
        let mut bytes = ECHO_REQUEST;
        echo_request_to_reply(&mut bytes).unwrap();
        let ip = ipv6::Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(ip.src_addr(), addr("2001:db8::2"));
        assert_eq!(ip.dst_addr(), addr("2001:db8::1"));
        assert_eq!(ip.hop_limit(), 64);
        let icmp = Packet::new_checked(ip.payload()).unwrap();
        assert_eq!(icmp.msg_type(), Message::ECHO_REPLY);
        assert_eq!(icmp.checksum(), 0x6e65);
        assert!(icmp.verify_checksum(ip.src_addr(), ip.dst_addr()));
        assert_eq!((icmp.echo_ident(), icmp.echo_seq_no()), (0x1234, 1));
        assert_eq!(icmp.payload(), &ECHO_REQUEST[48..]);
    }

    #[test]
    fn echo_reply_rejects() {
        let mut reply = ECHO_REQUEST;
        echo_request_to_reply(&mut reply).unwrap();
        assert_eq!(echo_request_to_reply(&mut reply), Err(WireError::Unsupported));
        let mut corrupt = ECHO_REQUEST;
        corrupt[63] ^= 0x80;
        assert_eq!(echo_request_to_reply(&mut corrupt), Err(WireError::BadChecksum));
        let mut multicast = ECHO_REQUEST;
        multicast[24] = 0xff;
        assert_eq!(echo_request_to_reply(&mut multicast), Err(WireError::Unsupported));
        let mut udp = ECHO_REQUEST;
        udp[6] = 17;
        assert_eq!(echo_request_to_reply(&mut udp), Err(WireError::Unsupported));
        let mut short = ECHO_REQUEST;
        assert_eq!(echo_request_to_reply(&mut short[..63]), Err(WireError::Truncated));
    }

    #[test]
    fn error_quotes_and_caps() {
        let mut out = [0u8; MAX_ERROR_LEN];
        let mut padded = ECHO_REQUEST.to_vec();
        padded.extend_from_slice(&[0xee; 6]);
        let len = emit_error(&mut out, Message::TIME_EXCEEDED, time_exceeded::HOP_LIMIT_EXCEEDED, 0, &padded).unwrap();
        assert_eq!(len, 8 + 64);
        let mut icmp = Packet::new_checked(&mut out[..len]).unwrap();
        assert_eq!(icmp.payload(), &ECHO_REQUEST[..]);
        icmp.fill_checksum(addr("2001:db8::ff"), addr("2001:db8::1"));
        assert!(icmp.verify_checksum(addr("2001:db8::ff"), addr("2001:db8::1")));

        let mut big = vec![0u8; 1500];
        ipv6::emit_header(&mut big, addr("2001:db8::1"), addr("2001:db8::2"), Protocol::UDP, 64, 1460).unwrap();
        let mut out = [0u8; 1500];
        let len = emit_error(&mut out, Message::PACKET_TOO_BIG, 0, 1280, &big).unwrap();
        assert_eq!(len, MAX_ERROR_LEN);
        assert_eq!(len + ipv6::HEADER_LEN, 1280);
        let icmp = Packet::new_checked(&out[..len]).unwrap();
        assert_eq!(icmp.rest_of_header(), 1280);
        assert_eq!(icmp.payload(), &big[..1232]);
        assert_eq!(emit_error(&mut out[..100], Message::PACKET_TOO_BIG, 0, 1280, &big), Err(WireError::BufferTooSmall));
    }

    #[test]
    fn error_allowed_rules() {
        let udp = {
            let mut p = ECHO_REQUEST;
            p[6] = 17;
            p
        };
        let tb = Message::TIME_EXCEEDED;
        assert!(is_error_allowed(&udp, tb, 0));
        assert!(is_error_allowed(&ECHO_REQUEST, tb, 0));
        assert!(!is_error_allowed(&udp[..50], tb, 0));
        let mut error = ECHO_REQUEST;
        error[40] = 1;
        assert!(!is_error_allowed(&error, tb, 0));
        let mut to_multicast = udp;
        to_multicast[24] = 0xff;
        assert!(!is_error_allowed(&to_multicast, tb, 0));
        assert!(is_error_allowed(&to_multicast, Message::PACKET_TOO_BIG, 0));
        assert!(is_error_allowed(&to_multicast, Message::PARAMETER_PROBLEM, 2));
        assert!(!is_error_allowed(&to_multicast, Message::PARAMETER_PROBLEM, 0));
        let mut from_unspecified = udp;
        from_unspecified[8..24].fill(0);
        assert!(!is_error_allowed(&from_unspecified, tb, 0));
    }

    proptest! {
        #[test]
        fn neighbor_solicit_round_trip(
            target in any::<[u8; 16]>(),
            mac in proptest::option::of(any::<[u8; 6]>()),
            src in any::<[u8; 16]>(),
        ) {
            let target = Ipv6Addr::from(target);
            let mac = mac.map(MacAddr);
            let mut out = [0u8; 32];
            let len = emit_neighbor_solicit(&mut out, target, mac).unwrap();
            let dst = ipv6::solicited_node_multicast(target);
            Packet::new_checked(&mut out[..len]).unwrap().fill_checksum(src.into(), dst);
            prop_assert!(Packet::new_checked(&out[..len]).unwrap().verify_checksum(src.into(), dst));
            let ns = NeighborSolicit::new_checked(&out[..len]).unwrap();
            prop_assert_eq!(ns.target_addr(), target);
            prop_assert_eq!(ns.source_link_layer_addr(), Ok(mac));
            if !target.is_multicast() {
                prop_assert_eq!(validate_nd(255, &out[..len]), Ok(()));
            }
        }

        #[test]
        fn neighbor_advert_round_trip(
            target in any::<[u8; 16]>(),
            flags in any::<u8>(),
            mac in any::<[u8; 6]>(),
        ) {
            let target = Ipv6Addr::from(target);
            let flags = NaFlags(flags & 0xe0);
            let mut out = [0u8; 32];
            let len = emit_neighbor_advert(&mut out, target, flags, MacAddr(mac)).unwrap();
            let na = NeighborAdvert::new_checked(&out[..len]).unwrap();
            prop_assert_eq!(na.target_addr(), target);
            prop_assert_eq!(na.flags(), flags);
            prop_assert_eq!(na.router_flag(), flags.contains(NaFlags::ROUTER));
            prop_assert_eq!(na.solicited_flag(), flags.contains(NaFlags::SOLICITED));
            prop_assert_eq!(na.override_flag(), flags.contains(NaFlags::OVERRIDE));
            prop_assert_eq!(na.target_link_layer_addr(), Ok(Some(MacAddr(mac))));
        }

        #[test]
        fn emit_error_round_trip(
            ty in 0u8..128,
            code in any::<u8>(),
            param in any::<u32>(),
            offending in proptest::collection::vec(any::<u8>(), 0..1400),
        ) {
            let mut out = vec![0u8; MAX_ERROR_LEN];
            let len = emit_error(&mut out, Message(ty), code, param, &offending).unwrap();
            prop_assert!(len <= MAX_ERROR_LEN);
            let icmp = Packet::new_checked(&out[..len]).unwrap();
            prop_assert_eq!(icmp.msg_type(), Message(ty));
            prop_assert_eq!(icmp.msg_code(), code);
            prop_assert_eq!(icmp.rest_of_header(), param);
            let quoted = icmp.payload();
            prop_assert_eq!(quoted, &offending[..quoted.len()]);
        }

        #[test]
        fn echo_reply_round_trip(
            src in any::<[u8; 16]>(),
            dst in any::<[u8; 16]>(),
            ident in any::<u16>(),
            seq in any::<u16>(),
            data in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let (src, mut dst) = (Ipv6Addr::from(src), dst);
            dst[0] &= 0xfe; // not multicast
            let dst = Ipv6Addr::from(dst);
            let icmp_len = HEADER_LEN + data.len();
            let mut bytes = vec![0u8; ipv6::HEADER_LEN + icmp_len];
            ipv6::emit_header(&mut bytes, src, dst, Protocol::ICMPV6, 17, icmp_len).unwrap();
            {
                let mut icmp = Packet::new_unchecked(&mut bytes[ipv6::HEADER_LEN..]);
                icmp.set_msg_type(Message::ECHO_REQUEST);
                icmp.set_echo_ident(ident);
                icmp.set_echo_seq_no(seq);
                icmp.payload_mut().copy_from_slice(&data);
                icmp.fill_checksum(src, dst);
            }
            echo_request_to_reply(&mut bytes).unwrap();
            let ip = ipv6::Packet::new_checked(&bytes[..]).unwrap();
            prop_assert_eq!((ip.src_addr(), ip.dst_addr(), ip.hop_limit()), (dst, src, 64));
            let icmp = Packet::new_checked(ip.payload()).unwrap();
            prop_assert!(icmp.verify_checksum(dst, src));
            let expected = {
                let mut copy = icmp.as_bytes().to_vec();
                let mut full = Packet::new_unchecked(&mut copy[..]);
                full.fill_checksum(dst, src);
                full.checksum()
            };
            prop_assert_eq!(icmp.checksum(), expected);
            prop_assert_eq!(icmp.msg_type(), Message::ECHO_REPLY);
            prop_assert_eq!((icmp.echo_ident(), icmp.echo_seq_no()), (ident, seq));
            prop_assert_eq!(icmp.payload(), &data[..]);
        }

        #[test]
        fn parsers_never_panic(
            mut bytes in proptest::collection::vec(any::<u8>(), 0..64),
            ty in prop_oneof![Just(135u8), Just(136u8), any::<u8>()],
            hop_limit in prop_oneof![Just(255u8), any::<u8>()],
            src in any::<[u8; 16]>(),
            dst in any::<[u8; 16]>(),
        ) {
            if let Some(first) = bytes.first_mut() {
                *first = ty;
            }
            if let Ok(icmp) = Packet::new_checked(&bytes[..]) {
                let _ = (icmp.msg_type().is_error(), icmp.msg_type().is_nd(), icmp.msg_code(),
                    icmp.checksum(), icmp.rest_of_header(), icmp.echo_ident(),
                    icmp.echo_seq_no(), icmp.payload().len(),
                    icmp.verify_checksum(src.into(), dst.into()));
            }
            if let Ok(ns) = NeighborSolicit::new_checked(&bytes[..]) {
                let _ = (ns.target_addr(), ns.options_bytes().len(), ns.options().count(),
                    ns.source_link_layer_addr());
            }
            if let Ok(na) = NeighborAdvert::new_checked(&bytes[..]) {
                let _ = (na.flags(), na.router_flag(), na.solicited_flag(), na.override_flag(),
                    na.target_addr(), na.options().count(), na.target_link_layer_addr());
            }
            let _ = validate_nd(hop_limit, &bytes);
            let _ = NdpOptionIter::new(&bytes).count();
        }

        #[test]
        fn ip_level_functions_never_panic(
            mut bytes in proptest::collection::vec(any::<u8>(), 0..120),
            shape in any::<bool>(),
            ty in any::<u8>(),
            code in any::<u8>(),
        ) {
            if shape && bytes.len() >= 41 {
                let payload_len = (bytes.len() - 40) as u16;
                bytes[0] = 0x60;
                bytes[4..6].copy_from_slice(&payload_len.to_be_bytes());
                bytes[6] = 58;
                bytes[40] = 128;
            }
            let _ = is_error_allowed(&bytes, Message(ty), code);
            let mut out = [0u8; 200];
            let _ = emit_error(&mut out, Message(ty), code, 0, &bytes);
            let _ = echo_request_to_reply(&mut bytes);
        }
    }
}

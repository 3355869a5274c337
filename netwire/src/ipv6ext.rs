//! IPv6 extension headers (RFC 8200 §4) and the walk from the fixed header to the
//! upper-layer header.
//!
//! ```text
//! Hop-by-Hop Options (0), Routing (43), Destination Options (60): the common layout.
//! Hdr Ext Len counts 8-octet units after the first 8 octets.
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Next Header  |  Hdr Ext Len  |  (Routing: Routing Type, Segments Left)
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! .                                                               .
//! .          Options / type-specific data (6 + 8 * Hdr Ext Len)   .
//! .                                                               .
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!
//! Fragment (44): always 8 octets.
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Next Header  |   Reserved    |      Fragment Offset    |Res|M|
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                         Identification                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!
//! Authentication Header (51, RFC 4302): Payload Len counts 4-octet units, minus 2.
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Next Header  |  Payload Len  |          Reserved             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |   SPI, Sequence Number, ICV ...
//! ```
//!
//! [`ExtHeader`] views a header of the common layout, [`FragmentHeader`] a Fragment
//! header. [`walk`] follows the Next Header chain through at most
//! [`MAX_EXT_HEADERS`] extension headers (Hop-by-Hop, Routing, Fragment, Destination
//! Options and Authentication, like Linux's `ipv6_skip_exthdr`) and reports where the
//! routing header, the fragment header and the upper-layer header are. Every other
//! value, including 59 (No Next Header) and 50 (ESP, whose contents are opaque), ends
//! the walk as the upper layer. All offsets are relative to the start of the IPv6
//! payload (add [`super::ipv6::HEADER_LEN`] for an offset in the packet).
//!
//! Panics: [`ExtHeader`] and [`FragmentHeader`] accessors panic only on a view made
//! with `new_unchecked` over a buffer shorter than the header; after `new_checked` none
//! do. [`walk`] never panics.

use super::ipv4::Protocol;
use super::{read_u16, read_u32, write_u16, write_u32, WireError};

/// Next header value for IPv4 encapsulated in IPv6 (RFC 2473).
pub const IPV4_IN_IPV6: Protocol = Protocol(4);
/// Next header value for IPv6 encapsulated in IPv6 (RFC 2473).
pub const IPV6_IN_IPV6: Protocol = Protocol(41);
/// Next header value for the IPv6 Encapsulating Security Payload (RFC 4303); ends a walk.
pub const ESP: Protocol = Protocol(50);
/// Next header value for the IPv6 Authentication Header (RFC 4302).
pub const AUTH_HEADER: Protocol = Protocol(51);
/// Next header value for an Ethernet frame (RFC 8986 §10.1, e.g. End.DX2).
pub const ETHERNET: Protocol = Protocol(143);

/// The most extension headers [`walk`] follows before reporting
/// [`WireError::Malformed`].
pub const MAX_EXT_HEADERS: usize = 8;

/// Length in bytes of the smallest extension header of the common layout
/// (Hdr Ext Len 0), and of the Fragment header.
pub const MIN_HEADER_LEN: usize = 8;

/// Length in bytes of the Fragment header.
pub const FRAGMENT_HEADER_LEN: usize = 8;

mod field {
    pub const NEXT_HEADER: usize = 0;
    pub const HDR_EXT_LEN: usize = 1;
    pub const DATA: usize = 2;
    pub const ROUTING_TYPE: usize = 2;
    pub const SEGMENTS_LEFT: usize = 3;

    pub const FRAG_OFFSET_FLAGS: usize = 2;
    pub const FRAG_IDENT: usize = 4;
}

const FRAG_OFFSET_SHIFT: u16 = 3;
const FRAG_MORE: u16 = 0x0001;
const FRAG_FLAGS_MASK: u16 = 0x0007;

/// Whether `protocol` names an extension header that [`walk`] steps over: Hop-by-Hop
/// (0), Routing (43), Fragment (44), Destination Options (60) or Authentication (51).
pub fn is_extension_header(protocol: Protocol) -> bool {
    matches!(
        protocol,
        Protocol::HOP_BY_HOP
            | Protocol::IPV6_ROUTING
            | Protocol::IPV6_FRAGMENT
            | Protocol::IPV6_DEST_OPTIONS
            | AUTH_HEADER
    )
}

/// A zero-copy view of an extension header of the common layout: Hop-by-Hop Options,
/// Routing or Destination Options. The buffer starts at the header and may extend past
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ExtHeader<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> ExtHeader<T> {
        ExtHeader { buffer }
    }

    /// Wraps a buffer after [`ExtHeader::check_len`].
    pub fn new_checked(buffer: T) -> Result<ExtHeader<T>, WireError> {
        let header = Self::new_unchecked(buffer);
        header.check_len()?;
        Ok(header)
    }

    /// Checks the buffer holds 8 bytes and the whole `header_len` bytes
    /// ([`WireError::Truncated`]).
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < MIN_HEADER_LEN || len < self.header_len() {
            Err(WireError::Truncated)
        } else {
            Ok(())
        }
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole underlying buffer (may extend past the header).
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Next header: the following extension header or the upper-layer protocol.
    pub fn next_header(&self) -> Protocol {
        Protocol(self.buffer.as_ref()[field::NEXT_HEADER])
    }

    /// Hdr Ext Len: the length in 8-octet units, not counting the first 8 octets.
    pub fn hdr_ext_len(&self) -> u8 {
        self.buffer.as_ref()[field::HDR_EXT_LEN]
    }

    /// The header length in bytes: `8 + 8 * hdr_ext_len`.
    pub fn header_len(&self) -> usize {
        MIN_HEADER_LEN + 8 * usize::from(self.hdr_ext_len())
    }

    /// Routing Type (Routing header only).
    pub fn routing_type(&self) -> u8 {
        self.buffer.as_ref()[field::ROUTING_TYPE]
    }

    /// Segments Left (Routing header only).
    pub fn segments_left(&self) -> u8 {
        self.buffer.as_ref()[field::SEGMENTS_LEFT]
    }

    /// The header bytes after Next Header and Hdr Ext Len (options, or the routing
    /// type, segments left and type-specific data).
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DATA..self.header_len()]
    }

    /// The bytes after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ExtHeader<T> {
    /// Sets the next header.
    pub fn set_next_header(&mut self, next_header: Protocol) {
        self.buffer.as_mut()[field::NEXT_HEADER] = next_header.0;
    }

    /// Sets Hdr Ext Len (8-octet units after the first 8 octets).
    pub fn set_hdr_ext_len(&mut self, hdr_ext_len: u8) {
        self.buffer.as_mut()[field::HDR_EXT_LEN] = hdr_ext_len;
    }

    /// Sets the Routing Type (Routing header only).
    pub fn set_routing_type(&mut self, routing_type: u8) {
        self.buffer.as_mut()[field::ROUTING_TYPE] = routing_type;
    }

    /// Sets Segments Left (Routing header only).
    pub fn set_segments_left(&mut self, segments_left: u8) {
        self.buffer.as_mut()[field::SEGMENTS_LEFT] = segments_left;
    }

    /// The header bytes after Next Header and Hdr Ext Len, mutable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        let end = self.header_len();
        &mut self.buffer.as_mut()[field::DATA..end]
    }

    /// The bytes after the header, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        &mut self.buffer.as_mut()[start..]
    }
}

/// A zero-copy view of a Fragment header. The buffer starts at the header and may
/// extend past it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FragmentHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> FragmentHeader<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> FragmentHeader<T> {
        FragmentHeader { buffer }
    }

    /// Wraps a buffer after checking it holds the 8-byte header
    /// ([`WireError::Truncated`]).
    pub fn new_checked(buffer: T) -> Result<FragmentHeader<T>, WireError> {
        if buffer.as_ref().len() < FRAGMENT_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(FragmentHeader { buffer })
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Next header: the header of the fragmentable part.
    pub fn next_header(&self) -> Protocol {
        Protocol(self.buffer.as_ref()[field::NEXT_HEADER])
    }

    /// Fragment offset in 8-octet units (13 bits).
    pub fn frag_offset(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::FRAG_OFFSET_FLAGS) >> FRAG_OFFSET_SHIFT
    }

    /// The M (more fragments) flag.
    pub fn more_fragments(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FRAG_OFFSET_FLAGS) & FRAG_MORE != 0
    }

    /// Identification.
    pub fn identification(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::FRAG_IDENT)
    }

    /// The bytes after the 8-byte header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[FRAGMENT_HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> FragmentHeader<T> {
    /// Sets the next header.
    pub fn set_next_header(&mut self, next_header: Protocol) {
        self.buffer.as_mut()[field::NEXT_HEADER] = next_header.0;
    }

    /// Sets the fragment offset in 8-octet units (low 13 bits used).
    pub fn set_frag_offset(&mut self, frag_offset: u16) {
        let old = read_u16(self.buffer.as_ref(), field::FRAG_OFFSET_FLAGS);
        let new = (old & FRAG_FLAGS_MASK) | (frag_offset << FRAG_OFFSET_SHIFT);
        write_u16(self.buffer.as_mut(), field::FRAG_OFFSET_FLAGS, new);
    }

    /// Sets the M (more fragments) flag.
    pub fn set_more_fragments(&mut self, more: bool) {
        let old = read_u16(self.buffer.as_ref(), field::FRAG_OFFSET_FLAGS);
        let new = if more { old | FRAG_MORE } else { old & !FRAG_MORE };
        write_u16(self.buffer.as_mut(), field::FRAG_OFFSET_FLAGS, new);
    }

    /// Sets the identification.
    pub fn set_identification(&mut self, identification: u32) {
        write_u32(self.buffer.as_mut(), field::FRAG_IDENT, identification);
    }

    /// The bytes after the 8-byte header, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[FRAGMENT_HEADER_LEN..]
    }
}

/// The first Routing header found by [`walk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoutingInfo {
    /// Offset of the Routing header in the IPv6 payload.
    pub offset: usize,
    /// Its length in bytes (`8 + 8 * hdr_ext_len`); it lies wholly in the payload.
    pub len: usize,
    /// Routing Type ([`super::srh::ROUTING_TYPE`] = 4 for a Segment Routing Header).
    pub routing_type: u8,
    /// Segments Left.
    pub segments_left: u8,
    /// Offset in the IPv6 payload of the Next Header field that names this header, or
    /// `None` when it is the IPv6 fixed header's (byte 6 of the packet). This is the
    /// field to rewrite when the header is removed.
    pub prev_next_header_offset: Option<usize>,
}

/// The first Fragment header found by [`walk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentInfo {
    /// Offset of the Fragment header in the IPv6 payload.
    pub offset: usize,
    /// Fragment offset in 8-octet units.
    pub frag_offset: u16,
    /// The M (more fragments) flag.
    pub more_fragments: bool,
    /// Identification.
    pub identification: u32,
}

impl FragmentInfo {
    /// Whether this is the first fragment (offset 0), the only one that carries the
    /// headers after the Fragment header.
    pub fn is_first(&self) -> bool {
        self.frag_offset == 0
    }

    /// Whether this is an atomic fragment (offset 0 and M clear, RFC 6946): the whole
    /// packet in one fragment.
    pub fn is_atomic(&self) -> bool {
        self.frag_offset == 0 && !self.more_fragments
    }
}

/// What [`walk`] found in an IPv6 payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtChain {
    /// The first Routing header, if any.
    pub routing: Option<RoutingInfo>,
    /// The first Fragment header, if any.
    pub fragment: Option<FragmentInfo>,
    /// Whether a Hop-by-Hop Options header came first.
    pub hop_by_hop: bool,
    /// How many extension headers were stepped over.
    pub ext_count: usize,
    /// The upper-layer protocol: the first next header that is not an extension header
    /// (59 No Next Header and 50 ESP included). After a non-first fragment it is the
    /// Fragment header's next header.
    pub upper_layer: Protocol,
    /// Offset in the IPv6 payload where the upper-layer header starts (the total length
    /// of the extension headers); at most the payload length. After a non-first
    /// fragment the bytes there are fragment data, not a header.
    pub upper_layer_offset: usize,
    /// Offset in the IPv6 payload of the Next Header field that names the upper layer,
    /// or `None` when it is the IPv6 fixed header's (no extension headers). For an
    /// ICMPv6 parameter problem (code 1, unrecognized next header) pointer, add 40.
    pub upper_layer_next_header_offset: Option<usize>,
}

impl ExtChain {
    /// Whether the upper-layer header is in this packet: not a non-first fragment.
    pub fn has_upper_layer_header(&self) -> bool {
        self.fragment.is_none_or(|fragment| fragment.is_first())
    }
}

/// Walks the extension headers at the start of an IPv6 payload (RFC 8200 §4), starting
/// with `next_header` (the IPv6 header's Next Header field), and reports where the
/// routing, fragment and upper-layer headers are. No allocation; never panics.
///
/// Each extension header stepped over must lie wholly in `payload`; the upper-layer
/// header is not read. After a Fragment header with a non-zero offset the walk stops,
/// since what follows is fragment data.
///
/// Errors: [`WireError::Truncated`] if an extension header runs past the end of
/// `payload`; [`WireError::Malformed`] if a Hop-by-Hop header is not the first
/// (RFC 8200 §4.1) or the chain holds more than [`MAX_EXT_HEADERS`] extension headers.
pub fn walk(next_header: Protocol, payload: &[u8]) -> Result<ExtChain, WireError> {
    let mut chain = ExtChain {
        routing: None,
        fragment: None,
        hop_by_hop: false,
        ext_count: 0,
        upper_layer: next_header,
        upper_layer_offset: 0,
        upper_layer_next_header_offset: None,
    };
    let mut protocol = next_header;
    let mut offset = 0usize;
    let mut prev_next_header_offset = None;
    while is_extension_header(protocol) {
        if chain.ext_count == MAX_EXT_HEADERS {
            return Err(WireError::Malformed);
        }
        if protocol == Protocol::HOP_BY_HOP {
            if chain.ext_count != 0 {
                return Err(WireError::Malformed);
            }
            chain.hop_by_hop = true;
        }
        let rest = payload.get(offset..).unwrap_or_default();
        let len = match (protocol, rest) {
            (Protocol::IPV6_FRAGMENT, _) => FRAGMENT_HEADER_LEN,
            (AUTH_HEADER, [_, payload_len, ..]) => 4 * (usize::from(*payload_len) + 2),
            (_, [_, hdr_ext_len, ..]) => MIN_HEADER_LEN + 8 * usize::from(*hdr_ext_len),
            _ => return Err(WireError::Truncated),
        };
        let Some(header) = rest.get(..len) else {
            return Err(WireError::Truncated);
        };
        let mut stop = false;
        match protocol {
            Protocol::IPV6_ROUTING if chain.routing.is_none() => {
                let routing = ExtHeader::new_unchecked(header);
                chain.routing = Some(RoutingInfo {
                    offset,
                    len,
                    routing_type: routing.routing_type(),
                    segments_left: routing.segments_left(),
                    prev_next_header_offset,
                });
            }
            Protocol::IPV6_FRAGMENT => {
                let fragment = FragmentHeader::new_unchecked(header);
                let info = FragmentInfo {
                    offset,
                    frag_offset: fragment.frag_offset(),
                    more_fragments: fragment.more_fragments(),
                    identification: fragment.identification(),
                };
                stop = !info.is_first();
                if chain.fragment.is_none() {
                    chain.fragment = Some(info);
                }
            }
            _ => {}
        }
        chain.ext_count += 1;
        prev_next_header_offset = Some(offset);
        protocol = Protocol(header[field::NEXT_HEADER]);
        offset += len;
        if stop {
            break;
        }
    }
    chain.upper_layer = protocol;
    chain.upper_layer_offset = offset;
    chain.upper_layer_next_header_offset = prev_next_header_offset;
    Ok(chain)
}

/// What [`walk_checked`] found besides the chain. Offsets here are from the
/// start of the IPv6 packet (ready for a Parameter Problem pointer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckedChain {
    /// The chain, as [`walk`] reports it (offsets in the payload).
    pub chain: ExtChain,
    /// The first option of a Hop-by-Hop or Destination Options header that
    /// is neither padding nor known: (offset of its type, type, whether it
    /// is in the Hop-by-Hop header).
    pub unknown_option: Option<(usize, u8, bool)>,
    /// The Jumbo Payload option of the Hop-by-Hop header: (offset of its
    /// type, its value when its length is 4).
    pub jumbo: Option<(usize, Option<u32>)>,
}

/// [`walk`] with the limits of `limits` (RFC 8883), the Hop-by-Hop and
/// Destination Options checked option by option
/// ([`crate::ipv6opt::check_options`]), and the RFC 7112 rule that a first
/// fragment holds the whole chain and the first 8 octets of a TCP, UDP or
/// ICMPv6 header. Errors carry the kind and the octet to point at, from the
/// start of the IPv6 packet (the fixed header's Next Header field is 6).
pub fn walk_checked(
    next_header: Protocol,
    payload: &[u8],
    limits: &crate::ipv6opt::ExtLimits,
) -> Result<CheckedChain, crate::ipv6opt::ChainError> {
    use crate::ipv6opt::{check_options, ChainError, ChainErrorKind as K};
    const FIXED: usize = super::ipv6::HEADER_LEN;
    let fail = |kind, offset| Err(ChainError { kind, offset });
    let mut out = CheckedChain {
        chain: ExtChain {
            routing: None,
            fragment: None,
            hop_by_hop: false,
            ext_count: 0,
            upper_layer: next_header,
            upper_layer_offset: 0,
            upper_layer_next_header_offset: None,
        },
        unknown_option: None,
        jumbo: None,
    };
    let (mut protocol, mut offset, mut prev) = (next_header, 0usize, None::<usize>);
    let mut first_fragment = false;
    while is_extension_header(protocol) {
        let chain = &mut out.chain;
        let naming_field = prev.map_or(6, |p| FIXED + p);
        if protocol == Protocol::HOP_BY_HOP && chain.ext_count != 0 {
            return fail(K::HopByHopNotFirst, naming_field);
        }
        if chain.ext_count == limits.headers_max {
            return fail(K::TooManyHeaders, FIXED + offset);
        }
        let truncated = if first_fragment { K::IncompleteChain } else { K::Truncated };
        let rest = payload.get(offset..).unwrap_or_default();
        let len = match (protocol, rest) {
            (Protocol::IPV6_FRAGMENT, _) => FRAGMENT_HEADER_LEN,
            (AUTH_HEADER, [_, payload_len, ..]) => 4 * (usize::from(*payload_len) + 2),
            (_, [_, hdr_ext_len, ..]) => MIN_HEADER_LEN + 8 * usize::from(*hdr_ext_len),
            _ => return fail(truncated, if first_fragment { 0 } else { FIXED + offset }),
        };
        if len > limits.header_bytes_max {
            return fail(K::HeaderTooBig, FIXED + offset + 1);
        }
        if offset + len > limits.chain_bytes_max {
            return fail(K::ChainTooLong, FIXED + offset);
        }
        let Some(header) = rest.get(..len) else {
            return fail(truncated, if first_fragment { 0 } else { FIXED + offset });
        };
        let mut stop = false;
        match protocol {
            Protocol::HOP_BY_HOP | Protocol::IPV6_DEST_OPTIONS => {
                let hbh = protocol == Protocol::HOP_BY_HOP;
                chain.hop_by_hop |= hbh;
                let found = check_options(header, hbh, limits)
                    .map_err(|e| ChainError { kind: e.kind, offset: FIXED + offset + e.offset })?;
                if out.unknown_option.is_none() {
                    out.unknown_option = found.unknown.map(|(at, t)| (FIXED + offset + at, t, hbh));
                }
                if hbh {
                    out.jumbo = found.jumbo.map(|(at, v)| (FIXED + offset + at, v));
                }
            }
            Protocol::IPV6_ROUTING if chain.routing.is_none() => {
                let routing = ExtHeader::new_unchecked(header);
                chain.routing = Some(RoutingInfo {
                    offset,
                    len,
                    routing_type: routing.routing_type(),
                    segments_left: routing.segments_left(),
                    prev_next_header_offset: prev,
                });
            }
            Protocol::IPV6_FRAGMENT => {
                let fragment = FragmentHeader::new_unchecked(header);
                let info = FragmentInfo {
                    offset,
                    frag_offset: fragment.frag_offset(),
                    more_fragments: fragment.more_fragments(),
                    identification: fragment.identification(),
                };
                stop = !info.is_first();
                first_fragment |= info.is_first() && info.more_fragments;
                if chain.fragment.is_none() {
                    chain.fragment = Some(info);
                }
            }
            _ => {}
        }
        chain.ext_count += 1;
        prev = Some(offset);
        protocol = Protocol(header[field::NEXT_HEADER]);
        offset += len;
        if stop {
            break;
        }
    }
    let chain = &mut out.chain;
    chain.upper_layer = protocol;
    chain.upper_layer_offset = offset;
    chain.upper_layer_next_header_offset = prev;
    let ports = matches!(protocol, Protocol::TCP | Protocol::UDP | Protocol::ICMPV6);
    if first_fragment && ports && payload.len() < offset + 8 {
        return fail(K::IncompleteChain, 0);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Hop-by-Hop (PadN only) -> Destination Options (one 8-byte unit more) -> Routing
    /// type 4 (an SRH with one segment) -> Fragment (offset 0, M set) -> UDP header.
    fn full_chain() -> Vec<u8> {
        let mut bytes = vec![
            // Hop-by-Hop: next 60, len 0, PadN with 4 bytes of padding.
            60, 0, 1, 4, 0, 0, 0, 0, //
            // Destination Options: next 43, len 1, PadN with 12 bytes of padding.
            43, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, //
            // Routing: next 44, len 2, type 4, SL 0, LE 0, flags 0, tag 0, one segment.
            44, 2, 4, 0, 0, 0, 0, 0, //
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, //
            // Fragment: next 17, offset 0, M, identification 0xdeadbeef.
            17, 0, 0x00, 0x01, 0xde, 0xad, 0xbe, 0xef,
        ];
        // UDP header (not read by the walk).
        bytes.extend_from_slice(&[0x30, 0x39, 0x00, 0x35, 0x00, 0x08, 0x00, 0x00]);
        bytes
    }

    #[test]
    fn walks_full_chain() {
        let bytes = full_chain();
        let chain = walk(Protocol::HOP_BY_HOP, &bytes).unwrap();
        assert!(chain.hop_by_hop);
        assert_eq!(chain.ext_count, 4);
        assert_eq!(
            chain.routing,
            Some(RoutingInfo {
                offset: 24,
                len: 24,
                routing_type: 4,
                segments_left: 0,
                prev_next_header_offset: Some(8),
            })
        );
        let fragment = chain.fragment.unwrap();
        assert_eq!(
            fragment,
            FragmentInfo { offset: 48, frag_offset: 0, more_fragments: true, identification: 0xdead_beef }
        );
        assert!(fragment.is_first() && !fragment.is_atomic());
        assert!(chain.has_upper_layer_header());
        assert_eq!(chain.upper_layer, Protocol::UDP);
        assert_eq!(chain.upper_layer_offset, 56);
        assert_eq!(chain.upper_layer_next_header_offset, Some(48));

        let routing = ExtHeader::new_checked(&bytes[24..]).unwrap();
        assert_eq!(routing.next_header(), Protocol::IPV6_FRAGMENT);
        assert_eq!(routing.header_len(), 24);
        assert_eq!(routing.data().len(), 22);
        assert_eq!(routing.payload().len(), 16);
    }

    #[test]
    fn no_extension_headers() {
        let chain = walk(Protocol::TCP, &[]).unwrap();
        assert_eq!(chain.upper_layer, Protocol::TCP);
        assert_eq!(chain.upper_layer_offset, 0);
        assert_eq!(chain.upper_layer_next_header_offset, None);
        assert_eq!((chain.routing, chain.fragment, chain.ext_count), (None, None, 0));
        assert!(!chain.hop_by_hop);

        let chain = walk(Protocol::IPV6_DEST_OPTIONS, &[59, 0, 1, 4, 0, 0, 0, 0]).unwrap();
        assert_eq!(chain.upper_layer, Protocol::IPV6_NO_NEXT_HEADER);
        assert_eq!(chain.upper_layer_offset, 8);
        assert_eq!(chain.upper_layer_next_header_offset, Some(0));
    }

    #[test]
    fn non_first_fragment_stops() {
        // Fragment (next 60, offset 185 units, M clear) followed by fragment data that
        // would read as a truncated Destination Options header.
        let bytes = [60, 0, 0x05, 0xc8, 0, 0, 0, 7, 6, 200, 0, 0];
        let chain = walk(Protocol::IPV6_FRAGMENT, &bytes).unwrap();
        let fragment = chain.fragment.unwrap();
        assert_eq!((fragment.frag_offset, fragment.more_fragments), (185, false));
        assert_eq!(fragment.identification, 7);
        assert!(!chain.has_upper_layer_header());
        assert_eq!(chain.upper_layer, Protocol::IPV6_DEST_OPTIONS);
        assert_eq!(chain.upper_layer_offset, 8);

        let atomic = [58, 0, 0, 0, 0, 0, 0, 1];
        let chain = walk(Protocol::IPV6_FRAGMENT, &atomic).unwrap();
        assert!(chain.fragment.unwrap().is_atomic());
        assert_eq!(chain.upper_layer, Protocol::ICMPV6);
    }

    #[test]
    fn authentication_header_length() {
        // AH with payload len 4: (4 + 2) * 4 = 24 bytes, then TCP.
        let mut bytes = vec![6, 4, 0, 0];
        bytes.extend_from_slice(&[0; 20]);
        let chain = walk(AUTH_HEADER, &bytes).unwrap();
        assert_eq!(chain.upper_layer, Protocol::TCP);
        assert_eq!(chain.upper_layer_offset, 24);
        assert_eq!(walk(AUTH_HEADER, &bytes[..23]), Err(WireError::Truncated));
        assert_eq!(walk(ESP, &bytes).unwrap().upper_layer, ESP);
    }

    #[test]
    fn errors() {
        let bytes = full_chain();
        for cut in [0, 1, 7, 8, 23, 47, 55] {
            assert_eq!(walk(Protocol::HOP_BY_HOP, &bytes[..cut]), Err(WireError::Truncated), "cut at {cut}");
        }
        // The upper-layer header itself is not required.
        assert!(walk(Protocol::HOP_BY_HOP, &bytes[..56]).is_ok());

        // Hop-by-Hop after Destination Options.
        let late_hbh = [0, 0, 1, 4, 0, 0, 0, 0, 59, 0, 1, 4, 0, 0, 0, 0];
        assert_eq!(walk(Protocol::IPV6_DEST_OPTIONS, &late_hbh), Err(WireError::Malformed));
        assert!(walk(Protocol::HOP_BY_HOP, &late_hbh[8..]).is_ok());

        // MAX_EXT_HEADERS Destination Options headers pass, one more does not (even
        // before its bytes are looked at).
        let mut many = Vec::new();
        for _ in 0..MAX_EXT_HEADERS {
            many.extend_from_slice(&[60, 0, 1, 4, 0, 0, 0, 0]);
        }
        let last = many.len() - 8;
        many[last] = 17;
        let chain = walk(Protocol::IPV6_DEST_OPTIONS, &many).unwrap();
        assert_eq!(chain.ext_count, MAX_EXT_HEADERS);
        assert_eq!(chain.upper_layer, Protocol::UDP);
        assert_eq!(chain.upper_layer_offset, 8 * MAX_EXT_HEADERS);
        many[last] = 60;
        assert_eq!(walk(Protocol::IPV6_DEST_OPTIONS, &many), Err(WireError::Malformed));
        many.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]);
        assert_eq!(walk(Protocol::IPV6_DEST_OPTIONS, &many), Err(WireError::Malformed));
    }

    #[test]
    fn second_routing_header_is_not_reported() {
        let bytes = [
            43, 0, 0, 0, 0, 0, 0, 0, // Routing type 0, SL 0
            59, 0, 4, 3, 0, 0, 0, 0, // Routing type 4, SL 3
        ];
        let chain = walk(Protocol::IPV6_ROUTING, &bytes).unwrap();
        let routing = chain.routing.unwrap();
        assert_eq!((routing.offset, routing.routing_type), (0, 0));
        assert_eq!(routing.prev_next_header_offset, None);
        assert_eq!(chain.ext_count, 2);
        assert_eq!(chain.upper_layer_offset, 16);
    }

    #[test]
    fn views_and_setters() {
        let mut bytes = [0u8; 24];
        let mut header = ExtHeader::new_unchecked(&mut bytes[..]);
        header.set_next_header(Protocol::ICMPV6);
        header.set_hdr_ext_len(1);
        header.set_routing_type(4);
        header.set_segments_left(2);
        header.data_mut()[2] = 0xaa;
        header.payload_mut()[0] = 0xbb;
        assert_eq!(&bytes[..5], &[58, 1, 4, 2, 0xaa]);
        assert_eq!(bytes[16], 0xbb);
        assert_eq!(ExtHeader::new_checked(&bytes[..15]), Err(WireError::Truncated));
        assert_eq!(ExtHeader::new_checked(&bytes[..7]), Err(WireError::Truncated));

        let mut bytes = [0xffu8; 10];
        let mut fragment = FragmentHeader::new_checked(&mut bytes[..]).unwrap();
        fragment.set_next_header(Protocol::UDP);
        fragment.set_frag_offset(0x1abc);
        fragment.set_more_fragments(false);
        fragment.set_identification(0x0102_0304);
        fragment.payload_mut()[0] = 0;
        assert_eq!(fragment.frag_offset(), 0x1abc);
        assert!(!fragment.more_fragments());
        assert_eq!(fragment.identification(), 0x0102_0304);
        assert_eq!(fragment.payload(), &[0, 0xff]);
        assert_eq!(&bytes[..8], &[17, 0xff, 0xd5, 0xe6, 1, 2, 3, 4]);
        assert_eq!(FragmentHeader::new_checked(&bytes[..7]), Err(WireError::Truncated));
    }

    /// One header of a generated chain: its type and body.
    fn chain_strategy() -> impl Strategy<Value = (u8, Vec<u8>)> {
        let header =
            (prop_oneof![Just(0u8), Just(43), Just(44), Just(60), Just(51), any::<u8>()], 0u8..4, any::<[u8; 8]>());
        (
            prop_oneof![Just(0u8), Just(43), Just(60), any::<u8>()],
            proptest::collection::vec(header, 0..12),
            any::<Option<usize>>(),
        )
            .prop_map(|(first, headers, cut)| {
                let mut bytes = Vec::new();
                let types: Vec<u8> = headers.iter().map(|h| h.0).collect();
                for (i, (_, ext_len, fill)) in headers.iter().enumerate() {
                    let next = types.get(i + 1).copied().unwrap_or(17);
                    let start = bytes.len();
                    bytes.push(next);
                    bytes.push(*ext_len);
                    bytes.extend_from_slice(&fill[2..]);
                    bytes.resize(start + 8 + 8 * usize::from(*ext_len), 0);
                }
                if let Some(cut) = cut {
                    bytes.truncate(cut % (bytes.len() + 1));
                }
                (types.first().copied().unwrap_or(first), bytes)
            })
    }

    proptest! {
        #[test]
        fn walk_never_panics(
            next_header in prop_oneof![Just(0u8), Just(43), Just(44), Just(60), Just(51),
                any::<u8>()],
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            if let Ok(chain) = walk(Protocol(next_header), &bytes) {
                prop_assert!(chain.upper_layer_offset <= bytes.len());
                prop_assert!(chain.ext_count <= MAX_EXT_HEADERS);
                if let Some(routing) = chain.routing {
                    prop_assert!(routing.offset + routing.len <= bytes.len());
                    let header = ExtHeader::new_checked(&bytes[routing.offset..]).unwrap();
                    prop_assert_eq!(header.header_len(), routing.len);
                }
                if let Some(fragment) = chain.fragment {
                    prop_assert!(fragment.offset + FRAGMENT_HEADER_LEN <= bytes.len());
                }
            }
        }

        #[test]
        fn walk_structured_chains((first, bytes) in chain_strategy()) {
            if let Ok(chain) = walk(Protocol(first), &bytes) {
                prop_assert!(chain.upper_layer_offset <= bytes.len());
                if let Some(offset) = chain.upper_layer_next_header_offset {
                    prop_assert_eq!(Protocol(bytes[offset]), chain.upper_layer);
                }
                if let Some(routing) = chain.routing {
                    prop_assert_eq!(bytes[routing.offset + 2], routing.routing_type);
                    let named_by = routing.prev_next_header_offset.map_or(first, |o| bytes[o]);
                    prop_assert_eq!(named_by, Protocol::IPV6_ROUTING.0);
                }
            }
        }
    }

    mod checked {
        use super::super::*;
        use crate::ipv6opt::{ChainErrorKind as K, ExtLimits};
        use proptest::prelude::*;

        fn opts(next: u8, body: &[u8]) -> Vec<u8> {
            let mut h = vec![next, (body.len() + 2) as u8 / 8 - 1];
            h.extend_from_slice(body);
            h
        }

        #[test]
        fn a_plain_chain_passes_and_reports_options() {
            let l = ExtLimits::default();
            // HBH (router alert, pad) -> DO (unknown 0x3e to skip, 0xbe to answer) -> UDP.
            let mut p = opts(60, &[5, 2, 0, 0, 1, 0]);
            p.extend(opts(17, &[0x3e, 0, 0xbe, 0, 1, 0]));
            p.extend([0u8; 8]);
            let c = walk_checked(Protocol::HOP_BY_HOP, &p, &l).unwrap();
            assert_eq!(c.chain.ext_count, 2);
            assert_eq!(c.chain.upper_layer, Protocol::UDP);
            assert_eq!(c.chain.upper_layer_offset, 16);
            assert_eq!(c.unknown_option, Some((40 + 8 + 4, 0xbe, false)));
            assert_eq!(c.jumbo, None);
        }

        #[test]
        fn limits_and_rules_point_at_the_octet() {
            let l = ExtLimits { headers_max: 2, chain_bytes_max: 64, header_bytes_max: 24, ..ExtLimits::default() };
            let pad = |next| opts(next, &[1, 4, 0, 0, 0, 0]);
            let e = |nh: u8, p: &[u8]| walk_checked(Protocol(nh), p, &l).unwrap_err();
            // Three Destination Options headers: the third is one too many.
            let p = [pad(60), pad(60), pad(17)].concat();
            let err = e(60, &p);
            assert_eq!((err.kind, err.offset), (K::TooManyHeaders, 40 + 16));
            // DO -> HBH: the Next Header field naming the HBH (offset 0 in the DO).
            let p = [pad(0), pad(17)].concat();
            assert_eq!(e(60, &p).kind, K::HopByHopNotFirst);
            assert_eq!(e(60, &p).offset, 40);
            // A 32-octet header with a 24-octet limit: pointer at its Hdr Ext Len.
            let mut big = vec![17, 3];
            big.extend([1, 28]);
            big.extend([0u8; 28]);
            assert_eq!(e(60, &big).kind, K::HeaderTooBig);
            assert_eq!(e(60, &big).offset, 41);
            // Truncated: no pointer worth an ICMP.
            assert_eq!(e(60, &[17, 1, 1, 0]).kind, K::Truncated);
            // A first fragment whose UDP header is in the next fragment.
            let frag = [17u8, 0, 0, 1, 0, 0, 0, 7];
            assert_eq!(e(44, &frag).kind, K::IncompleteChain);
            let mut whole = frag.to_vec();
            whole.extend([0u8; 8]);
            assert!(walk_checked(Protocol(44), &whole, &l).is_ok());
            // A non-first fragment carries no chain to check.
            assert!(walk_checked(Protocol(44), &[17u8, 0, 0, 9, 0, 0, 0, 7], &l).is_ok());
            // Chain bytes: two 32-octet headers exceed 48.
            let l2 = ExtLimits { chain_bytes_max: 48, ..ExtLimits::default() };
            let p = [&big[..], &big[..]].concat();
            let mut p2 = p.clone();
            p2[0] = 60;
            assert_eq!(walk_checked(Protocol(60), &p2, &l2).unwrap_err().kind, K::ChainTooLong);
        }

        proptest! {
            #[test]
            fn checked_walk_never_panics(nh in any::<u8>(), p in proptest::collection::vec(any::<u8>(), 0..200)) {
                let _ = walk_checked(Protocol(nh), &p, &ExtLimits::default());
            }
        }
    }
}

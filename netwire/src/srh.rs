//! The IPv6 Segment Routing Header (SRH, RFC 8754): a Routing header (next header
//! 43) of Routing Type 4.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Next Header   |  Hdr Ext Len  | Routing Type  | Segments Left |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Last Entry   |     Flags     |              Tag              |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                                                               |
//! |            Segment List[0] (128-bit IPv6 address)             |
//! |                                                               |
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                              ...                              |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                                                               |
//! |            Segment List[n] (128-bit IPv6 address)             |
//! |                                                               |
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! //                                                             //
//! //         Optional Type Length Value objects (variable)       //
//! //                                                             //
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!
//! TLV (RFC 8754 §2.1); Pad1 (type 0) is a single byte with no length:
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-
//! |     Type      |    Length     | Value (Length bytes) ...
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-
//!
//! HMAC TLV (type 5, RFC 8754 §2.1.2):
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     Type      |    Length     |D|        RESERVED             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                      HMAC Key ID (4 octets)                   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! //                HMAC (variable: 0 to 32 octets, 8n)          //
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! The Segment List is in reverse travel order: Segment List\[0\] is the last segment
//! of the path and Segment List\[Last Entry\] the first. The active segment (the IPv6
//! destination) is Segment List\[Segments Left\]; a node processing the SRH decrements
//! Segments Left and copies the new active segment into the destination
//! ([`Packet::advance`]). Segments Left may be Last Entry + 1 when the first segment
//! is only in the IPv6 destination (a reduced SRH).
//!
//! [`Packet::new_checked`] only checks that the buffer holds the whole header
//! (`8 + 8 * hdr_ext_len` bytes); the buffer starts at the SRH and may extend past it
//! into the payload. [`Packet::check_srh`] checks what RFC 8754 §4.3.1.1 asks of a
//! segment endpoint: Routing Type 4, Last Entry inside the header, Segments Left at
//! most Last Entry + 1, and well-formed TLVs; it returns an [`SrhError`] whose
//! [`SrhError::pointer_offset`] is the parameter-problem pointer within the SRH.
//!
//! Panics: accessors panic only on a view made with [`Packet::new_unchecked`] over a
//! buffer shorter than 8 bytes or than the header length, and [`Packet::segment`] /
//! [`Packet::set_segment`] panic on an index outside the segment list or the header
//! (use [`Packet::segment_checked`]); after [`Packet::new_checked`] nothing else does,
//! even before [`Packet::check_srh`]. [`TlvIter`] never panics.

use std::net::Ipv6Addr;

use super::ipv4::Protocol;
use super::{read_ipv6, read_u16, read_u32, write_u16, write_u32, WireError};

/// The Routing Type of a Segment Routing Header.
pub const ROUTING_TYPE: u8 = 4;

/// Length in bytes of the SRH before the Segment List.
pub const HEADER_LEN: usize = 8;

/// Length in bytes of one Segment List entry.
pub const SEGMENT_LEN: usize = 16;

/// The most segments an SRH can hold: Hdr Ext Len is at most 255 units of 8 bytes.
pub const MAX_SEGMENTS: usize = 127;

/// TLV type Pad1: one byte of padding, no length or value.
pub const TLV_PAD1: u8 = 0;
/// TLV type PadN: padding of `2 + length` bytes.
pub const TLV_PADN: u8 = 4;
/// TLV type HMAC.
pub const TLV_HMAC: u8 = 5;

/// Length in bytes of an HMAC TLV without its HMAC: type, length, D + reserved, key ID.
pub const HMAC_TLV_FIXED_LEN: usize = 8;

/// The longest HMAC an HMAC TLV carries (RFC 8754 §2.1.2), e.g. HMAC-SHA-256.
pub const HMAC_MAX_LEN: usize = 32;

/// The D bit in the first byte after the HMAC TLV's length: destination address
/// verification disabled (reduced segment list).
const HMAC_D_FLAG: u8 = 0x80;

mod field {
    pub const NEXT_HEADER: usize = 0;
    pub const HDR_EXT_LEN: usize = 1;
    pub const ROUTING_TYPE: usize = 2;
    pub const SEGMENTS_LEFT: usize = 3;
    pub const LAST_ENTRY: usize = 4;
    pub const FLAGS: usize = 5;
    pub const TAG: usize = 6;
    pub const SEGMENTS: usize = 8;

    pub const HMAC_D_RESERVED: usize = 0;
    pub const HMAC_KEY_ID: usize = 2;
    pub const HMAC_TEXT: usize = 6;
}

/// Why an SRH fails [`Packet::check_srh`] (or [`Repr::parse`], or [`TlvIter`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SrhError {
    /// The buffer is shorter than 8 bytes or than `8 + 8 * hdr_ext_len`.
    #[error("SRH truncated: buffer shorter than the header length")]
    Truncated,
    /// The Routing Type is not 4.
    #[error("routing header is not an SRH (routing type not 4)")]
    NotSrh,
    /// The Segment List (Last Entry + 1 entries) does not fit in the header.
    #[error("SRH Last Entry beyond the header length")]
    LastEntryOutOfRange,
    /// Segments Left is greater than Last Entry + 1.
    #[error("SRH Segments Left greater than Last Entry + 1")]
    SegmentsLeftOutOfRange,
    /// A TLV runs past the end of the header.
    #[error("SRH TLV at offset {offset} runs past the header")]
    TlvOverrun {
        /// Offset of the TLV's type byte within the SRH.
        offset: u16,
    },
    /// A TLV's length is invalid for its type (an HMAC TLV whose HMAC is not 0 to 32
    /// bytes in multiples of 8).
    #[error("SRH TLV at offset {offset} is malformed")]
    TlvMalformed {
        /// Offset of the TLV's type byte within the SRH.
        offset: u16,
    },
}

impl SrhError {
    /// The offset within the SRH of the field an ICMPv6 Parameter Problem (code 0,
    /// erroneous header field) should point at; the caller adds the SRH's offset from
    /// the start of the IPv6 header.
    ///
    /// * [`SrhError::SegmentsLeftOutOfRange`] and [`SrhError::LastEntryOutOfRange`]: 3,
    ///   Segments Left; RFC 8754 §4.3.1.1 (S10–S12) answers both conditions with a
    ///   pointer to Segments Left.
    /// * [`SrhError::NotSrh`]: 2, Routing Type (RFC 8200 §4.4, when Segments Left is
    ///   non-zero).
    /// * [`SrhError::Truncated`]: 1, Hdr Ext Len (the field claiming more bytes than
    ///   the packet holds; dropping silently is also reasonable).
    /// * TLV errors: the offset of the bad TLV.
    pub fn pointer_offset(self) -> u32 {
        match self {
            SrhError::Truncated => field::HDR_EXT_LEN as u32,
            SrhError::NotSrh => field::ROUTING_TYPE as u32,
            SrhError::LastEntryOutOfRange | SrhError::SegmentsLeftOutOfRange => field::SEGMENTS_LEFT as u32,
            SrhError::TlvOverrun { offset } | SrhError::TlvMalformed { offset } => u32::from(offset),
        }
    }
}

impl From<SrhError> for WireError {
    /// [`SrhError::Truncated`] and [`SrhError::TlvOverrun`] become
    /// [`WireError::Truncated`], [`SrhError::NotSrh`] [`WireError::Unsupported`], the
    /// rest [`WireError::Malformed`].
    fn from(error: SrhError) -> WireError {
        match error {
            SrhError::Truncated | SrhError::TlvOverrun { .. } => WireError::Truncated,
            SrhError::NotSrh => WireError::Unsupported,
            SrhError::LastEntryOutOfRange | SrhError::SegmentsLeftOutOfRange | SrhError::TlvMalformed { .. } => {
                WireError::Malformed
            }
        }
    }
}

/// A TLV offset as carried in [`SrhError`], saturating.
fn tlv_offset(offset: usize) -> u16 {
    u16::try_from(offset).unwrap_or(u16::MAX)
}

/// A zero-copy view of a Segment Routing Header; the buffer starts at the SRH and may
/// extend past it (the rest of the IPv6 payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after [`Packet::check_len`] ([`WireError::Truncated`]). The
    /// routing type and the other fields are not checked: see [`Packet::check_srh`].
    pub fn new_checked(buffer: T) -> Result<Packet<T>, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the buffer holds 8 bytes and the whole `header_len` bytes.
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || len < self.header_len() {
            Err(WireError::Truncated)
        } else {
            Ok(())
        }
    }

    /// The RFC 8754 §4.3.1.1 checks, in this order: the buffer holds the header
    /// ([`SrhError::Truncated`]), Routing Type is 4 ([`SrhError::NotSrh`]), the
    /// Last Entry + 1 segments fit in the header, i.e. `Last Entry <= Hdr Ext Len / 2 - 1`
    /// ([`SrhError::LastEntryOutOfRange`]), Segments Left is at most Last Entry + 1
    /// ([`SrhError::SegmentsLeftOutOfRange`]), and the TLVs after the Segment List fill
    /// the rest of the header exactly ([`SrhError::TlvOverrun`],
    /// [`SrhError::TlvMalformed`]).
    ///
    /// After it succeeds, [`Packet::segment`] does not panic for any index below
    /// [`Packet::segments_len`]. RFC 8754 only requires the Last Entry and Segments Left
    /// checks when Segments Left is non-zero (with zero the packet goes straight to the
    /// next header); a caller that wants to be as lenient checks `segments_left()` first.
    pub fn check_srh(&self) -> Result<(), SrhError> {
        if self.check_len().is_err() {
            return Err(SrhError::Truncated);
        }
        if !self.is_srh() {
            return Err(SrhError::NotSrh);
        }
        if self.segments_end() > self.header_len() {
            return Err(SrhError::LastEntryOutOfRange);
        }
        if usize::from(self.segments_left()) > self.segments_len() {
            return Err(SrhError::SegmentsLeftOutOfRange);
        }
        self.tlv_iter().validate()
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole underlying buffer (may extend past the header).
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// The header itself: the first `header_len` bytes.
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.header_len()]
    }

    /// Next header: the header after the SRH.
    pub fn next_header(&self) -> Protocol {
        Protocol(self.buffer.as_ref()[field::NEXT_HEADER])
    }

    /// Hdr Ext Len: the length in 8-octet units, not counting the first 8 octets.
    pub fn hdr_ext_len(&self) -> u8 {
        self.buffer.as_ref()[field::HDR_EXT_LEN]
    }

    /// The header length in bytes: `8 + 8 * hdr_ext_len`.
    pub fn header_len(&self) -> usize {
        HEADER_LEN + 8 * usize::from(self.hdr_ext_len())
    }

    /// Routing Type (4 for an SRH).
    pub fn routing_type(&self) -> u8 {
        self.buffer.as_ref()[field::ROUTING_TYPE]
    }

    /// Whether the Routing Type is 4 (Segment Routing Header).
    pub fn is_srh(&self) -> bool {
        self.routing_type() == ROUTING_TYPE
    }

    /// Segments Left: index of the active segment.
    pub fn segments_left(&self) -> u8 {
        self.buffer.as_ref()[field::SEGMENTS_LEFT]
    }

    /// Last Entry: index of the last element of the Segment List (the first segment of
    /// the path).
    pub fn last_entry(&self) -> u8 {
        self.buffer.as_ref()[field::LAST_ENTRY]
    }

    /// Flags (none defined by RFC 8754).
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// Tag.
    pub fn tag(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::TAG)
    }

    /// The number of entries the Segment List declares: Last Entry + 1. They all lie in
    /// the header only once [`Packet::check_srh`] has passed.
    pub fn segments_len(&self) -> usize {
        usize::from(self.last_entry()) + 1
    }

    /// Offset of the end of the declared Segment List within the SRH.
    fn segments_end(&self) -> usize {
        field::SEGMENTS + SEGMENT_LEN * self.segments_len()
    }

    /// Segment List\[`index`\], or `None` if `index > last_entry` or the entry does not
    /// lie wholly in the header (and the buffer).
    pub fn segment_checked(&self, index: usize) -> Option<Ipv6Addr> {
        let buffer = self.buffer.as_ref();
        let start = field::SEGMENTS + SEGMENT_LEN * index;
        let end = start + SEGMENT_LEN;
        if index >= self.segments_len() || end > self.header_len().min(buffer.len()) {
            return None;
        }
        Some(read_ipv6(buffer, start))
    }

    /// Segment List\[`index`\].
    ///
    /// # Panics
    /// If `index > last_entry` or the entry lies past the header (see
    /// [`Packet::segment_checked`]).
    pub fn segment(&self, index: usize) -> Ipv6Addr {
        match self.segment_checked(index) {
            Some(addr) => addr,
            None => panic!("SRH segment index {index} out of range"),
        }
    }

    /// The active segment, Segment List\[Segments Left\]: `None` when Segments Left is
    /// Last Entry + 1 (a reduced SRH, the active segment is only in the IPv6
    /// destination) or the index is out of range.
    pub fn active_segment(&self) -> Option<Ipv6Addr> {
        self.segment_checked(usize::from(self.segments_left()))
    }

    /// The segments in SRH order (Segment List\[0\] first) that lie in the header.
    pub fn segments(&self) -> impl Iterator<Item = Ipv6Addr> + '_ {
        (0..self.segments_len()).map_while(|index| self.segment_checked(index))
    }

    /// The TLV bytes: from the end of the Segment List to the end of the header (empty
    /// if the Segment List does not fit).
    pub fn tlvs(&self) -> &[u8] {
        let end = self.header_len();
        let start = self.segments_end().min(end);
        &self.buffer.as_ref()[start..end]
    }

    /// An iterator over the TLVs; error offsets are relative to the SRH.
    pub fn tlv_iter(&self) -> TlvIter<'_> {
        let offset = self.segments_end().min(self.header_len());
        TlvIter::new(self.tlvs(), offset)
    }

    /// The first HMAC TLV, if any; an error if a TLV before it is bad.
    pub fn hmac(&self) -> Result<Option<HmacTlv<'_>>, SrhError> {
        for tlv in self.tlv_iter() {
            if let Tlv::Hmac(hmac) = tlv? {
                return Ok(Some(hmac));
            }
        }
        Ok(None)
    }

    /// The bytes after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the next header.
    pub fn set_next_header(&mut self, next_header: Protocol) {
        self.buffer.as_mut()[field::NEXT_HEADER] = next_header.0;
    }

    /// Sets Hdr Ext Len (8-octet units after the first 8 octets).
    pub fn set_hdr_ext_len(&mut self, hdr_ext_len: u8) {
        self.buffer.as_mut()[field::HDR_EXT_LEN] = hdr_ext_len;
    }

    /// Sets the Routing Type.
    pub fn set_routing_type(&mut self, routing_type: u8) {
        self.buffer.as_mut()[field::ROUTING_TYPE] = routing_type;
    }

    /// Sets Segments Left.
    pub fn set_segments_left(&mut self, segments_left: u8) {
        self.buffer.as_mut()[field::SEGMENTS_LEFT] = segments_left;
    }

    /// Sets Last Entry.
    pub fn set_last_entry(&mut self, last_entry: u8) {
        self.buffer.as_mut()[field::LAST_ENTRY] = last_entry;
    }

    /// Sets the flags.
    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[field::FLAGS] = flags;
    }

    /// Sets the tag.
    pub fn set_tag(&mut self, tag: u16) {
        write_u16(self.buffer.as_mut(), field::TAG, tag);
    }

    /// Sets Segment List\[`index`\].
    ///
    /// # Panics
    /// If `index > last_entry` or the entry lies past the header (see
    /// [`Packet::segment_checked`]).
    pub fn set_segment(&mut self, index: usize, addr: Ipv6Addr) {
        if self.segment_checked(index).is_none() {
            panic!("SRH segment index {index} out of range");
        }
        let start = field::SEGMENTS + SEGMENT_LEN * index;
        self.buffer.as_mut()[start..start + SEGMENT_LEN].copy_from_slice(&addr.octets());
    }

    /// The segment endpoint step of RFC 8754 §4.3.1.1 (S15–S16): decrements Segments
    /// Left and returns the new active segment, which the caller copies into the IPv6
    /// destination (and then handles the hop limit). `None`, leaving the header
    /// unchanged, when Segments Left is 0 or the new index is out of range (which
    /// [`Packet::check_srh`] rules out).
    pub fn advance(&mut self) -> Option<Ipv6Addr> {
        let segments_left = self.segments_left().checked_sub(1)?;
        let next = self.segment_checked(usize::from(segments_left))?;
        self.set_segments_left(segments_left);
        Some(next)
    }

    /// The TLV bytes, mutable (empty if the Segment List does not fit).
    pub fn tlvs_mut(&mut self) -> &mut [u8] {
        let end = self.header_len();
        let start = self.segments_end().min(end);
        &mut self.buffer.as_mut()[start..end]
    }

    /// The bytes after the header, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        &mut self.buffer.as_mut()[start..]
    }
}

/// An HMAC TLV (RFC 8754 §2.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HmacTlv<'a> {
    /// D: destination address verification disabled (reduced segment list).
    pub d_flag: bool,
    /// HMAC Key ID.
    pub key_id: u32,
    /// The HMAC itself: 0 to 32 bytes, a multiple of 8.
    pub hmac: &'a [u8],
}

/// One SRH TLV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tlv<'a> {
    /// Pad1 (type 0): one byte.
    Pad1,
    /// PadN (type 4): the padding bytes after type and length.
    PadN(&'a [u8]),
    /// HMAC (type 5).
    Hmac(HmacTlv<'a>),
    /// Any other TLV: its type and value.
    Other {
        /// TLV type.
        tlv_type: u8,
        /// The bytes after type and length.
        value: &'a [u8],
    },
}

/// Parses an HMAC TLV's value (the bytes after type and length).
fn parse_hmac(value: &[u8]) -> Option<HmacTlv<'_>> {
    let hmac = value.get(field::HMAC_TEXT..)?;
    if hmac.len() % 8 != 0 || hmac.len() > HMAC_MAX_LEN {
        return None;
    }
    Some(HmacTlv {
        d_flag: value[field::HMAC_D_RESERVED] & HMAC_D_FLAG != 0,
        key_id: read_u32(value, field::HMAC_KEY_ID),
        hmac,
    })
}

/// An iterator over SRH TLVs (RFC 8754 §2.1).
///
/// Yields `Err(SrhError::TlvOverrun)` for a TLV running past the end of the bytes and
/// `Err(SrhError::TlvMalformed)` for an HMAC TLV of a bad length, then stops.
#[derive(Debug, Clone)]
pub struct TlvIter<'a> {
    remaining: &'a [u8],
    offset: usize,
}

impl<'a> TlvIter<'a> {
    /// Iterates over the TLVs in `tlvs`, where `offset` is the offset of `tlvs` within
    /// the SRH (used in errors).
    pub fn new(tlvs: &'a [u8], offset: usize) -> TlvIter<'a> {
        TlvIter { remaining: tlvs, offset }
    }

    /// The offset within the SRH of the next TLV.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Checks every TLV is well formed.
    pub fn validate(self) -> Result<(), SrhError> {
        for tlv in self {
            tlv?;
        }
        Ok(())
    }
}

impl<'a> Iterator for TlvIter<'a> {
    type Item = Result<Tlv<'a>, SrhError>;

    /// The next TLV, or the error that ends the iteration.
    fn next(&mut self) -> Option<Self::Item> {
        let (&tlv_type, rest) = self.remaining.split_first()?;
        let offset = self.offset;
        self.remaining = &[];
        if tlv_type == TLV_PAD1 {
            self.remaining = rest;
            self.offset += 1;
            return Some(Ok(Tlv::Pad1));
        }
        let overrun = SrhError::TlvOverrun { offset: tlv_offset(offset) };
        let Some((&len, rest)) = rest.split_first() else {
            return Some(Err(overrun));
        };
        let len = usize::from(len);
        if len > rest.len() {
            return Some(Err(overrun));
        }
        let (value, rest) = rest.split_at(len);
        let tlv = match tlv_type {
            TLV_PADN => Tlv::PadN(value),
            TLV_HMAC => match parse_hmac(value) {
                Some(hmac) => Tlv::Hmac(hmac),
                None => return Some(Err(SrhError::TlvMalformed { offset: tlv_offset(offset) })),
            },
            _ => Tlv::Other { tlv_type, value },
        };
        self.remaining = rest;
        self.offset += 2 + len;
        Some(Ok(tlv))
    }
}

/// An owned HMAC TLV, for [`Repr`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HmacRepr {
    /// D: destination address verification disabled.
    pub d_flag: bool,
    /// HMAC Key ID.
    pub key_id: u32,
    /// The HMAC: 0 to 32 bytes, a multiple of 8.
    pub hmac: Vec<u8>,
}

/// An owned, parsed SRH, for the slow path and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repr {
    /// Next header after the SRH.
    pub next_header: Protocol,
    /// Segments Left: at most `segments.len()`.
    pub segments_left: u8,
    /// Flags.
    pub flags: u8,
    /// Tag.
    pub tag: u16,
    /// The Segment List in SRH order: `segments[0]` is the last segment of the path,
    /// `segments[last_entry]` the first. 1 to [`MAX_SEGMENTS`] entries.
    pub segments: Vec<Ipv6Addr>,
    /// The HMAC TLV, if any (other TLVs are not kept).
    pub hmac: Option<HmacRepr>,
}

impl Repr {
    /// A header for a path given in travel order (first segment first): the Segment
    /// List is `path` reversed and Segments Left is `path.len() - 1`, so the active
    /// segment is `path[0]` (the IPv6 destination to use). Flags and tag 0, no HMAC.
    /// [`WireError::Malformed`] if `path` is empty or longer than [`MAX_SEGMENTS`].
    pub fn from_path(path: &[Ipv6Addr], next_header: Protocol) -> Result<Repr, WireError> {
        if path.is_empty() || path.len() > MAX_SEGMENTS {
            return Err(WireError::Malformed);
        }
        let segments_left = u8::try_from(path.len() - 1).map_err(|_| WireError::Malformed)?;
        Ok(Repr {
            next_header,
            segments_left,
            flags: 0,
            tag: 0,
            segments: path.iter().rev().copied().collect(),
            hmac: None,
        })
    }

    /// Parses a header that passes [`Packet::check_srh`]. Padding and unknown TLVs are
    /// dropped; only the first HMAC TLV is kept.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr, SrhError> {
        packet.check_srh()?;
        let hmac =
            packet.hmac()?.map(|hmac| HmacRepr { d_flag: hmac.d_flag, key_id: hmac.key_id, hmac: hmac.hmac.to_vec() });
        Ok(Repr {
            next_header: packet.next_header(),
            segments_left: packet.segments_left(),
            flags: packet.flags(),
            tag: packet.tag(),
            segments: packet.segments().collect(),
            hmac,
        })
    }

    /// Last Entry: `segments.len() - 1` (0 when empty, which [`Repr::emit`] rejects).
    pub fn last_entry(&self) -> u8 {
        u8::try_from(self.segments.len().saturating_sub(1)).unwrap_or(u8::MAX)
    }

    /// The segments in travel order (first segment first).
    pub fn path(&self) -> Vec<Ipv6Addr> {
        self.segments.iter().rev().copied().collect()
    }

    /// The active segment, `segments[segments_left]` (`None` for a reduced SRH).
    pub fn active_segment(&self) -> Option<Ipv6Addr> {
        self.segments.get(usize::from(self.segments_left)).copied()
    }

    /// Length in bytes of the TLVs [`Repr::emit`] writes.
    fn tlvs_len(&self) -> usize {
        self.hmac.as_ref().map_or(0, |hmac| HMAC_TLV_FIXED_LEN + hmac.hmac.len())
    }

    /// The header length [`Repr::emit`] writes: `8 + 16 * segments + TLVs` (the HMAC
    /// TLV is `8 + hmac.len()` bytes).
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + SEGMENT_LEN * self.segments.len() + self.tlvs_len()
    }

    /// Writes the header (with the HMAC TLV right after the Segment List, if any) into
    /// `out`; returns [`Repr::buffer_len`]. [`WireError::Malformed`] if there are no or
    /// more than [`MAX_SEGMENTS`] segments, Segments Left exceeds the number of
    /// segments, the HMAC is not 0 to 32 bytes in multiples of 8 or the header would
    /// exceed 2048 bytes; [`WireError::BufferTooSmall`] if `out` is too short.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, WireError> {
        if let Some(hmac) = &self.hmac {
            if hmac.hmac.len() % 8 != 0 || hmac.hmac.len() > HMAC_MAX_LEN {
                return Err(WireError::Malformed);
            }
        }
        let len = emit_fixed(
            out,
            self.next_header,
            self.segments_left,
            self.flags,
            self.tag,
            &self.segments,
            self.tlvs_len(),
        )?;
        if let Some(hmac) = &self.hmac {
            let tlv = &mut out[len - self.tlvs_len()..len];
            tlv[0] = TLV_HMAC;
            // At most 6 + 32 bytes: checked above.
            tlv[1] = (HMAC_TLV_FIXED_LEN - 2 + hmac.hmac.len()) as u8;
            let value = &mut tlv[2..];
            value[field::HMAC_D_RESERVED] = if hmac.d_flag { HMAC_D_FLAG } else { 0 };
            value[field::HMAC_D_RESERVED + 1] = 0;
            write_u32(value, field::HMAC_KEY_ID, hmac.key_id);
            value[field::HMAC_TEXT..].copy_from_slice(&hmac.hmac);
        }
        Ok(len)
    }
}

/// Writes the fixed part and Segment List of an SRH whose TLVs take `tlvs_len` bytes (a
/// multiple of 8, left for the caller to write after the list); returns the whole
/// header length.
fn emit_fixed(
    out: &mut [u8],
    next_header: Protocol,
    segments_left: u8,
    flags: u8,
    tag: u16,
    segments: &[Ipv6Addr],
    tlvs_len: usize,
) -> Result<usize, WireError> {
    // Both callers pass 0 or 8 + a validated HMAC length.
    debug_assert_eq!(tlvs_len % 8, 0, "SRH TLVs must keep 8-octet alignment");
    if segments.is_empty() || segments.len() > MAX_SEGMENTS || usize::from(segments_left) > segments.len() {
        return Err(WireError::Malformed);
    }
    let body_len = SEGMENT_LEN * segments.len() + tlvs_len;
    let hdr_ext_len = u8::try_from(body_len / 8).map_err(|_| WireError::Malformed)?;
    // Checked above: 1 to 127 segments.
    let last_entry = (segments.len() - 1) as u8;
    let len = HEADER_LEN + body_len;
    if out.len() < len {
        return Err(WireError::BufferTooSmall);
    }
    let mut packet = Packet::new_unchecked(&mut out[..len]);
    packet.set_next_header(next_header);
    packet.set_hdr_ext_len(hdr_ext_len);
    packet.set_routing_type(ROUTING_TYPE);
    packet.set_segments_left(segments_left);
    packet.set_last_entry(last_entry);
    packet.set_flags(flags);
    packet.set_tag(tag);
    let list = &mut out[field::SEGMENTS..field::SEGMENTS + SEGMENT_LEN * segments.len()];
    for (slot, segment) in list.chunks_exact_mut(SEGMENT_LEN).zip(segments) {
        slot.copy_from_slice(&segment.octets());
    }
    Ok(len)
}

/// Writes an SRH without TLVs (flags 0) into `out` and returns its length,
/// `8 + 16 * segments.len()`; no allocation (for H.Encaps rewrite templates).
/// `segments_in_srh_order[0]` is the last segment of the path; `segments_left` is
/// normally `len - 1` (`len` for a reduced SRH whose first segment is only in the IPv6
/// destination). [`WireError::Malformed`] if there are no or more than
/// [`MAX_SEGMENTS`] segments or `segments_left > len`; [`WireError::BufferTooSmall`] if
/// `out` is too short.
pub fn emit_srh(
    out: &mut [u8],
    next_header: Protocol,
    segments_left: u8,
    tag: u16,
    segments_in_srh_order: &[Ipv6Addr],
) -> Result<usize, WireError> {
    emit_fixed(out, next_header, segments_left, 0, tag, segments_in_srh_order, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipv6ext::{self, IPV6_IN_IPV6};
    use crate::{icmpv6, ipv6};
    use proptest::prelude::*;

    fn addr(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    const SEG_A: &str = "2001:db8:a::1";
    const SEG_B: &str = "2001:db8:b::1";
    const SEG_C: &str = "2001:db8:c::1";

    /// What Linux sends for a packet forwarded through
    /// `ip -6 route add 2001:db8:2::/64 encap seg6 mode encap segs 2001:db8:a::1,2001:db8:b::1,2001:db8:c::1 dev eth0`
    /// with `tunsrc 2001:db8:ff::1`: an outer IPv6 header to the first segment A, an SRH
    /// listing the segments in reverse (C, B, A) with Segments Left = Last Entry = 2 and
    /// next header 41, then the original packet (an echo request from 2001:db8:1::10
    /// to 2001:db8:2::20, hop limit already decremented to 63). Flow label and traffic
    /// class are copied from the inner header (both 0).
    const ENCAP: [u8; 152] = [
        // Outer IPv6: version 6, TC 0, flow 0; payload 112, next header 43, hop limit 64.
        0x60, 0x00, 0x00, 0x00, 0x00, 0x70, 0x2b, 0x40, //
        // Source 2001:db8:ff::1 (tunsrc).
        0x20, 0x01, 0x0d, 0xb8, 0x00, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, //
        // Destination 2001:db8:a::1 (the first segment, A).
        0x20, 0x01, 0x0d, 0xb8, 0x00, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, //
        // SRH: next header 41, hdr ext len 6, routing type 4, segments left 2,
        0x29, 0x06, 0x04, 0x02, //
        // last entry 2, flags 0, tag 0.
        0x02, 0x00, 0x00, 0x00, //
        // Segment List[0] = C 2001:db8:c::1 (the last segment).
        0x20, 0x01, 0x0d, 0xb8, 0x00, 0x0c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, //
        // Segment List[1] = B 2001:db8:b::1.
        0x20, 0x01, 0x0d, 0xb8, 0x00, 0x0b, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, //
        // Segment List[2] = A 2001:db8:a::1 (the first segment).
        0x20, 0x01, 0x0d, 0xb8, 0x00, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, //
        // Inner IPv6: payload 16, next header 58, hop limit 63.
        0x60, 0x00, 0x00, 0x00, 0x00, 0x10, 0x3a, 0x3f, //
        // Source 2001:db8:1::10.
        0x20, 0x01, 0x0d, 0xb8, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, //
        // Destination 2001:db8:2::20.
        0x20, 0x01, 0x0d, 0xb8, 0x00, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20, //
        // ICMPv6 echo request, checksum 0x6078, id 0x1234, seq 1, data "SRv6test".
        0x80, 0x00, 0x60, 0x78, 0x12, 0x34, 0x00, 0x01, //
        0x53, 0x52, 0x76, 0x36, 0x74, 0x65, 0x73, 0x74,
    ];

    /// What Linux sends from 2001:db8:1::10 pinging 2001:db8:2::20 through
    /// `ip -6 route add 2001:db8:2::/64 encap seg6 mode inline segs 2001:db8:a::1,2001:db8:b::1 dev eth0`:
    /// the SRH is inserted after the original IPv6 header, whose destination moves to
    /// Segment List[0] and is replaced by the first segment A; the list is
    /// [D, B, A] (Last Entry 2, Segments Left 2) and the SRH's next header is the
    /// original one, 58. The ICMPv6 checksum is over the final destination D.
    const INLINE: [u8; 112] = [
        // IPv6: version 6, TC 0, flow 0; payload 72, next header 43, hop limit 64.
        0x60, 0x00, 0x00, 0x00, 0x00, 0x48, 0x2b, 0x40, //
        // Source 2001:db8:1::10.
        0x20, 0x01, 0x0d, 0xb8, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, //
        // Destination 2001:db8:a::1 (the first segment, A).
        0x20, 0x01, 0x0d, 0xb8, 0x00, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, //
        // SRH: next header 58, hdr ext len 6, routing type 4, segments left 2,
        0x3a, 0x06, 0x04, 0x02, //
        // last entry 2, flags 0, tag 0.
        0x02, 0x00, 0x00, 0x00, //
        // Segment List[0] = D 2001:db8:2::20 (the original destination).
        0x20, 0x01, 0x0d, 0xb8, 0x00, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20, //
        // Segment List[1] = B 2001:db8:b::1.
        0x20, 0x01, 0x0d, 0xb8, 0x00, 0x0b, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, //
        // Segment List[2] = A 2001:db8:a::1.
        0x20, 0x01, 0x0d, 0xb8, 0x00, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, //
        // ICMPv6 echo request, checksum 0x6078, id 0x1234, seq 1, data "SRv6test".
        0x80, 0x00, 0x60, 0x78, 0x12, 0x34, 0x00, 0x01, //
        0x53, 0x52, 0x76, 0x36, 0x74, 0x65, 0x73, 0x74,
    ];

    /// Finds the SRH in an IPv6 packet: (offset in the packet, length).
    fn find_srh(packet: &[u8]) -> (usize, usize) {
        let ip = ipv6::Packet::new_checked(packet).unwrap();
        let chain = ipv6ext::walk(ip.next_header(), ip.payload()).unwrap();
        let routing = chain.routing.unwrap();
        assert_eq!(routing.routing_type, ROUTING_TYPE);
        (ipv6::HEADER_LEN + routing.offset, routing.len)
    }

    #[test]
    fn parse_linux_encap() {
        let ip = ipv6::Packet::new_checked(&ENCAP[..]).unwrap();
        let chain = ipv6ext::walk(ip.next_header(), ip.payload()).unwrap();
        assert_eq!(chain.upper_layer, IPV6_IN_IPV6);
        assert_eq!(chain.upper_layer_offset, 56);
        assert_eq!(chain.upper_layer_next_header_offset, Some(0));
        let routing = chain.routing.unwrap();
        assert_eq!((routing.offset, routing.len), (0, 56));
        assert_eq!((routing.routing_type, routing.segments_left), (4, 2));
        assert_eq!(routing.prev_next_header_offset, None);

        let srh = Packet::new_checked(&ip.payload()[routing.offset..]).unwrap();
        assert_eq!(srh.check_srh(), Ok(()));
        assert!(srh.is_srh());
        assert_eq!(srh.next_header(), IPV6_IN_IPV6);
        assert_eq!(srh.hdr_ext_len(), 6);
        assert_eq!(srh.header_len(), 56);
        assert_eq!((srh.segments_left(), srh.last_entry()), (2, 2));
        assert_eq!((srh.flags(), srh.tag()), (0, 0));
        assert_eq!(srh.segments_len(), 3);
        assert_eq!(srh.segment(0), addr(SEG_C));
        assert_eq!(srh.segment(1), addr(SEG_B));
        assert_eq!(srh.segment(2), addr(SEG_A));
        assert_eq!(srh.segment_checked(3), None);
        assert_eq!(srh.active_segment(), Some(ip.dst_addr()));
        assert!(srh.tlvs().is_empty());
        assert_eq!(srh.tlv_iter().count(), 0);
        assert_eq!(srh.hmac(), Ok(None));
        assert_eq!(srh.payload(), &ENCAP[96..]);
        let inner = ipv6::Packet::new_checked(srh.payload()).unwrap();
        assert_eq!(inner.dst_addr(), addr("2001:db8:2::20"));

        let repr = Repr::parse(&srh).unwrap();
        let path = [addr(SEG_A), addr(SEG_B), addr(SEG_C)];
        assert_eq!(repr, Repr::from_path(&path, IPV6_IN_IPV6).unwrap());
        assert_eq!(repr.path(), path);
        assert_eq!(repr.last_entry(), 2);
        assert_eq!(repr.active_segment(), Some(addr(SEG_A)));
        assert_eq!(repr.buffer_len(), 56);
        let mut out = [0u8; 56];
        assert_eq!(repr.emit(&mut out), Ok(56));
        assert_eq!(&out[..], &ENCAP[40..96]);
        let mut fast = [0xffu8; 64];
        let segments: Vec<Ipv6Addr> = path.iter().rev().copied().collect();
        assert_eq!(emit_srh(&mut fast, IPV6_IN_IPV6, 2, 0, &segments), Ok(56));
        assert_eq!(&fast[..56], &ENCAP[40..96]);
    }

    #[test]
    fn parse_linux_inline() {
        let (offset, len) = find_srh(&INLINE);
        assert_eq!((offset, len), (40, 56));
        let ip = ipv6::Packet::new_checked(&INLINE[..]).unwrap();
        let chain = ipv6ext::walk(ip.next_header(), ip.payload()).unwrap();
        assert_eq!(chain.upper_layer, Protocol::ICMPV6);
        assert_eq!(chain.upper_layer_offset, 56);

        let srh = Packet::new_checked(&INLINE[offset..]).unwrap();
        assert_eq!(srh.check_srh(), Ok(()));
        assert_eq!(srh.next_header(), Protocol::ICMPV6);
        let final_dst = srh.segment(0);
        assert_eq!(final_dst, addr("2001:db8:2::20"));
        assert_eq!(srh.active_segment(), Some(addr(SEG_A)));
        assert_eq!(srh.segments().collect::<Vec<_>>(), [final_dst, addr(SEG_B), addr(SEG_A)]);
        let icmp = icmpv6::Packet::new_checked(srh.payload()).unwrap();
        assert_eq!(icmp.msg_type(), icmpv6::Message::ECHO_REQUEST);
        assert!(icmp.verify_checksum(ip.src_addr(), final_dst));
        assert!(!icmp.verify_checksum(ip.src_addr(), ip.dst_addr()));

        let repr = Repr::parse(&srh).unwrap();
        assert_eq!(repr, Repr::from_path(&[addr(SEG_A), addr(SEG_B), final_dst], Protocol::ICMPV6).unwrap());
    }

    #[test]
    fn endpoint_processing_walks_the_path() {
        let mut bytes = ENCAP;
        let (offset, len) = find_srh(&bytes);
        let mut seen = Vec::new();
        loop {
            let (head, rest) = bytes.split_at_mut(offset);
            let mut srh = Packet::new_checked(&mut rest[..len]).unwrap();
            assert_eq!(srh.check_srh(), Ok(()));
            let mut ip = ipv6::Packet::new_unchecked(head);
            assert_eq!(srh.active_segment(), Some(ip.dst_addr()));
            seen.push(ip.dst_addr());
            match srh.advance() {
                Some(next) => ip.set_dst_addr(next),
                None => break,
            }
        }
        assert_eq!(seen, [addr(SEG_A), addr(SEG_B), addr(SEG_C)]);
        assert_eq!(bytes[43], 0);
    }

    #[test]
    fn check_srh_errors() {
        let header = &ENCAP[40..96];
        let with = |index: usize, value: u8| {
            let mut bytes = header.to_vec();
            bytes[index] = value;
            bytes
        };
        let check = |bytes: &[u8]| Packet::new_unchecked(bytes).check_srh();

        // Segments Left = Last Entry + 1 is allowed (reduced SRH); one more is not.
        assert_eq!(check(&with(3, 3)), Ok(()));
        assert_eq!(Packet::new_unchecked(&with(3, 3)[..]).active_segment(), None);
        let error = check(&with(3, 4)).unwrap_err();
        assert_eq!(error, SrhError::SegmentsLeftOutOfRange);
        assert_eq!(error.pointer_offset(), 3);
        assert_eq!(WireError::from(error), WireError::Malformed);

        // Last Entry 3 needs 8 + 64 bytes.
        let error = check(&with(4, 3)).unwrap_err();
        assert_eq!(error, SrhError::LastEntryOutOfRange);
        assert_eq!(error.pointer_offset(), 3);
        let error = check(&with(4, 255)).unwrap_err();
        assert_eq!(error, SrhError::LastEntryOutOfRange);
        // Hdr Ext Len 0: no room for any segment.
        let mut empty = header[..8].to_vec();
        empty[1] = 0;
        assert_eq!(check(&empty), Err(SrhError::LastEntryOutOfRange));

        // A shorter Last Entry leaves A's 16 bytes as TLVs: 0x20 (length 1), 0xb8
        // (length 0), 0x0a (length 0), eight Pad1, then type 0x01 at offset 55 with no
        // room for its length: they must fill the header exactly.
        assert_eq!(check(&with(4, 1)), Err(SrhError::TlvOverrun { offset: 55 }));

        let error = check(&with(2, 0)).unwrap_err();
        assert_eq!(error, SrhError::NotSrh);
        assert_eq!(error.pointer_offset(), 2);
        assert_eq!(WireError::from(error), WireError::Unsupported);

        assert_eq!(check(&header[..55]), Err(SrhError::Truncated));
        assert_eq!(check(&header[..7]), Err(SrhError::Truncated));
        assert_eq!(SrhError::Truncated.pointer_offset(), 1);
        assert_eq!(Packet::new_checked(&header[..55]), Err(WireError::Truncated));
        assert_eq!(Repr::parse(&Packet::new_unchecked(&with(3, 4)[..])), Err(SrhError::SegmentsLeftOutOfRange));
    }

    /// One segment, then `tlvs`; Hdr Ext Len is set from the TLV length.
    fn srh_with_tlvs(tlvs: &[u8]) -> Vec<u8> {
        assert_eq!(tlvs.len() % 8, 0);
        let mut bytes = vec![59, 0, 4, 0, 0, 0, 0x12, 0x34];
        bytes[1] = ((16 + tlvs.len()) / 8) as u8;
        bytes.extend_from_slice(&addr(SEG_A).octets());
        bytes.extend_from_slice(tlvs);
        bytes
    }

    #[test]
    fn tlvs() {
        let mut tlvs = vec![
            // Pad1, PadN with 1 byte, unknown type 0x80 with 2 bytes.
            0, 4, 1, 0, 0x80, 2, 0xaa, 0xbb, //
            // HMAC: type 5, length 38, D set, key id 0x01020304, 32 bytes of HMAC.
            5, 38, 0x80, 0, 1, 2, 3, 4,
        ];
        tlvs.extend((0..32).map(|i| i as u8));
        let bytes = srh_with_tlvs(&tlvs);
        let srh = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(srh.check_srh(), Ok(()));
        assert_eq!(srh.tag(), 0x1234);
        assert_eq!(srh.tlvs(), &tlvs[..]);
        let hmac_bytes: Vec<u8> = (0..32).collect();
        let expected_hmac = HmacTlv { d_flag: true, key_id: 0x0102_0304, hmac: &hmac_bytes };
        let parsed: Vec<_> = srh.tlv_iter().collect();
        assert_eq!(
            parsed,
            vec![
                Ok(Tlv::Pad1),
                Ok(Tlv::PadN(&[0])),
                Ok(Tlv::Other { tlv_type: 0x80, value: &[0xaa, 0xbb] }),
                Ok(Tlv::Hmac(expected_hmac)),
            ]
        );
        assert_eq!(srh.hmac(), Ok(Some(expected_hmac)));
        let repr = Repr::parse(&srh).unwrap();
        assert_eq!(repr.hmac, Some(HmacRepr { d_flag: true, key_id: 0x0102_0304, hmac: hmac_bytes.clone() }));
        // Emitting drops the padding and the unknown TLV.
        let mut out = [0u8; 80];
        let len = repr.emit(&mut out).unwrap();
        assert_eq!(len, 8 + 16 + 40);
        assert_eq!(&out[24..len], &tlvs[8..]);
        assert_eq!(Repr::parse(&Packet::new_checked(&out[..len]).unwrap()), Ok(repr));
    }

    #[test]
    fn tlv_errors() {
        // PadN claiming 7 bytes where 5 remain, at SRH offset 24 + 1.
        let bytes = srh_with_tlvs(&[0, 4, 7, 0, 0, 0, 0, 0]);
        let srh = Packet::new_checked(&bytes[..]).unwrap();
        let error = srh.check_srh().unwrap_err();
        assert_eq!(error, SrhError::TlvOverrun { offset: 25 });
        assert_eq!(error.pointer_offset(), 25);
        assert_eq!(WireError::from(error), WireError::Truncated);
        assert_eq!(srh.hmac(), Err(error));
        let parsed: Vec<_> = srh.tlv_iter().collect();
        assert_eq!(parsed, vec![Ok(Tlv::Pad1), Err(error)]);

        // A lone type byte at the end.
        let bytes = srh_with_tlvs(&[0, 0, 0, 0, 0, 0, 0, 9]);
        assert_eq!(Packet::new_unchecked(&bytes[..]).check_srh(), Err(SrhError::TlvOverrun { offset: 31 }));

        // HMAC TLVs whose HMAC is not a multiple of 8, too short for the key ID, or
        // longer than 32 bytes.
        let bytes = srh_with_tlvs(&[5, 6, 0, 0, 0, 0, 0, 1, 4, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(Packet::new_unchecked(&bytes[..]).check_srh(), Ok(()));
        for tlv in [vec![5, 4, 0, 0, 0, 0, 4, 0], vec![5, 10, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 4, 2, 0, 0], {
            let mut long = vec![5, 46, 0, 0, 0, 0, 0, 1];
            long.resize(48, 0);
            long
        }] {
            let bytes = srh_with_tlvs(&tlv);
            let error = Packet::new_unchecked(&bytes[..]).check_srh().unwrap_err();
            assert_eq!(error, SrhError::TlvMalformed { offset: 24 });
            assert_eq!(WireError::from(error), WireError::Malformed);
        }
        assert_eq!(TlvIter::new(&[4], 100).collect::<Vec<_>>(), vec![Err(SrhError::TlvOverrun { offset: 100 })]);
        assert_eq!(TlvIter::new(&[4, 0], 1 << 20).next(), Some(Ok(Tlv::PadN(&[]))));
    }

    #[test]
    fn setters() {
        let mut bytes = ENCAP[40..].to_vec();
        let mut srh = Packet::new_checked(&mut bytes[..]).unwrap();
        srh.set_next_header(Protocol::ICMPV6);
        srh.set_segments_left(1);
        srh.set_flags(0x08);
        srh.set_tag(0xbeef);
        srh.set_segment(1, addr("2001:db8::b"));
        srh.payload_mut()[0] = 0x61;
        assert_eq!(srh.tlvs_mut().len(), 0);
        assert_eq!(srh.header().len(), 56);
        assert_eq!(&bytes[..8], &[58, 6, 4, 1, 2, 0x08, 0xbe, 0xef]);
        assert_eq!(&bytes[24..40], &addr("2001:db8::b").octets());
        assert_eq!(bytes[56], 0x61);

        let mut srh = Packet::new_checked(&mut bytes[..]).unwrap();
        srh.set_last_entry(1);
        srh.set_hdr_ext_len(4);
        srh.set_routing_type(0);
        assert!(!srh.is_srh());
        assert_eq!(srh.segments_len(), 2);
        assert_eq!(srh.header_len(), 40);
        assert_eq!(srh.segment_checked(2), None);
        assert_eq!(srh.segments().count(), 2);
        assert_eq!(srh.advance(), Some(addr(SEG_C)));
        assert_eq!(srh.advance(), None);
        assert_eq!(srh.segments_left(), 0);
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn segment_out_of_range_panics() {
        let srh = Packet::new_checked(&ENCAP[40..]).unwrap();
        let _ = srh.segment(3);
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn set_segment_past_header_panics() {
        let mut bytes = ENCAP[40..96].to_vec();
        bytes[4] = 9; // Last Entry 9 in a 3-segment header.
        let mut srh = Packet::new_checked(&mut bytes[..]).unwrap();
        srh.set_segment(3, Ipv6Addr::UNSPECIFIED);
    }

    #[test]
    fn emit_errors() {
        let seg = addr(SEG_A);
        let mut out = [0u8; 4096];
        assert_eq!(emit_srh(&mut out, IPV6_IN_IPV6, 0, 0, &[]), Err(WireError::Malformed));
        assert_eq!(emit_srh(&mut out, IPV6_IN_IPV6, 2, 0, &[seg]), Err(WireError::Malformed));
        assert_eq!(emit_srh(&mut out, IPV6_IN_IPV6, 1, 0, &[seg]), Ok(24));
        assert_eq!(emit_srh(&mut out[..23], IPV6_IN_IPV6, 0, 0, &[seg]), Err(WireError::BufferTooSmall));
        let many = vec![seg; MAX_SEGMENTS];
        assert_eq!(emit_srh(&mut out, IPV6_IN_IPV6, 0, 0, &many), Ok(8 + 16 * MAX_SEGMENTS));
        let too_many = vec![seg; MAX_SEGMENTS + 1];
        assert_eq!(emit_srh(&mut out, IPV6_IN_IPV6, 0, 0, &too_many), Err(WireError::Malformed));
        assert_eq!(Repr::from_path(&too_many, IPV6_IN_IPV6), Err(WireError::Malformed));
        assert_eq!(Repr::from_path(&[], IPV6_IN_IPV6), Err(WireError::Malformed));

        // 127 segments leave no room for an HMAC TLV.
        let mut repr = Repr::from_path(&many, IPV6_IN_IPV6).unwrap();
        repr.hmac = Some(HmacRepr { d_flag: false, key_id: 1, hmac: vec![0; 32] });
        assert_eq!(repr.emit(&mut out), Err(WireError::Malformed));
        repr.segments.truncate(3);
        repr.segments_left = 2;
        assert_eq!(repr.emit(&mut out), Ok(8 + 48 + 40));
        assert_eq!(repr.emit(&mut out[..95]), Err(WireError::BufferTooSmall));
        repr.hmac.as_mut().unwrap().hmac.push(0);
        assert_eq!(repr.emit(&mut out), Err(WireError::Malformed));
        repr.hmac.as_mut().unwrap().hmac.resize(40, 0);
        assert_eq!(repr.emit(&mut out), Err(WireError::Malformed));
    }

    fn repr_strategy() -> impl Strategy<Value = Repr> {
        (
            proptest::collection::vec(any::<[u8; 16]>(), 1..=16),
            any::<u8>(),
            any::<u8>(),
            any::<u8>(),
            any::<u16>(),
            proptest::option::of((any::<bool>(), any::<u32>(), 0usize..=4, any::<[u8; 32]>())),
        )
            .prop_map(|(segments, sl, next_header, flags, tag, hmac)| {
                let segments: Vec<Ipv6Addr> = segments.into_iter().map(Ipv6Addr::from).collect();
                let segments_left = (usize::from(sl) % (segments.len() + 1)) as u8;
                Repr {
                    next_header: Protocol(next_header),
                    segments_left,
                    flags,
                    tag,
                    segments,
                    hmac: hmac.map(|(d_flag, key_id, units, text)| HmacRepr {
                        d_flag,
                        key_id,
                        hmac: text[..8 * units].to_vec(),
                    }),
                }
            })
    }

    /// Exercises every accessor of a checked view, and the setters on a copy.
    fn poke(bytes: &[u8]) {
        let Ok(srh) = Packet::new_checked(bytes) else {
            return;
        };
        let _ = (
            srh.next_header(),
            srh.hdr_ext_len(),
            srh.routing_type(),
            srh.is_srh(),
            srh.segments_left(),
            srh.last_entry(),
            srh.flags(),
            srh.tag(),
            srh.active_segment(),
            srh.header().len(),
            srh.payload().len(),
            srh.tlvs().len(),
            srh.hmac(),
        );
        for index in 0..=256 {
            let _ = srh.segment_checked(index);
        }
        let _ = srh.segments().count();
        let mut tlvs = srh.tlv_iter();
        while let Some(tlv) = tlvs.next() {
            if let Err(error) = tlv {
                assert!(error.pointer_offset() < srh.header_len() as u32);
            }
            assert!(tlvs.offset() <= srh.header_len());
        }
        let checked = srh.check_srh();
        if let Err(error) = checked {
            let _ = (error.pointer_offset(), WireError::from(error), error.to_string());
        }
        let parsed = Repr::parse(&srh);
        assert_eq!(parsed.is_ok(), checked.is_ok());
        if let Ok(repr) = parsed {
            for index in 0..srh.segments_len() {
                assert_eq!(srh.segment(index), repr.segments[index]);
            }
            let mut out = vec![0u8; repr.buffer_len()];
            let len = repr.emit(&mut out).unwrap();
            assert_eq!(Repr::parse(&Packet::new_checked(&out[..len]).unwrap()), Ok(repr));
        }
        let mut copy = bytes.to_vec();
        let mut srh = Packet::new_checked(&mut copy[..]).unwrap();
        while srh.advance().is_some() {}
        for index in 0..srh.segments_len() {
            if srh.segment_checked(index).is_some() {
                srh.set_segment(index, Ipv6Addr::LOCALHOST);
            }
        }
        let _ = (srh.tlvs_mut().len(), srh.payload_mut().len());
    }

    proptest! {
        #[test]
        fn repr_round_trip(repr in repr_strategy()) {
            let mut out = vec![0u8; repr.buffer_len() + 8];
            let len = repr.emit(&mut out).unwrap();
            prop_assert_eq!(len, repr.buffer_len());
            let srh = Packet::new_checked(&out[..len]).unwrap();
            prop_assert_eq!(srh.check_srh(), Ok(()));
            prop_assert_eq!(srh.header_len(), len);
            prop_assert_eq!(usize::from(srh.last_entry()) + 1, repr.segments.len());
            prop_assert_eq!(srh.active_segment(), repr.active_segment());
            prop_assert_eq!(Repr::parse(&srh), Ok(repr.clone()));

            if repr.hmac.is_none() {
                let mut fast = vec![0u8; len];
                let fast_len = emit_srh(&mut fast, repr.next_header, repr.segments_left,
                    repr.tag, &repr.segments).unwrap();
                prop_assert_eq!(fast_len, len);
                out[5] = 0; // emit_srh writes flags 0
                prop_assert_eq!(&fast[..], &out[..len]);
            }

            let path = repr.path();
            let from_path = Repr::from_path(&path, repr.next_header).unwrap();
            prop_assert_eq!(&from_path.segments, &repr.segments);
            prop_assert_eq!(usize::from(from_path.segments_left), path.len() - 1);
            prop_assert_eq!(from_path.active_segment(), Some(path[0]));
        }

        #[test]
        fn packet_never_panics(
            mut bytes in proptest::collection::vec(any::<u8>(), 0..400),
            shape in any::<bool>(),
            sl in any::<u8>(),
            tlv_mode in 0u8..4,
            hmac_units in 0usize..5,
            corrupt in any::<Option<(usize, u8)>>(),
        ) {
            if shape && bytes.len() >= 8 {
                // A plausible SRH: routing type 4, Hdr Ext Len within the buffer, Last
                // Entry near what fits, and TLVs (left random, Pad1s, one PadN, or an
                // HMAC TLV then Pad1s) that may then get one byte corrupted.
                let units = (bytes.len() / 8 - 1).min(255) as u8;
                bytes[1] = if units == 0 { 0 } else { bytes[1] % (units + 1) };
                bytes[2] = ROUTING_TYPE;
                let fits = bytes[1] / 2;
                bytes[4] = fits.saturating_sub(bytes[4] % 3 + 1);
                bytes[3] = sl % (bytes[4].saturating_add(3));
                let header_len = 8 + 8 * usize::from(bytes[1]);
                let tlv_start = (24 + 16 * usize::from(bytes[4])).min(header_len);
                let area = &mut bytes[tlv_start..header_len];
                match tlv_mode {
                    1 => area.fill(0),
                    2 if area.len() >= 2 => {
                        area.fill(0);
                        area[0] = TLV_PADN;
                        area[1] = (area.len() - 2).min(255) as u8;
                    }
                    3 if area.len() >= 8 => {
                        let hmac_len = (8 * hmac_units).min(area.len() - 8);
                        area.fill(0);
                        area[0] = TLV_HMAC;
                        area[1] = (6 + hmac_len) as u8;
                    }
                    _ => {}
                }
                if let Some((index, value)) = corrupt {
                    let len = bytes.len();
                    bytes[index % len] = value;
                }
            }
            poke(&bytes);
        }

        #[test]
        fn walk_then_srh_never_panics(
            next_header in prop_oneof![Just(0u8), Just(43), Just(44), Just(60), any::<u8>()],
            prefix in proptest::collection::vec((prop_oneof![Just(0u8), Just(43), Just(60),
                any::<u8>()], 0u8..3), 0..4),
            srh_units in 0u8..12,
            sl in 0u8..8,
            tail in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            // Some leading extension headers, then a routing header of type 4, then
            // random bytes; or just random bytes when the chain does not lead there.
            let mut payload = Vec::new();
            let types: Vec<u8> = prefix.iter().map(|p| p.0).collect();
            for (i, (_, units)) in prefix.iter().enumerate() {
                let next = types.get(i + 1).copied().unwrap_or(43);
                payload.push(next);
                payload.push(*units);
                payload.resize(payload.len() + 6 + 8 * usize::from(*units), 1);
            }
            let first = types.first().copied().unwrap_or(next_header);
            payload.extend_from_slice(&[41, srh_units, ROUTING_TYPE, sl,
                srh_units / 2 - u8::from(srh_units >= 2), 0, 0, 0]);
            payload.extend_from_slice(&tail);

            for start in [0, payload.len() / 2] {
                let Ok(chain) = ipv6ext::walk(Protocol(first), &payload[start..]) else {
                    continue;
                };
                let payload = &payload[start..];
                prop_assert!(chain.upper_layer_offset <= payload.len());
                let Some(routing) = chain.routing else { continue };
                if routing.routing_type != ROUTING_TYPE {
                    continue;
                }
                let header = &payload[routing.offset..routing.offset + routing.len];
                let srh = Packet::new_checked(header).unwrap();
                prop_assert_eq!(srh.header_len(), routing.len);
                prop_assert_eq!(srh.segments_left(), routing.segments_left);
                let _ = srh.check_srh();
                let _ = srh.tlv_iter().count();
                poke(&payload[routing.offset..]);
            }
        }
    }
}

//! IPv6 Hop-by-Hop and Destination Options (RFC 8200 §4.2, §4.3, §4.6), the
//! Jumbo Payload option (RFC 2675) and the limits a node puts on an
//! extension header chain (RFC 8883: each exceeded limit has its own ICMPv6
//! Parameter Problem code).
//!
//! ```text
//!  an options header: Next Header, Hdr Ext Len, then TLV-encoded options
//!  +--------+--------+- - - - - - - - -
//!  |  type  | length | data (length octets)      Pad1 (type 0) is one octet alone
//!  +--------+--------+- - - - - - - - -
//!  type: action (2 bits) | change (1 bit) | number (5 bits)
//!    action 00 skip, 01 discard, 10 discard + Parameter Problem code 2,
//!           11 the same unless the destination is multicast
//!
//!  Jumbo Payload (type 0xC2, RFC 2675), only in Hop-by-Hop, at 4n + 2:
//!  +--------+--------+--------+--------+--------+--------+
//!  |  0xC2  |   4    |      Jumbo Payload Length (32)    |   ≥ 65536
//!  +--------+--------+--------+--------+--------+--------+
//! ```
//!
//! [`check_options`] walks the options of one header and returns what it
//! found (the first option it does not know, a Jumbo Payload option), or
//! the first error with the RFC 8883 code it deserves and the offset of the
//! octet to point at. Offsets are within the header. No allocation, no
//! panic.

/// Pad1: a single octet of padding.
pub const PAD1: u8 = 0;
/// PadN: `length` octets of padding.
pub const PADN: u8 = 1;
/// Tunnel Encapsulation Limit (RFC 2473), a Destination Option.
pub const TUNNEL_ENCAP_LIMIT: u8 = 4;
/// Router Alert (RFC 2711), a Hop-by-Hop option.
pub const ROUTER_ALERT: u8 = 5;
/// Jumbo Payload (RFC 2675), a Hop-by-Hop option.
pub const JUMBO: u8 = 0xc2;

/// Limits on an extension header chain (RFC 8883 §2: a node may discard
/// what exceeds them and say which with a Parameter Problem code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtLimits {
    /// Extension headers in one packet (code 8, too many extension headers).
    pub headers_max: usize,
    /// Octets of extension headers in one packet (code 7, chain too long).
    pub chain_bytes_max: usize,
    /// Octets of one extension header (code 6, extension header too big).
    pub header_bytes_max: usize,
    /// Options other than padding in one options header (code 9, too many options).
    pub options_max: usize,
    /// Data octets of one option (code 10, option too big).
    pub option_bytes_max: usize,
}

impl Default for ExtLimits {
    /// Eight headers (Linux's `max_dst_opts_number` and the old fixed walk
    /// limit), 1024 octets of chain and of one header (an SRH of 63
    /// segments is 1016), eight options per header, 64 data octets per
    /// option (Pad and every option defined so far need far less).
    fn default() -> ExtLimits {
        ExtLimits {
            headers_max: 8,
            chain_bytes_max: 1024,
            header_bytes_max: 1024,
            options_max: 8,
            option_bytes_max: 64,
        }
    }
}

/// Why an extension header chain is refused, with the ICMPv6 Parameter
/// Problem code (RFC 4443 §3.4, RFC 7112, RFC 8883) it deserves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChainErrorKind {
    /// An extension header runs past the packet: no pointer, no ICMP.
    Truncated,
    /// A malformed field (an option running past its header, a Hop-by-Hop
    /// header that is not first: code 1 for the latter). Code 0.
    Malformed,
    /// A Hop-by-Hop header anywhere but first (RFC 8200 §4.1). Code 1.
    HopByHopNotFirst,
    /// A first fragment that does not hold the whole chain up to the
    /// upper-layer header (RFC 7112 §5). Code 3.
    IncompleteChain,
    /// Code 6.
    HeaderTooBig,
    /// Code 7.
    ChainTooLong,
    /// Code 8.
    TooManyHeaders,
    /// Code 9.
    TooManyOptions,
    /// Code 10.
    OptionTooBig,
}

impl ChainErrorKind {
    /// The ICMPv6 Parameter Problem code; `None` when no error is sent.
    pub fn code(self) -> Option<u8> {
        Some(match self {
            ChainErrorKind::Truncated => return None,
            ChainErrorKind::Malformed => 0,
            ChainErrorKind::HopByHopNotFirst => 1,
            ChainErrorKind::IncompleteChain => 3,
            ChainErrorKind::HeaderTooBig => 6,
            ChainErrorKind::ChainTooLong => 7,
            ChainErrorKind::TooManyHeaders => 8,
            ChainErrorKind::TooManyOptions => 9,
            ChainErrorKind::OptionTooBig => 10,
        })
    }
}

/// A refused chain: what, and the octet to point at (offset in the IPv6
/// payload for [`crate::ipv6ext::walk_checked`], in the header for
/// [`check_options`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainError {
    pub kind: ChainErrorKind,
    pub offset: usize,
}

/// What [`check_options`] found in a well-formed options header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OptionsFound {
    /// The first option that is neither padding nor known here and whose
    /// action bits are not "skip" (RFC 8200 §4.2): (offset of its type
    /// octet, type). Unknown options to skip are skipped.
    pub unknown: Option<(usize, u8)>,
    /// A Jumbo Payload option: (offset of its type octet, its value, or
    /// `None` when its length is not 4).
    pub jumbo: Option<(usize, Option<u32>)>,
    /// A Router Alert option.
    pub router_alert: bool,
}

/// The action an unknown option's type asks for (RFC 8200 §4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownAction {
    Skip,
    Discard,
    /// Discard and send Parameter Problem code 2 (pointer at the type).
    DiscardIcmp,
    /// As `DiscardIcmp`, unless the destination is multicast.
    DiscardIcmpUnicast,
}

/// The action bits of an option type.
pub fn unknown_action(option_type: u8) -> UnknownAction {
    match option_type >> 6 {
        0 => UnknownAction::Skip,
        1 => UnknownAction::Discard,
        2 => UnknownAction::DiscardIcmp,
        _ => UnknownAction::DiscardIcmpUnicast,
    }
}

/// Checks the options of a Hop-by-Hop (`hop_by_hop`) or Destination
/// Options header (`header` is the whole header, Next Header and Hdr Ext
/// Len included).
pub fn check_options(header: &[u8], hop_by_hop: bool, limits: &ExtLimits) -> Result<OptionsFound, ChainError> {
    let mut found = OptionsFound::default();
    let mut options = 0usize;
    let mut at = 2;
    while at < header.len() {
        let kind = header[at];
        if kind == PAD1 {
            at += 1;
            continue;
        }
        let err = |kind, offset| Err(ChainError { kind, offset });
        let Some(&len) = header.get(at + 1) else {
            return err(ChainErrorKind::Malformed, at);
        };
        let len = usize::from(len);
        if at + 2 + len > header.len() {
            return err(ChainErrorKind::Malformed, at + 1);
        }
        if kind != PADN {
            options += 1;
            if options > limits.options_max {
                return err(ChainErrorKind::TooManyOptions, at);
            }
            if len > limits.option_bytes_max {
                return err(ChainErrorKind::OptionTooBig, at + 1);
            }
        }
        match kind {
            PADN => {}
            ROUTER_ALERT if hop_by_hop => found.router_alert = true,
            JUMBO if hop_by_hop => {
                let value = (len == 4)
                    .then(|| u32::from_be_bytes([header[at + 2], header[at + 3], header[at + 4], header[at + 5]]));
                found.jumbo = Some((at, value));
            }
            TUNNEL_ENCAP_LIMIT if !hop_by_hop => {}
            _ => {
                if found.unknown.is_none() && unknown_action(kind) != UnknownAction::Skip {
                    found.unknown = Some((at, kind));
                }
            }
        }
        at += 2 + len;
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hdr(options: &[u8]) -> Vec<u8> {
        let mut h = vec![59, 0];
        h.extend_from_slice(options);
        h
    }

    #[test]
    fn padding_known_and_unknown_options() {
        let l = ExtLimits::default();
        assert_eq!(check_options(&hdr(&[PADN, 4, 0, 0, 0, 0]), true, &l), Ok(OptionsFound::default()));
        assert_eq!(check_options(&hdr(&[PAD1; 6]), false, &l), Ok(OptionsFound::default()));
        let f = check_options(&hdr(&[ROUTER_ALERT, 2, 0, 0, PAD1, PAD1]), true, &l).unwrap();
        assert!(f.router_alert && f.unknown.is_none());
        // Router Alert in a Destination Options header is not known there, and its
        // action bits (00) say skip: neither recorded nor refused.
        let f = check_options(&hdr(&[ROUTER_ALERT, 2, 0, 0, PAD1, PAD1]), false, &l).unwrap();
        assert!(f.unknown.is_none() && !f.router_alert);
        let f = check_options(&hdr(&[PAD1, 0x3e, 1, 0, 0x7f, 0, PADN, 0]), false, &l).unwrap();
        assert_eq!(f.unknown, Some((6, 0x7f)), "the first unknown one not to skip");
        let f = check_options(&hdr(&[JUMBO, 4, 0, 1, 0, 0]), true, &l).unwrap();
        assert_eq!(f.jumbo, Some((2, Some(65536))));
        let f = check_options(&hdr(&[JUMBO, 2, 0, 1, PAD1, PAD1]), true, &l).unwrap();
        assert_eq!(f.jumbo, Some((2, None)));
        assert_eq!(unknown_action(0x3e), UnknownAction::Skip);
        assert_eq!(unknown_action(0x7f), UnknownAction::Discard);
        assert_eq!(unknown_action(0x80), UnknownAction::DiscardIcmp);
        assert_eq!(unknown_action(0xc2), UnknownAction::DiscardIcmpUnicast);
    }

    #[test]
    fn errors_and_limits() {
        let l = ExtLimits { options_max: 2, option_bytes_max: 4, ..ExtLimits::default() };
        let e = |o: &[u8]| check_options(&hdr(o), true, &l).unwrap_err();
        assert_eq!(e(&[PADN, 5, 0, 0, 0, 0]), ChainError { kind: ChainErrorKind::Malformed, offset: 3 });
        assert_eq!(e(&[PAD1, PAD1, PAD1, PAD1, PAD1, 0x3e]), ChainError { kind: ChainErrorKind::Malformed, offset: 7 });
        assert_eq!(
            e(&[0x3e, 0, 0x3e, 0, 0x3e, 0]),
            ChainError { kind: ChainErrorKind::TooManyOptions, offset: 6 },
            "the third option"
        );
        let mut big = vec![0x3e, 6];
        big.extend_from_slice(&[0; 6]);
        assert_eq!(
            check_options(&[&[59, 1][..], &big[..]].concat(), true, &l).unwrap_err().kind,
            ChainErrorKind::OptionTooBig
        );
        // Padding counts toward neither limit.
        assert!(check_options(&hdr(&[PADN, 4, 0, 0, 0, 0]), true, &ExtLimits { option_bytes_max: 1, ..l }).is_ok());
        assert_eq!(ChainErrorKind::TooManyHeaders.code(), Some(8));
        assert_eq!(ChainErrorKind::Truncated.code(), None);
    }

    proptest! {
        #[test]
        fn never_panics_and_errors_point_inside(body in proptest::collection::vec(any::<u8>(), 0..46)) {
            let h = hdr(&body);
            if let Err(e) = check_options(&h, true, &ExtLimits::default()) {
                prop_assert!(e.offset < h.len());
            }
        }
    }
}

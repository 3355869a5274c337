//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! The checksum is the one's-complement of the one's-complement sum of the data taken
//! as big-endian 16-bit words (an odd trailing byte is padded with a zero byte).
//!
//! Conventions in this module:
//!
//! * a *sum* ([`sum`], [`pseudo_header_v4`], [`pseudo_header_v6`], [`add`]) is the folded
//!   16-bit one's-complement sum, **not** complemented; sums of pieces combine with [`add`]
//!   as long as each piece except the last has even length;
//! * a *checksum* is `!sum`, the value written into a header ([`checksum`], [`finish`]);
//! * data whose checksum field is correct sums (checksum field included) to `0xffff`,
//!   which is what the `verify_checksum` methods of the header views test.
//!
//! ```text
//!  checksum = !fold(Σ 16-bit words)          (RFC 1071)
//!  HC'      = !(!HC + !m + m')               (RFC 1624, eqn. 3)
//! ```
//!
//! **Partial checksums.** A sender that leaves the transport checksum to its NIC (Linux's
//! `CHECKSUM_PARTIAL`: every kernel host on a veth with transmit checksum offload on, the
//! default) writes only the pseudo-header sum, folded and not complemented, into the
//! checksum field; the NIC is meant to add the rest. On a virtual link there is no NIC, so
//! the frame arrives like that. [`complete_partial`] recognises such a field (it equals
//! the folded pseudo-header sum) and completes it: since the field already holds the
//! pseudo-header's share, the checksum is `!sum(segment)` with the field left as it is.
//!
//! Nothing here panics.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Folds a wide accumulator of 16-bit words into 16 bits with end-around carry.
#[inline]
pub fn fold(mut accumulator: u64) -> u16 {
    while accumulator > 0xffff {
        accumulator = (accumulator & 0xffff) + (accumulator >> 16);
    }
    accumulator as u16
}

/// [`fold`] for an accumulator below 2^34 (a pseudo-header: a few 32-bit words), in three
/// fixed steps and no loop: after the first the value is below 2^18 + 2^16, after the
/// second at most 0xffff + 4, after the third at most 0xffff. Each step keeps the value
/// modulo 0xffff and keeps it non-zero unless it was zero, so the result is [`fold`]'s.
#[inline(always)]
pub fn fold_small(accumulator: u64) -> u16 {
    debug_assert!(accumulator < 1 << 34);
    let a = (accumulator & 0xffff) + (accumulator >> 16);
    let a = (a & 0xffff) + (a >> 16);
    let a = (a & 0xffff) + (a >> 16);
    a as u16
}

/// One's-complement sum of `data` as big-endian 16-bit words, folded to 16 bits and not
/// complemented; an odd last byte counts as its word's high byte.
///
/// Reads 8 bytes at a time into a `u64` accumulator: since 2^16 ≡ 1 (mod 2^16 - 1),
/// adding 32-bit big-endian words and folding gives the same result as adding 16-bit
/// words.
#[inline]
pub fn sum(data: &[u8]) -> u16 {
    let mut accumulator: u64 = 0;
    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        let high = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        let low = u32::from_be_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
        accumulator += u64::from(high) + u64::from(low);
    }
    let mut words = chunks.remainder().chunks_exact(2);
    for word in &mut words {
        accumulator += u64::from(u16::from_be_bytes([word[0], word[1]]));
    }
    if let [last] = words.remainder() {
        accumulator += u64::from(*last) << 8;
    }
    fold(accumulator)
}

/// One's-complement addition of two 16-bit sums.
#[inline]
pub fn add(a: u16, b: u16) -> u16 {
    fold(u64::from(a) + u64::from(b))
}

/// Turns a sum into the checksum to write into a header: `!sum`.
#[inline]
pub fn finish(sum: u16) -> u16 {
    !sum
}

/// The Internet checksum of `data`: `!sum(data)`.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    finish(sum(data))
}

/// Sum of the IPv4 pseudo-header (RFC 768, RFC 793): source, destination, zero,
/// protocol, and upper-layer length in bytes.
#[inline]
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, length: u16) -> u16 {
    let accumulator = u64::from(u32::from(src)) + u64::from(u32::from(dst)) + u64::from(protocol) + u64::from(length);
    fold(accumulator)
}

/// Sum of the IPv6 pseudo-header (RFC 8200 §8.1): source, destination, upper-layer
/// packet length in bytes (32 bits), three zero bytes and the next-header value.
#[inline]
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, length: u32) -> u16 {
    let mut accumulator = u64::from(length) + u64::from(next_header);
    for address in [src, dst] {
        let bits = u128::from(address);
        accumulator +=
            (bits >> 96) as u32 as u64 + (bits >> 64) as u32 as u64 + (bits >> 32) as u32 as u64 + bits as u32 as u64;
    }
    fold(accumulator)
}

/// True if `segment` (a whole TCP segment, UDP datagram or other
/// upper-layer message covered by the pseudo-header) sums to all ones with
/// the IPv4 pseudo-header of `src` → `dst` (RFC 1122 §4.1.3.4, §4.2.2.7).
/// The caller handles UDP's "no checksum" (a zero field).
#[inline]
pub fn verify_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, segment: &[u8]) -> bool {
    u16::try_from(segment.len()).is_ok_and(|len| add(pseudo_header_v4(src, dst, protocol, len), sum(segment)) == 0xffff)
}

/// As [`verify_v4`] over the IPv6 pseudo-header (RFC 8200 §8.1).
#[inline]
pub fn verify_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, segment: &[u8]) -> bool {
    u32::try_from(segment.len())
        .is_ok_and(|len| add(pseudo_header_v6(src, dst, next_header, len), sum(segment)) == 0xffff)
}

/// RFC 1624 incremental update: the new checksum after the 16-bit word at an even
/// offset of the checksummed data changes from `old_word` to `new_word`.
///
/// For a single byte, pass the aligned word that contains it (e.g. IPv4 TTL and
/// protocol as `u16::from_be_bytes([ttl, protocol])`).
#[inline]
pub fn update16(old_checksum: u16, old_word: u16, new_word: u16) -> u16 {
    let accumulator = u64::from(!old_checksum) + u64::from(!old_word) + u64::from(new_word);
    !fold(accumulator)
}

/// RFC 1624 incremental update for a 4-byte field at an even offset (an IPv4
/// address, a port pair), given as big-endian `u32` (`u32::from(Ipv4Addr)`).
#[inline]
pub fn update32(old_checksum: u16, old_value: u32, new_value: u32) -> u16 {
    let accumulator = u64::from(!old_checksum)
        + u64::from(!(old_value >> 16) & 0xffff)
        + u64::from(!old_value & 0xffff)
        + u64::from(new_value >> 16)
        + u64::from(new_value & 0xffff);
    !fold(accumulator)
}

/// Completes a partial transport checksum (module doc): if the 16-bit checksum field at
/// `field_offset` of `segment` (a whole TCP segment or UDP datagram, header and payload)
/// equals `pseudo`, the folded pseudo-header sum for it, writes the full checksum there
/// ([`fill_from_partial`]). Returns true when that changed the field; `udp` selects
/// RFC 768's rule that a computed 0 is sent as 0xffff. Changes nothing when `segment` does
/// not reach past the field.
///
/// A segment whose checksum was already complete and happens to equal `pseudo` (one in
/// 65 536) keeps it (false). A corrupted segment whose checksum happens to equal `pseudo`
/// is given a valid one (the corruption goes undetected, as with a NIC's offload).
#[inline]
pub fn complete_partial(segment: &mut [u8], field_offset: usize, pseudo: u16, udp: bool) -> bool {
    match segment.get(field_offset..field_offset + 2) {
        Some(field) if u16::from_be_bytes([field[0], field[1]]) == pseudo => {
            fill_from_partial(segment, field_offset, udp)
        }
        _ => false,
    }
}

/// Writes the full checksum of `segment` whose field at `field_offset` holds its
/// pseudo-header sum (a partial checksum, recognised by the caller): `!sum(segment)`,
/// with RFC 768's 0 → 0xffff when `udp`. Returns whether the field changed (false for a
/// complete checksum that happened to equal the pseudo-header sum). Reads the whole
/// segment. Panics if the field is not within `segment`.
#[cold]
#[inline(never)]
pub fn fill_from_partial(segment: &mut [u8], field_offset: usize, udp: bool) -> bool {
    let mut value = finish(sum(segment));
    if udp && value == 0 {
        value = 0xffff;
    }
    let field = &mut segment[field_offset..field_offset + 2];
    let changed = field != value.to_be_bytes();
    field.copy_from_slice(&value.to_be_bytes());
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Straightforward word-by-word reference for [`sum`].
    fn reference_sum(data: &[u8]) -> u16 {
        let mut accumulator: u32 = 0;
        for pair in data.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            accumulator += u32::from(word);
            accumulator = (accumulator & 0xffff) + (accumulator >> 16);
        }
        accumulator as u16
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(sum(&data), 0xddf2);
        assert_eq!(checksum(&data), 0x220d);
    }

    #[test]
    fn ipv4_header_vector() {
        // A captured IPv4/UDP header; checksum field (0xb861) zeroed at bytes 10..12.
        let mut header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8,
            0x00, 0xc7,
        ];
        assert_eq!(checksum(&header), 0xb861);
        header[10] = 0xb8;
        header[11] = 0x61;
        assert_eq!(sum(&header), 0xffff);
    }

    #[test]
    fn odd_length_and_empty() {
        assert_eq!(sum(&[]), 0);
        assert_eq!(checksum(&[]), 0xffff);
        assert_eq!(sum(&[0xab]), 0xab00);
        assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }

    #[test]
    fn fold_carries() {
        assert_eq!(fold(0x0001_ffff), 0x0001);
        assert_eq!(fold(0xffff_ffff_ffff), 0xffff);
        assert_eq!(fold(0x1_0000), 1);
        assert_eq!(fold(0), 0);
    }

    #[test]
    fn pseudo_header_v4_matches_bytes() {
        let src = Ipv4Addr::new(192, 168, 0, 1);
        let dst = Ipv4Addr::new(10, 1, 255, 254);
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&src.octets());
        bytes.extend_from_slice(&dst.octets());
        bytes.extend_from_slice(&[0, 17, 0x01, 0x2c]);
        assert_eq!(pseudo_header_v4(src, dst, 17, 300), sum(&bytes));
    }

    #[test]
    fn pseudo_header_v6_matches_bytes() {
        let src: Ipv6Addr = "fe80::1:2:3:4".parse().unwrap();
        let dst: Ipv6Addr = "ff02::1:ff00:abcd".parse().unwrap();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&src.octets());
        bytes.extend_from_slice(&dst.octets());
        bytes.extend_from_slice(&70_000u32.to_be_bytes());
        bytes.extend_from_slice(&[0, 0, 0, 58]);
        assert_eq!(pseudo_header_v6(src, dst, 58, 70_000), sum(&bytes));
    }

    #[test]
    fn ttl_decrement_vector() {
        // Decrementing TTL 0x40 -> 0x3f in the header above: 0xb861 -> 0xb961.
        let new = update16(0xb861, 0x4011, 0x3f11);
        assert_eq!(new, 0xb961);
    }

    /// A UDP datagram over IPv4 with its checksum field set as a sender with checksum
    /// offload leaves it: the folded pseudo-header sum.
    fn partial_udp(payload: &[u8]) -> (Vec<u8>, u16, u16) {
        let src = Ipv4Addr::new(192, 0, 2, 2);
        let dst = Ipv4Addr::new(198, 51, 100, 2);
        let len = (8 + payload.len()) as u16;
        let mut udp = vec![0x9c, 0x40, 0x1b, 0x58];
        udp.extend_from_slice(&len.to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
        udp.extend_from_slice(payload);
        let pseudo = pseudo_header_v4(src, dst, 17, len);
        let full = finish(add(pseudo, sum(&udp)));
        udp[6..8].copy_from_slice(&pseudo.to_be_bytes());
        (udp, pseudo, full)
    }

    #[test]
    fn partial_udp_is_completed() {
        let (mut udp, pseudo, full) = partial_udp(b"hello");
        assert!(complete_partial(&mut udp, 6, pseudo, true));
        assert_eq!(u16::from_be_bytes([udp[6], udp[7]]), full);
        assert_eq!(add(pseudo, sum(&udp)), 0xffff, "verifies over the pseudo-header");
        // Complete now: the field no longer matches, nothing changes.
        let before = udp.clone();
        assert!(!complete_partial(&mut udp, 6, pseudo, true));
        assert_eq!(udp, before);
    }

    #[test]
    fn partial_needs_the_field() {
        let mut short = [0u8; 7];
        assert!(!complete_partial(&mut short, 6, 0, true));
        // A UDP checksum of 0 (none, IPv4) never equals a pseudo-header sum, which
        // includes the protocol and is never 0.
        let (mut udp, pseudo, _) = partial_udp(b"x");
        udp[6..8].fill(0);
        assert_ne!(pseudo, 0);
        assert!(!complete_partial(&mut udp, 6, pseudo, true));
    }

    #[test]
    fn fold_small_edges() {
        for a in [0, 1, 0xffff, 0x1_0000, 0x1_0001, 0x1_fffe, 0xffff_ffff, 0x1_0000_0000, (1 << 34) - 1] {
            assert_eq!(fold_small(a), fold(a), "{a:#x}");
        }
    }

    proptest! {
        #[test]
        fn fold_small_is_fold(a in 0u64..1 << 34) {
            prop_assert_eq!(fold_small(a), fold(a));
        }

        #[test]
        fn partial_completion_is_the_full_checksum(
            payload in proptest::collection::vec(any::<u8>(), 0..200),
            src in any::<u32>(),
            dst in any::<u32>(),
        ) {
            // TCP-like: checksum field at 16.
            let mut segment = vec![0u8; 20];
            segment.extend_from_slice(&payload);
            let pseudo = pseudo_header_v4(Ipv4Addr::from(src), Ipv4Addr::from(dst), 6, segment.len() as u16);
            let full = finish(add(pseudo, sum(&segment)));
            segment[16..18].copy_from_slice(&pseudo.to_be_bytes());
            prop_assert!(complete_partial(&mut segment, 16, pseudo, false));
            prop_assert_eq!(u16::from_be_bytes([segment[16], segment[17]]), full);
            prop_assert_eq!(add(pseudo, sum(&segment)), 0xffff);
        }

        #[test]
        fn complete_checksums_are_left_alone_or_rewritten_unchanged(
            payload in proptest::collection::vec(any::<u8>(), 0..200),
            pseudo in any::<u16>(),
        ) {
            // Whatever the pseudo-header sum, a correct checksum stays correct.
            let mut segment = vec![0u8; 8];
            segment.extend_from_slice(&payload);
            let mut c = finish(add(pseudo, sum(&segment)));
            if c == 0 {
                c = 0xffff;
            }
            segment[6..8].copy_from_slice(&c.to_be_bytes());
            let before = segment.clone();
            prop_assert!(!complete_partial(&mut segment, 6, pseudo, true));
            prop_assert_eq!(add(pseudo, sum(&segment)), 0xffff);
            prop_assert_eq!(segment, before);
        }

        #[test]
        fn sum_matches_reference(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            prop_assert_eq!(sum(&data), reference_sum(&data));
        }

        #[test]
        fn sum_of_pieces_adds(
            data in proptest::collection::vec(any::<u8>(), 0..200),
            split in 0usize..100,
        ) {
            let split = (split * 2).min(data.len() & !1);
            let (a, b) = data.split_at(split);
            prop_assert_eq!(add(sum(a), sum(b)), sum(&data));
        }

        #[test]
        fn update16_equals_recomputation(
            mut data in proptest::collection::vec(any::<u16>(), 2..40),
            index in any::<prop::sample::Index>(),
            new_word in any::<u16>(),
        ) {
            // data[0] is the checksum field, computed with itself zeroed.
            let i = 1 + index.index(data.len() - 1);
            data[0] = 0;
            let bytes = |d: &[u16]| d.iter().flat_map(|w| w.to_be_bytes()).collect::<Vec<u8>>();
            let old_checksum = checksum(&bytes(&data));
            let old_word = data[i];
            data[i] = new_word;
            // RFC 1624 can differ from recomputation only for all-zero data, where it
            // gives 0x0000 for the equivalent 0xffff; such headers do not occur.
            prop_assume!(data.iter().any(|&w| w != 0));
            let expected = checksum(&bytes(&data));
            let incremental = update16(old_checksum, old_word, new_word);
            prop_assert_eq!(incremental, expected);
            data[0] = incremental;
            prop_assert_eq!(sum(&bytes(&data)), 0xffff);
        }

        #[test]
        fn update32_equals_recomputation(
            mut data in proptest::collection::vec(any::<u16>(), 3..40),
            index in any::<prop::sample::Index>(),
            new_value in any::<u32>(),
        ) {
            let i = 1 + index.index(data.len() - 2);
            data[0] = 0;
            let bytes = |d: &[u16]| d.iter().flat_map(|w| w.to_be_bytes()).collect::<Vec<u8>>();
            let old_checksum = checksum(&bytes(&data));
            let old_value = (u32::from(data[i]) << 16) | u32::from(data[i + 1]);
            data[i] = (new_value >> 16) as u16;
            data[i + 1] = new_value as u16;
            prop_assume!(data.iter().any(|&w| w != 0));
            let expected = checksum(&bytes(&data));
            prop_assert_eq!(update32(old_checksum, old_value, new_value), expected);
        }
    }
}

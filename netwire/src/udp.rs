//! UDP (RFC 768) header: ports, length, checksum over the IPv4 or IPv6
//! pseudo-header (RFC 768, RFC 8200 §8.1: over IPv6 the checksum is
//! mandatory; a computed 0 is sent as 0xffff).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |          Source Port          |       Destination Port        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |            Length             |           Checksum            |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//! The functions take the whole datagram (header and payload, exactly
//! `Length` bytes) and panic only on fewer than [`HEADER_LEN`] bytes.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::checksum;
use crate::ipv4::Protocol;

pub const HEADER_LEN: usize = 8;

/// (source port, destination port, length field) of a datagram.
pub fn ports_and_len(udp: &[u8]) -> (u16, u16, u16) {
    (u16::from_be_bytes([udp[0], udp[1]]), u16::from_be_bytes([udp[2], udp[3]]), u16::from_be_bytes([udp[4], udp[5]]))
}

/// The checksum field.
pub fn checksum_field(udp: &[u8]) -> u16 {
    u16::from_be_bytes([udp[6], udp[7]])
}

/// Writes the header of a datagram of `udp.len()` bytes (checksum zero).
pub fn emit_header(udp: &mut [u8], src_port: u16, dst_port: u16) {
    let len = udp.len() as u16;
    udp[0..2].copy_from_slice(&src_port.to_be_bytes());
    udp[2..4].copy_from_slice(&dst_port.to_be_bytes());
    udp[4..6].copy_from_slice(&len.to_be_bytes());
    udp[6..8].fill(0);
}

/// Computes and writes the checksum of `udp` over the IPv6 pseudo-header.
pub fn fill_checksum_v6(udp: &mut [u8], src: Ipv6Addr, dst: Ipv6Addr) {
    udp[6..8].fill(0);
    let sum =
        checksum::add(checksum::pseudo_header_v6(src, dst, Protocol::UDP.0, udp.len() as u32), checksum::sum(udp));
    let c = !sum;
    udp[6..8].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
}

/// Computes and writes the checksum of `udp` over the IPv4 pseudo-header.
pub fn fill_checksum_v4(udp: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr) {
    udp[6..8].fill(0);
    let sum =
        checksum::add(checksum::pseudo_header_v4(src, dst, Protocol::UDP.0, udp.len() as u16), checksum::sum(udp));
    let c = !sum;
    udp[6..8].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
}

/// True if `udp` carries a checksum (mandatory over IPv6) that is right for
/// the IPv6 pseudo-header of `src` → `dst`.
pub fn verify_v6(udp: &[u8], src: Ipv6Addr, dst: Ipv6Addr) -> bool {
    checksum_field(udp) != 0
        && checksum::add(checksum::pseudo_header_v6(src, dst, Protocol::UDP.0, udp.len() as u32), checksum::sum(udp))
            == 0xffff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_round_trip_and_zero_rule() {
        let src: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let mut d = [0u8; 8 + 5];
        d[8..].copy_from_slice(b"hello");
        emit_header(&mut d, 1234, 7878);
        assert_eq!(ports_and_len(&d), (1234, 7878, 13));
        assert!(!verify_v6(&d, src, dst), "no checksum is refused over IPv6");
        fill_checksum_v6(&mut d, src, dst);
        assert!(verify_v6(&d, src, dst));
        d[9] ^= 1;
        assert!(!verify_v6(&d, src, dst));
        let mut v4 = [0u8; 8];
        emit_header(&mut v4, 1, 2);
        fill_checksum_v4(&mut v4, Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2));
        assert_ne!(checksum_field(&v4), 0);
    }
}

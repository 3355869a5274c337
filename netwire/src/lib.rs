#![forbid(unsafe_code)]
//! Zero-copy views and pure builders for the packet headers the appliance handles,
//! and the packet-buffer abstraction ([`buf`]) the pure pipeline works through.
//!
//! This crate has no DPDK and no `unsafe`: the appliance, the object client
//! (`objcli`), the fuzz targets and the tests all use it, and it builds anywhere.
//!
//! Each header type follows the same pattern (after smoltcp's `wire` module):
//!
//! * `Packet<T: AsRef<[u8]>>` wraps a byte buffer without copying it;
//! * `Packet::new_unchecked(buffer)` wraps any buffer; accessors on a buffer too short
//!   for the field they read panic;
//! * `Packet::new_checked(buffer)` first checks that the buffer holds the whole header
//!   (and that length fields agree with the buffer), after which no accessor panics;
//! * getters read fields in host order; setters (when `T: AsMut<[u8]>`) write them;
//! * `payload()` / `payload_mut()` give the bytes after the header.
//!
//! Nothing here allocates. Builders (`emit_*`) write into a caller-supplied buffer and
//! return the number of bytes written, or [`WireError::BufferTooSmall`].

pub mod arp;
pub mod buf;
pub mod checksum;
pub mod ethernet;
pub mod icmpv4;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv4opt;
pub mod ipv6;
pub mod ipv6ext;
pub mod ipv6opt;
pub mod prefix;
pub mod srh;
pub mod storage;
pub mod udp;

pub use buf::{grow_front, PacketBuf, PacketPool, VecBuf, VecPool};

use core::fmt;
use core::str::FromStr;
use std::net::Ipv6Addr;

/// Why a buffer could not be parsed, or a packet could not be built or rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The buffer is shorter than the header, or than a length field says it is.
    #[error("packet truncated: buffer shorter than the header or its length fields")]
    Truncated,
    /// A field holds a value the format does not allow (wrong version, bad length, ...).
    #[error("malformed packet: a header field holds an invalid value")]
    Malformed,
    /// The checksum does not match the contents.
    #[error("bad checksum")]
    BadChecksum,
    /// The packet is well formed but not of the kind this view or operation handles
    /// (e.g. an ARP packet for another protocol, an ICMP message that is not an echo
    /// request, a fragment).
    #[error("unsupported packet for this operation")]
    Unsupported,
    /// The output buffer given to a builder is too small for what it must write.
    #[error("output buffer too small")]
    BufferTooSmall,
}

/// An Ethernet (EUI-48) hardware address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The broadcast address `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// The all-zero address `00:00:00:00:00:00` (unknown target in ARP requests).
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// Builds an address from its six bytes.
    pub const fn new(bytes: [u8; 6]) -> MacAddr {
        MacAddr(bytes)
    }

    /// Builds an address from the first six bytes of `bytes`.
    ///
    /// # Panics
    /// If `bytes` is shorter than six bytes.
    pub fn from_slice(bytes: &[u8]) -> MacAddr {
        let mut addr = [0u8; 6];
        addr.copy_from_slice(&bytes[..6]);
        MacAddr(addr)
    }

    /// The six bytes of the address.
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// The six bytes of the address, borrowed.
    pub const fn as_bytes(&self) -> &[u8; 6] {
        &self.0
    }

    /// Whether the group bit (least significant bit of the first byte) is set;
    /// true for broadcast too.
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// Whether this is `ff:ff:ff:ff:ff:ff`.
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// Whether this is an individual (unicast) address: group bit clear.
    pub const fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }

    /// The Ethernet multicast address for an IPv6 multicast group (RFC 2464 §7):
    /// `33:33` followed by the last four bytes of the group address.
    pub fn from_ipv6_multicast(group: Ipv6Addr) -> MacAddr {
        let o = group.octets();
        MacAddr([0x33, 0x33, o[12], o[13], o[14], o[15]])
    }
}

impl From<[u8; 6]> for MacAddr {
    fn from(bytes: [u8; 6]) -> Self {
        MacAddr(bytes)
    }
}

impl From<MacAddr> for [u8; 6] {
    fn from(addr: MacAddr) -> Self {
        addr.0
    }
}

impl fmt::Display for MacAddr {
    /// Formats as six lower-case hex pairs separated by colons: `aa:bb:cc:dd:ee:ff`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

/// The string given to [`MacAddr::from_str`] is not six hex pairs separated by `:` or `-`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address: expected six hex pairs like aa:bb:cc:dd:ee:ff")]
pub struct ParseMacAddrError;

impl FromStr for MacAddr {
    type Err = ParseMacAddrError;

    /// Parses `aa:bb:cc:dd:ee:ff` (or with `-` separators), either case; each part must
    /// be exactly two hex digits.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let separator = if s.contains('-') { '-' } else { ':' };
        let mut addr = [0u8; 6];
        let mut parts = s.split(separator);
        for byte in addr.iter_mut() {
            let part = parts.next().ok_or(ParseMacAddrError)?;
            if part.len() != 2 || !part.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(ParseMacAddrError);
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| ParseMacAddrError)?;
        }
        if parts.next().is_some() {
            return Err(ParseMacAddrError);
        }
        Ok(MacAddr(addr))
    }
}

/// Reads a big-endian `u16` at `offset`. Panics if out of bounds.
#[inline]
pub fn read_u16(buf: &[u8], offset: usize) -> u16 {
    u16::from_be_bytes([buf[offset], buf[offset + 1]])
}

/// Writes a big-endian `u16` at `offset`. Panics if out of bounds.
#[inline]
pub fn write_u16(buf: &mut [u8], offset: usize, value: u16) {
    buf[offset..offset + 2].copy_from_slice(&value.to_be_bytes());
}

/// Reads a big-endian `u32` at `offset`. Panics if out of bounds.
#[inline]
pub fn read_u32(buf: &[u8], offset: usize) -> u32 {
    u32::from_be_bytes([buf[offset], buf[offset + 1], buf[offset + 2], buf[offset + 3]])
}

/// Writes a big-endian `u32` at `offset`. Panics if out of bounds.
#[inline]
pub fn write_u32(buf: &mut [u8], offset: usize, value: u32) {
    buf[offset..offset + 4].copy_from_slice(&value.to_be_bytes());
}

/// Reads an IPv6 address from the 16 bytes at `offset`. Panics if out of bounds.
#[inline]
pub(crate) fn read_ipv6(buf: &[u8], offset: usize) -> Ipv6Addr {
    let mut octets = [0u8; 16];
    octets.copy_from_slice(&buf[offset..offset + 16]);
    Ipv6Addr::from(octets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn mac_display_and_parse() {
        let mac = MacAddr([0x00, 0x1b, 0x21, 0xaa, 0xBB, 0x0f]);
        assert_eq!(mac.to_string(), "00:1b:21:aa:bb:0f");
        assert_eq!("00:1B:21:aa:bb:0f".parse::<MacAddr>(), Ok(mac));
        assert_eq!("00-1b-21-aa-bb-0f".parse::<MacAddr>(), Ok(mac));
        for bad in [
            "",
            "00:1b:21:aa:bb",
            "00:1b:21:aa:bb:0f:00",
            "0:1b:21:aa:bb:0f",
            "00:1b:21:aa:bb:0g",
            "001b:21:aa:bb:0f",
            "00:1b-21:aa:bb:0f",
            "+0:1b:21:aa:bb:0f",
        ] {
            assert_eq!(bad.parse::<MacAddr>(), Err(ParseMacAddrError), "{bad:?}");
        }
    }

    #[test]
    fn mac_kinds() {
        assert!(MacAddr::BROADCAST.is_broadcast());
        assert!(MacAddr::BROADCAST.is_multicast());
        assert!(MacAddr([0x01, 0, 0x5e, 0, 0, 1]).is_multicast());
        assert!(!MacAddr([0x01, 0, 0x5e, 0, 0, 1]).is_broadcast());
        assert!(MacAddr([0x02, 0, 0, 0, 0, 1]).is_unicast());
        assert!(!MacAddr::ZERO.is_multicast());
    }

    #[test]
    fn mac_from_ipv6_multicast() {
        let group: Ipv6Addr = "ff02::1:ff00:1234".parse().unwrap();
        assert_eq!(MacAddr::from_ipv6_multicast(group), MacAddr([0x33, 0x33, 0xff, 0x00, 0x12, 0x34]));
        assert_eq!(
            MacAddr::from_ipv6_multicast(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1)),
            MacAddr([0x33, 0x33, 0, 0, 0, 1])
        );
    }

    proptest! {
        #[test]
        fn mac_display_parse_round_trip(bytes in any::<[u8; 6]>()) {
            let mac = MacAddr(bytes);
            prop_assert_eq!(mac.to_string().parse::<MacAddr>(), Ok(mac));
        }

        #[test]
        fn mac_parse_never_panics(s in "\\PC{0,24}") {
            let _ = s.parse::<MacAddr>();
        }
    }
}

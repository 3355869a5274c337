//! Ethernet II frames (IEEE 802.3 with an EtherType; no FCS).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                  Destination MAC address                      |
//! +                               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                               |                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+                               +
//! |                    Source MAC address                         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |          EtherType            |  Payload ...
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! An 802.1Q tag is not parsed: a tagged frame reports [`EtherType::VLAN`] and the tag
//! is the first bytes of its payload.
//!
//! Panics: accessors panic only on a view made with [`Packet::new_unchecked`] over a
//! buffer shorter than [`HEADER_LEN`]; after [`Packet::new_checked`] none do.

use super::{read_u16, write_u16, MacAddr, WireError};

/// Length of the Ethernet II header in bytes.
pub const HEADER_LEN: usize = 14;

mod field {
    use core::ops::Range;

    pub const DESTINATION: Range<usize> = 0..6;
    pub const SOURCE: Range<usize> = 6..12;
    pub const ETHERTYPE: usize = 12;
    pub const PAYLOAD: usize = 14;
}

/// The EtherType field: what the payload carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EtherType(pub u16);

impl EtherType {
    /// Internet Protocol version 4.
    pub const IPV4: EtherType = EtherType(0x0800);
    /// Address Resolution Protocol.
    pub const ARP: EtherType = EtherType(0x0806);
    /// IEEE 802.1Q VLAN tag (reported, not parsed).
    pub const VLAN: EtherType = EtherType(0x8100);
    /// Internet Protocol version 6.
    pub const IPV6: EtherType = EtherType(0x86dd);
}

impl From<u16> for EtherType {
    fn from(value: u16) -> Self {
        EtherType(value)
    }
}

impl From<EtherType> for u16 {
    fn from(value: EtherType) -> Self {
        value.0
    }
}

/// A zero-copy view of an Ethernet II frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after checking it holds a whole header ([`WireError::Truncated`]).
    pub fn new_checked(buffer: T) -> Result<Packet<T>, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the buffer holds a whole header.
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

    /// The whole frame, header included.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Destination MAC address.
    pub fn dst_addr(&self) -> MacAddr {
        MacAddr::from_slice(&self.buffer.as_ref()[field::DESTINATION])
    }

    /// Source MAC address.
    pub fn src_addr(&self) -> MacAddr {
        MacAddr::from_slice(&self.buffer.as_ref()[field::SOURCE])
    }

    /// EtherType of the payload.
    pub fn ethertype(&self) -> EtherType {
        EtherType(read_u16(self.buffer.as_ref(), field::ETHERTYPE))
    }

    /// The bytes after the header (up to the end of the buffer, padding included).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the destination MAC address.
    pub fn set_dst_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(addr.as_bytes());
    }

    /// Sets the source MAC address.
    pub fn set_src_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(addr.as_bytes());
    }

    /// Sets the EtherType.
    pub fn set_ethertype(&mut self, ethertype: EtherType) {
        write_u16(self.buffer.as_mut(), field::ETHERTYPE, ethertype.0);
    }

    /// The bytes after the header, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

/// Writes an Ethernet II header into the first [`HEADER_LEN`] bytes of `out`; returns
/// [`HEADER_LEN`].
pub fn emit_header(out: &mut [u8], dst: MacAddr, src: MacAddr, ethertype: EtherType) -> Result<usize, WireError> {
    if out.len() < HEADER_LEN {
        return Err(WireError::BufferTooSmall);
    }
    let mut frame = Packet::new_unchecked(out);
    frame.set_dst_addr(dst);
    frame.set_src_addr(src);
    frame.set_ethertype(ethertype);
    Ok(HEADER_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The first bytes of a captured ARP request frame (broadcast, from 00:1b:21:3a:4f:10).
    const ARP_FRAME: [u8; 16] =
        [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x1b, 0x21, 0x3a, 0x4f, 0x10, 0x08, 0x06, 0x00, 0x01];

    #[test]
    fn parse_captured_frame() {
        let frame = Packet::new_checked(&ARP_FRAME[..]).unwrap();
        assert_eq!(frame.dst_addr(), MacAddr::BROADCAST);
        assert_eq!(frame.src_addr(), MacAddr([0x00, 0x1b, 0x21, 0x3a, 0x4f, 0x10]));
        assert_eq!(frame.ethertype(), EtherType::ARP);
        assert_eq!(frame.payload(), &[0x00, 0x01]);
    }

    #[test]
    fn vlan_reported_as_ethertype() {
        let mut bytes = ARP_FRAME;
        bytes[12] = 0x81;
        bytes[13] = 0x00;
        assert_eq!(Packet::new_checked(&bytes[..]).unwrap().ethertype(), EtherType::VLAN);
    }

    #[test]
    fn short_buffer_is_truncated() {
        assert_eq!(Packet::new_checked(&ARP_FRAME[..13]), Err(WireError::Truncated));
        assert!(Packet::new_checked(&ARP_FRAME[..14]).unwrap().payload().is_empty());
    }

    #[test]
    fn setters_write_fields() {
        let mut bytes = [0u8; 20];
        let mut frame = Packet::new_unchecked(&mut bytes[..]);
        frame.set_dst_addr(MacAddr([1, 2, 3, 4, 5, 6]));
        frame.set_src_addr(MacAddr([7, 8, 9, 10, 11, 12]));
        frame.set_ethertype(EtherType::IPV6);
        frame.payload_mut()[0] = 0x60;
        assert_eq!(&bytes[..15], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x86, 0xdd, 0x60]);
    }

    proptest! {
        #[test]
        fn emit_parse_round_trip(dst in any::<[u8; 6]>(), src in any::<[u8; 6]>(), ty in any::<u16>()) {
            let mut out = [0u8; HEADER_LEN];
            prop_assert_eq!(
                emit_header(&mut out, MacAddr(dst), MacAddr(src), EtherType(ty)),
                Ok(HEADER_LEN)
            );
            let frame = Packet::new_checked(&out[..]).unwrap();
            prop_assert_eq!(frame.dst_addr(), MacAddr(dst));
            prop_assert_eq!(frame.src_addr(), MacAddr(src));
            prop_assert_eq!(frame.ethertype(), EtherType(ty));
            prop_assert_eq!(emit_header(&mut out[..13], MacAddr(dst), MacAddr(src), EtherType(ty)),
                Err(WireError::BufferTooSmall));
        }

        #[test]
        fn new_checked_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(frame) = Packet::new_checked(&bytes[..]) {
                let _ = (frame.dst_addr(), frame.src_addr(), frame.ethertype(), frame.payload());
                let _ = frame.as_bytes();
            }
        }
    }
}

//! ARP (RFC 826) for Ethernet and IPv4 only.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     Hardware type (1)         |     Protocol type (0x0800)    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | HW len (6)    | Proto len (4) |          Operation            |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                 Sender hardware address                       |
//! +                               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                               |  Sender protocol address      |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Sender protocol address      |                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+                               +
//! |                 Target hardware address                       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                 Target protocol address                       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! [`Packet::new_checked`] accepts only hardware type 1 (Ethernet), protocol type
//! 0x0800 (IPv4), hardware length 6 and protocol length 4; anything else is
//! [`WireError::Malformed`]. Bytes after the 28-byte packet (Ethernet padding) are
//! ignored.
//!
//! Panics: accessors panic only on a view made with [`Packet::new_unchecked`] over a
//! buffer shorter than [`PACKET_LEN`]; after [`Packet::new_checked`] none do.

use std::net::Ipv4Addr;

use super::{read_u16, write_u16, MacAddr, WireError};

/// Length in bytes of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;

/// Hardware type for Ethernet.
pub const HARDWARE_ETHERNET: u16 = 1;
/// Protocol type for IPv4 (the IPv4 EtherType).
pub const PROTOCOL_IPV4: u16 = 0x0800;

mod field {
    use core::ops::Range;

    pub const HARDWARE_TYPE: usize = 0;
    pub const PROTOCOL_TYPE: usize = 2;
    pub const HARDWARE_LEN: usize = 4;
    pub const PROTOCOL_LEN: usize = 5;
    pub const OPERATION: usize = 6;
    pub const SENDER_HARDWARE_ADDR: Range<usize> = 8..14;
    pub const SENDER_PROTOCOL_ADDR: Range<usize> = 14..18;
    pub const TARGET_HARDWARE_ADDR: Range<usize> = 18..24;
    pub const TARGET_PROTOCOL_ADDR: Range<usize> = 24..28;
}

/// The ARP operation code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Operation(pub u16);

impl Operation {
    /// Who has the target protocol address?
    pub const REQUEST: Operation = Operation(1);
    /// The sender has the sender protocol address.
    pub const REPLY: Operation = Operation(2);
}

/// A zero-copy view of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

fn read_ipv4(buf: &[u8], range: core::ops::Range<usize>) -> Ipv4Addr {
    let b = &buf[range];
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after checking it holds [`PACKET_LEN`] bytes
    /// ([`WireError::Truncated`]) of Ethernet/IPv4 ARP ([`WireError::Malformed`]).
    pub fn new_checked(buffer: T) -> Result<Packet<T>, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check()?;
        Ok(packet)
    }

    /// Checks the length and the fixed hardware/protocol type and length fields.
    pub fn check(&self) -> Result<(), WireError> {
        if self.buffer.as_ref().len() < PACKET_LEN {
            return Err(WireError::Truncated);
        }
        if self.hardware_type() != HARDWARE_ETHERNET
            || self.protocol_type() != PROTOCOL_IPV4
            || self.hardware_len() != 6
            || self.protocol_len() != 4
        {
            return Err(WireError::Malformed);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Hardware type (1 for Ethernet).
    pub fn hardware_type(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::HARDWARE_TYPE)
    }

    /// Protocol type (0x0800 for IPv4).
    pub fn protocol_type(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::PROTOCOL_TYPE)
    }

    /// Hardware address length in bytes (6).
    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HARDWARE_LEN]
    }

    /// Protocol address length in bytes (4).
    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL_LEN]
    }

    /// Operation (request or reply).
    pub fn operation(&self) -> Operation {
        Operation(read_u16(self.buffer.as_ref(), field::OPERATION))
    }

    /// Sender hardware address.
    pub fn sender_hardware_addr(&self) -> MacAddr {
        MacAddr::from_slice(&self.buffer.as_ref()[field::SENDER_HARDWARE_ADDR])
    }

    /// Sender protocol (IPv4) address.
    pub fn sender_protocol_addr(&self) -> Ipv4Addr {
        read_ipv4(self.buffer.as_ref(), field::SENDER_PROTOCOL_ADDR)
    }

    /// Target hardware address (zero in requests).
    pub fn target_hardware_addr(&self) -> MacAddr {
        MacAddr::from_slice(&self.buffer.as_ref()[field::TARGET_HARDWARE_ADDR])
    }

    /// Target protocol (IPv4) address.
    pub fn target_protocol_addr(&self) -> Ipv4Addr {
        read_ipv4(self.buffer.as_ref(), field::TARGET_PROTOCOL_ADDR)
    }

    /// Whether this is a gratuitous ARP: sender and target protocol addresses equal.
    pub fn is_gratuitous(&self) -> bool {
        self.sender_protocol_addr() == self.target_protocol_addr()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the hardware type.
    pub fn set_hardware_type(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::HARDWARE_TYPE, value);
    }

    /// Sets the protocol type.
    pub fn set_protocol_type(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::PROTOCOL_TYPE, value);
    }

    /// Sets the hardware address length in bytes.
    pub fn set_hardware_len(&mut self, value: u8) {
        self.buffer.as_mut()[field::HARDWARE_LEN] = value;
    }

    /// Sets the protocol address length in bytes.
    pub fn set_protocol_len(&mut self, value: u8) {
        self.buffer.as_mut()[field::PROTOCOL_LEN] = value;
    }

    /// Sets the operation.
    pub fn set_operation(&mut self, value: Operation) {
        write_u16(self.buffer.as_mut(), field::OPERATION, value.0);
    }

    /// Sets the sender hardware address.
    pub fn set_sender_hardware_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::SENDER_HARDWARE_ADDR].copy_from_slice(addr.as_bytes());
    }

    /// Sets the sender protocol address.
    pub fn set_sender_protocol_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SENDER_PROTOCOL_ADDR].copy_from_slice(&addr.octets());
    }

    /// Sets the target hardware address.
    pub fn set_target_hardware_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::TARGET_HARDWARE_ADDR].copy_from_slice(addr.as_bytes());
    }

    /// Sets the target protocol address.
    pub fn set_target_protocol_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::TARGET_PROTOCOL_ADDR].copy_from_slice(&addr.octets());
    }
}

/// Writes a complete Ethernet/IPv4 ARP packet into the first [`PACKET_LEN`] bytes of
/// `out`; returns [`PACKET_LEN`], or [`WireError::BufferTooSmall`].
pub fn emit(
    out: &mut [u8],
    operation: Operation,
    sender_mac: MacAddr,
    sender_ip: Ipv4Addr,
    target_mac: MacAddr,
    target_ip: Ipv4Addr,
) -> Result<usize, WireError> {
    if out.len() < PACKET_LEN {
        return Err(WireError::BufferTooSmall);
    }
    let mut packet = Packet::new_unchecked(&mut out[..PACKET_LEN]);
    packet.set_hardware_type(HARDWARE_ETHERNET);
    packet.set_protocol_type(PROTOCOL_IPV4);
    packet.set_hardware_len(6);
    packet.set_protocol_len(4);
    packet.set_operation(operation);
    packet.set_sender_hardware_addr(sender_mac);
    packet.set_sender_protocol_addr(sender_ip);
    packet.set_target_hardware_addr(target_mac);
    packet.set_target_protocol_addr(target_ip);
    Ok(PACKET_LEN)
}

/// Writes an ARP request asking who has `target_ip` (target hardware address zero);
/// returns [`PACKET_LEN`]. Send it to [`MacAddr::BROADCAST`].
pub fn emit_request(
    out: &mut [u8],
    our_mac: MacAddr,
    our_ip: Ipv4Addr,
    target_ip: Ipv4Addr,
) -> Result<usize, WireError> {
    emit(out, Operation::REQUEST, our_mac, our_ip, MacAddr::ZERO, target_ip)
}

/// Writes the reply to `request`: we (`our_mac`) have the address it asked for (its
/// target protocol address); the reply goes to the requester's hardware and protocol
/// addresses. Returns [`PACKET_LEN`]. The caller decides whether the asked address is
/// ours and sends the frame to `request.sender_hardware_addr()`.
pub fn emit_reply<T: AsRef<[u8]>>(request: &Packet<T>, our_mac: MacAddr, out: &mut [u8]) -> Result<usize, WireError> {
    emit(
        out,
        Operation::REPLY,
        our_mac,
        request.target_protocol_addr(),
        request.sender_hardware_addr(),
        request.sender_protocol_addr(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A captured ARP request (Ethernet payload with the 18 bytes of padding to 60-byte
    /// frame minimum): who has 192.168.1.1? tell 192.168.1.10 (00:1b:21:3a:4f:10).
    const REQUEST: [u8; 46] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x00, 0x1b, 0x21, 0x3a, 0x4f, 0x10, 0xc0, 0xa8, 0x01, 0x0a,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0xa8, 0x01, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0,
    ];

    #[test]
    fn parse_captured_request() {
        let packet = Packet::new_checked(&REQUEST[..]).unwrap();
        assert_eq!(packet.operation(), Operation::REQUEST);
        assert_eq!(packet.sender_hardware_addr(), MacAddr([0x00, 0x1b, 0x21, 0x3a, 0x4f, 0x10]));
        assert_eq!(packet.sender_protocol_addr(), Ipv4Addr::new(192, 168, 1, 10));
        assert_eq!(packet.target_hardware_addr(), MacAddr::ZERO);
        assert_eq!(packet.target_protocol_addr(), Ipv4Addr::new(192, 168, 1, 1));
        assert!(!packet.is_gratuitous());
    }

    #[test]
    fn reply_to_captured_request() {
        let request = Packet::new_checked(&REQUEST[..]).unwrap();
        let our_mac = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        let mut out = [0u8; PACKET_LEN];
        assert_eq!(emit_reply(&request, our_mac, &mut out), Ok(PACKET_LEN));
        let expected: [u8; PACKET_LEN] = [
            0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x02, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0xc0, 0xa8, 0x01, 0x01,
            0x00, 0x1b, 0x21, 0x3a, 0x4f, 0x10, 0xc0, 0xa8, 0x01, 0x0a,
        ];
        assert_eq!(out, expected);
    }

    #[test]
    fn request_matches_capture() {
        let mut out = [0xeeu8; 30];
        let len = emit_request(
            &mut out,
            MacAddr([0x00, 0x1b, 0x21, 0x3a, 0x4f, 0x10]),
            Ipv4Addr::new(192, 168, 1, 10),
            Ipv4Addr::new(192, 168, 1, 1),
        )
        .unwrap();
        assert_eq!(&out[..len], &REQUEST[..PACKET_LEN]);
        assert_eq!(&out[len..], &[0xee, 0xee]);
    }

    #[test]
    fn rejects_short_and_foreign() {
        assert_eq!(Packet::new_checked(&REQUEST[..27]), Err(WireError::Truncated));
        for (offset, value) in [(1, 6), (2, 0x86), (4, 8), (5, 16)] {
            let mut bytes = REQUEST;
            bytes[offset] = value;
            assert_eq!(Packet::new_checked(&bytes[..]), Err(WireError::Malformed));
        }
        assert_eq!(
            emit_request(&mut [0u8; 27], MacAddr::ZERO, Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED),
            Err(WireError::BufferTooSmall)
        );
    }

    proptest! {
        #[test]
        fn emit_parse_round_trip(
            op in any::<u16>(),
            sender_mac in any::<[u8; 6]>(),
            sender_ip in any::<[u8; 4]>(),
            target_mac in any::<[u8; 6]>(),
            target_ip in any::<[u8; 4]>(),
        ) {
            let mut out = [0u8; PACKET_LEN];
            emit(&mut out, Operation(op), MacAddr(sender_mac), sender_ip.into(),
                MacAddr(target_mac), target_ip.into()).unwrap();
            let packet = Packet::new_checked(&out[..]).unwrap();
            prop_assert_eq!(packet.operation(), Operation(op));
            prop_assert_eq!(packet.sender_hardware_addr(), MacAddr(sender_mac));
            prop_assert_eq!(packet.sender_protocol_addr(), Ipv4Addr::from(sender_ip));
            prop_assert_eq!(packet.target_hardware_addr(), MacAddr(target_mac));
            prop_assert_eq!(packet.target_protocol_addr(), Ipv4Addr::from(target_ip));
        }

        #[test]
        fn reply_round_trip(
            sender_mac in any::<[u8; 6]>(),
            sender_ip in any::<[u8; 4]>(),
            target_ip in any::<[u8; 4]>(),
            our_mac in any::<[u8; 6]>(),
        ) {
            let mut request = [0u8; PACKET_LEN];
            emit_request(&mut request, MacAddr(sender_mac), sender_ip.into(), target_ip.into())
                .unwrap();
            let request = Packet::new_checked(&request[..]).unwrap();
            let mut reply = [0u8; PACKET_LEN];
            emit_reply(&request, MacAddr(our_mac), &mut reply).unwrap();
            let reply = Packet::new_checked(&reply[..]).unwrap();
            prop_assert_eq!(reply.operation(), Operation::REPLY);
            prop_assert_eq!(reply.sender_hardware_addr(), MacAddr(our_mac));
            prop_assert_eq!(reply.sender_protocol_addr(), Ipv4Addr::from(target_ip));
            prop_assert_eq!(reply.target_hardware_addr(), MacAddr(sender_mac));
            prop_assert_eq!(reply.target_protocol_addr(), Ipv4Addr::from(sender_ip));
        }

        #[test]
        fn new_checked_never_panics(
            mut bytes in proptest::collection::vec(any::<u8>(), 0..40),
            valid_prefix in any::<bool>(),
        ) {
            if valid_prefix && bytes.len() >= 6 {
                bytes[..6].copy_from_slice(&REQUEST[..6]);
            }
            if let Ok(packet) = Packet::new_checked(&bytes[..]) {
                let _ = (packet.hardware_type(), packet.protocol_type(), packet.hardware_len(),
                    packet.protocol_len(), packet.operation(), packet.sender_hardware_addr(),
                    packet.sender_protocol_addr(), packet.target_hardware_addr(),
                    packet.target_protocol_addr(), packet.is_gratuitous());
            }
        }
    }
}

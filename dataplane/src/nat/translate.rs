//! In-place NAT44 translation of whole IPv4 packets, with RFC 1624 incremental
//! checksum updates.
//!
//! ```text
//!  TCP (RFC 9293)                         UDP (RFC 768)
//!  0               16              31     0               16              31
//!  +---------------+---------------+      +---------------+---------------+
//!  |  Source Port  |   Dest Port   |      |  Source Port  |   Dest Port   |
//!  +---------------+---------------+      +---------------+---------------+
//!  |        Sequence Number        |      |    Length     |   Checksum    |
//!  +-------------------------------+      +---------------+---------------+
//!  |     Acknowledgment Number     |
//!  +-------+-------+---------------+      ICMP echo request / reply (RFC 792)
//!  |Off|Rsv| Flags |    Window     |      +-------+-------+---------------+
//!  +---------------+---------------+      | Type  | Code  |   Checksum    |
//!  |   Checksum    |    Urgent     |      +-------+-------+---------------+
//!  +---------------+---------------+      |  Identifier   |   Sequence    |
//!                                         +---------------+---------------+
//!  ICMP error (RFC 792; RFC 5508 §4.2 for NAT):
//!  +--------------------------------------------------------------------+
//!  | outer IPv4 header (src: reporter, dst: the flow's source)          |
//!  +--------------------------------------------------------------------+
//!  | Type 3/11/12 | Code | ICMP checksum (covers everything below)     |
//!  | unused / next-hop MTU / pointer                                     |
//!  +--------------------------------------------------------------------+
//!  | quoted IPv4 header of the packet that caused the error (+options)  |
//!  | quoted first bytes of its transport header: ports or ICMP id, and  |
//!  | possibly (not always) its checksum                                 |
//!  +--------------------------------------------------------------------+
//! ```
//!
//! What each function changes:
//!
//! * [`rewrite_src`] / [`rewrite_dst`]: the IPv4 source (destination) address
//!   and the TCP/UDP source (destination) port, or the ICMP echo identifier
//!   (which plays the port's role for both directions). The IPv4 header
//!   checksum and the transport checksum (pseudo-header address and port) are
//!   updated with RFC 1624 eqn. 3 ([`checksum::update16`]/[`checksum::update32`]);
//!   a UDP checksum of 0 (none, RFC 768) stays 0, and a computed 0 is sent as
//!   0xffff. The ICMP checksum has no pseudo-header: only the identifier change
//!   enters it.
//! * [`translate_icmp_error_inbound`] (an error from outside about a packet
//!   the NAT sent out): the outer destination becomes the inside address; in
//!   the quoted packet, the source address and source port (or echo id)
//!   become the inside ones; the quoted IPv4 header checksum, the quoted
//!   transport checksum (if quoted, see below) and the outer ICMP checksum are
//!   updated; then the outer IPv4 header checksum.
//!   [`translate_icmp_error_outbound`] is the mirror image (an inside host
//!   reporting an error about a packet it received through the NAT): outer
//!   source, quoted destination address and port become the public ones. The
//!   outer source is rewritten whatever it was (like Linux: the error is made
//!   to look as if it came from the flow's public endpoint, so an inside
//!   router's address is not leaked either).
//!
//! # Choices
//!
//! * **Quoted transport checksum.** An error quotes at least 8 bytes of the
//!   transport header (RFC 792), often more (RFC 1812: as much as fits in 576
//!   bytes). The quoted TCP checksum (bytes 16..18) or UDP checksum (6..8) is
//!   updated when those two bytes are inside the quote; when the quote ends
//!   before them there is nothing to update. Linux updates the quoted TCP
//!   checksum only if the whole 20-byte TCP header is quoted; the two rules
//!   differ only for quotes of 18 or 19 TCP bytes, where updating keeps the
//!   quote equal to a prefix of the packet as translated. The invariant
//!   tested: translating a quote gives the quote of the translated packet,
//!   except for a quote that ends in the middle of the TCP checksum (17 TCP
//!   bytes), whose one quoted checksum byte cannot be updated without the
//!   other and is left as it was.
//! * **Checksums are not verified**, except the ICMP checksum of an error
//!   (RFC 5508 REQ-3: drop an error that fails it, [`NatError::BadChecksum`];
//!   it is at most 576 bytes). Incremental updates keep a wrong checksum wrong,
//!   so the end host still drops the packet. The L3 stage has already checked
//!   the outer IPv4 header.
//! * **Canonical results.** For a packet whose checksums are canonical (as a
//!   full computation writes them), every result is canonical too (tested
//!   byte for byte against full rebuilds). Eqn. 3 only departs from a full
//!   computation on the two encodings of zero: for the IPv4 header, TCP and
//!   UDP (whose pseudo-header is never zero) it cannot; for ICMP it can (an
//!   echo reply with id, sequence and data all 0 sums to zero; a chain of
//!   updates on an error can end on 0xffff), so an ICMP result of 0x0000 or
//!   0xffff is recomputed over the message when the whole message is there.
//!   UDP follows RFC 768: a computed 0 is sent as 0xffff.
//! * **Fragments.** A non-first fragment has no transport header:
//!   [`NatError::Fragment`], and the pipeline drops and counts it (no virtual
//!   reassembly yet; RFC 4787 REQ-14 is not met). A first fragment carries the
//!   ports and the transport checksum, which covers the whole datagram; its
//!   incremental update is still right, so first fragments are translated.
//!   ICMP errors that are fragments, or quote a non-first fragment, are
//!   [`NatError::Fragment`] too.
//! * **Atomicity.** Every check is made before the first byte is written: a
//!   function that returns an error has left the packet unchanged.
//!
//! # Limits
//!
//! Inputs are whole IPv4 packets (`ip[..total_len]`; link padding after it is
//! ignored and left alone). Options are skipped, not parsed. Only TCP, UDP and
//! ICMP echo request/reply (type 8/0) are translated; ICMP errors of type 3,
//! 11 and 12 are translated when they quote TCP, UDP or an echo. Nothing here
//! panics, allocates or loops over the payload (except the ICMP error checksum
//! check and the all-zero ICMP case above).

use std::net::Ipv4Addr;

use super::NatError;
use netwire::{checksum, icmpv4, ipv4, read_u16, read_u32, write_u16, write_u32};

/// The transport protocols NAT translates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// TCP (protocol 6).
    Tcp,
    /// UDP (protocol 17).
    Udp,
    /// ICMP queries (protocol 1): echo request/reply, the identifier as port.
    Icmp,
}

impl Proto {
    /// Every protocol, in [`Proto::index`] order.
    pub const ALL: [Proto; 3] = [Proto::Tcp, Proto::Udp, Proto::Icmp];

    /// The IPv4 protocol number.
    pub const fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Icmp => 1,
        }
    }

    /// The protocol for an IPv4 protocol number, if NAT handles it.
    pub const fn from_number(number: u8) -> Option<Proto> {
        match number {
            6 => Some(Proto::Tcp),
            17 => Some(Proto::Udp),
            1 => Some(Proto::Icmp),
            _ => None,
        }
    }

    /// 0, 1, 2: an index for per-protocol arrays.
    pub const fn index(self) -> usize {
        match self {
            Proto::Tcp => 0,
            Proto::Udp => 1,
            Proto::Icmp => 2,
        }
    }

    /// Lower-case name for logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
        }
    }
}

/// TCP header flag bits (byte 13).
pub mod tcp_flags {
    /// No more data from sender.
    pub const FIN: u8 = 0x01;
    /// Synchronise sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Acknowledgment field significant.
    pub const ACK: u8 = 0x10;
}

/// The 5-tuple of a packet as it travels: source and destination as in the
/// header. For ICMP queries `sport == dport ==` the echo identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub proto: Proto,
    pub src: Ipv4Addr,
    pub sport: u16,
    pub dst: Ipv4Addr,
    pub dport: u16,
}

impl FlowKey {
    /// The key of the reply direction: source and destination swapped.
    pub const fn reversed(&self) -> FlowKey {
        FlowKey { proto: self.proto, src: self.dst, sport: self.dport, dst: self.src, dport: self.sport }
    }
}

/// What [`parse_flow`] finds in a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    /// For TCP, UDP and ICMP queries: the packet's own 5-tuple. For an ICMP
    /// error: the 5-tuple of the quoted packet, reversed, i.e. the key a
    /// packet of that flow travelling in the error's direction would have, so
    /// the same mapping lookup applies (inbound: by destination; outbound: by
    /// source).
    pub key: FlowKey,
    /// The packet is an ICMP error: translate it with
    /// [`translate_icmp_error_inbound`]/[`translate_icmp_error_outbound`],
    /// and do not create or refresh state for it (RFC 5508 REQ-4..6).
    pub icmp_error: bool,
    /// TCP flags of a TCP packet (not of a quoted one); 0 otherwise.
    pub tcp_flags: u8,
}

const TCP_HEADER_LEN: usize = 20;
const UDP_HEADER_LEN: usize = 8;
const ICMP_HEADER_LEN: usize = icmpv4::HEADER_LEN;
const TCP_FLAGS: usize = 13;
const TCP_CHECKSUM: usize = 16;
const UDP_CHECKSUM: usize = 6;
const ICMP_CHECKSUM: usize = 2;
const ICMP_ECHO_ID: usize = 4;
const IP_CHECKSUM: usize = 10;
const IP_SRC: usize = 12;
const IP_DST: usize = 16;

/// Which end of a packet a rewrite changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Src,
    Dst,
}

impl Side {
    const fn addr_offset(self) -> usize {
        match self {
            Side::Src => IP_SRC,
            Side::Dst => IP_DST,
        }
    }

    /// Offset of the port in a TCP/UDP header.
    const fn port_offset(self) -> usize {
        match self {
            Side::Src => 0,
            Side::Dst => 2,
        }
    }

    const fn opposite(self) -> Side {
        match self {
            Side::Src => Side::Dst,
            Side::Dst => Side::Src,
        }
    }
}

/// Where the parts of a packet are (offsets into the IPv4 packet).
#[derive(Debug, Clone, Copy)]
struct Layout {
    proto: Proto,
    /// Start of the transport header (or ICMP message).
    l4: usize,
    /// End of the packet (`total_len`).
    end: usize,
    icmp_error: bool,
}

/// Where the parts of a quoted packet are (offsets into the ICMP message).
#[derive(Debug, Clone, Copy)]
struct Quote {
    proto: Proto,
    /// Start of the quoted IPv4 header (always [`ICMP_HEADER_LEN`]).
    ip: usize,
    /// Start of the quoted transport header.
    l4: usize,
}

#[inline]
fn is_echo(icmp_type: u8) -> bool {
    icmp_type == icmpv4::Message::ECHO_REQUEST.0 || icmp_type == icmpv4::Message::ECHO_REPLY.0
}

#[inline]
fn is_translated_error(icmp_type: u8) -> bool {
    icmp_type == icmpv4::Message::DEST_UNREACHABLE.0
        || icmp_type == icmpv4::Message::TIME_EXCEEDED.0
        || icmp_type == icmpv4::Message::PARAMETER_PROBLEM.0
}

/// Validates a packet for translation and finds its transport header.
#[inline]
fn locate(ip: &[u8]) -> Result<Layout, NatError> {
    let packet = ipv4::Packet::new_checked(ip).map_err(|_| NatError::Malformed)?;
    if packet.frag_offset_bytes() != 0 {
        return Err(NatError::Fragment);
    }
    let proto = Proto::from_number(packet.protocol().0).ok_or(NatError::UnsupportedProtocol)?;
    let l4 = packet.header_len();
    let end = usize::from(packet.total_len());
    let min_len = match proto {
        Proto::Tcp => TCP_HEADER_LEN,
        Proto::Udp => UDP_HEADER_LEN,
        Proto::Icmp => ICMP_HEADER_LEN,
    };
    if end - l4 < min_len {
        return Err(NatError::Malformed);
    }
    let mut icmp_error = false;
    if proto == Proto::Icmp {
        let icmp_type = ip[l4];
        if is_translated_error(icmp_type) {
            if packet.is_fragment() {
                return Err(NatError::Fragment);
            }
            icmp_error = true;
        } else if !is_echo(icmp_type) {
            return Err(NatError::UnsupportedIcmp);
        }
    }
    Ok(Layout { proto, l4, end, icmp_error })
}

/// Validates the packet quoted in an ICMP error message (`icmp` is the whole
/// message): a quoted IPv4 header, not a non-first fragment, and at least 8
/// bytes of TCP, UDP or ICMP echo after it.
fn locate_quote(icmp: &[u8]) -> Result<Quote, NatError> {
    let ip = ICMP_HEADER_LEN;
    let quoted = &icmp[ip..];
    if quoted.len() < ipv4::HEADER_LEN {
        return Err(NatError::Malformed);
    }
    // Not `new_checked`: the quote is usually shorter than its total length.
    let header = ipv4::Packet::new_unchecked(quoted);
    let header_len = header.header_len();
    if header.version() != 4 || header_len < ipv4::HEADER_LEN {
        return Err(NatError::Malformed);
    }
    if quoted.len() < header_len + 8 {
        return Err(NatError::Malformed);
    }
    if header.frag_offset_bytes() != 0 {
        return Err(NatError::Fragment);
    }
    let proto = Proto::from_number(header.protocol().0).ok_or(NatError::UnsupportedProtocol)?;
    let l4 = ip + header_len;
    if proto == Proto::Icmp && !is_echo(icmp[l4]) {
        // An error about an error is never sent (RFC 1812 §4.3.2.7).
        return Err(NatError::UnsupportedIcmp);
    }
    Ok(Quote { proto, ip, l4 })
}

#[inline]
fn read_addr(buf: &[u8], offset: usize) -> Ipv4Addr {
    Ipv4Addr::from(read_u32(buf, offset))
}

/// Ports of a TCP/UDP header at `l4`, or the echo id twice.
#[inline]
fn ports(buf: &[u8], proto: Proto, l4: usize) -> (u16, u16) {
    match proto {
        Proto::Tcp | Proto::Udp => (read_u16(buf, l4), read_u16(buf, l4 + 2)),
        Proto::Icmp => {
            let id = read_u16(buf, l4 + ICMP_ECHO_ID);
            (id, id)
        }
    }
}

/// Reads the flow of an IPv4 packet (see [`Flow`]). This is the lookup half
/// of NAT; it changes nothing.
///
/// Errors: [`NatError::Malformed`] (not IPv4, or too short for the transport
/// header: TCP 20 bytes, UDP and ICMP 8; an ICMP error must quote an IPv4
/// header and 8 bytes after it), [`NatError::Fragment`],
/// [`NatError::UnsupportedProtocol`], [`NatError::UnsupportedIcmp`].
#[inline]
pub fn parse_flow(ip: &[u8]) -> Result<Flow, NatError> {
    let layout = locate(ip)?;
    if layout.icmp_error {
        let icmp = &ip[layout.l4..layout.end];
        let quote = locate_quote(icmp)?;
        let (sport, dport) = ports(icmp, quote.proto, quote.l4);
        let key = FlowKey {
            proto: quote.proto,
            src: read_addr(icmp, quote.ip + IP_SRC),
            sport,
            dst: read_addr(icmp, quote.ip + IP_DST),
            dport,
        };
        return Ok(Flow { key: key.reversed(), icmp_error: true, tcp_flags: 0 });
    }
    let (sport, dport) = ports(ip, layout.proto, layout.l4);
    let key = FlowKey { proto: layout.proto, src: read_addr(ip, IP_SRC), sport, dst: read_addr(ip, IP_DST), dport };
    let tcp_flags = if layout.proto == Proto::Tcp { ip[layout.l4 + TCP_FLAGS] } else { 0 };
    Ok(Flow { key, icmp_error: false, tcp_flags })
}

/// [`parse_flow`]'s key alone.
#[inline]
pub fn flow_key(ip: &[u8]) -> Result<FlowKey, NatError> {
    parse_flow(ip).map(|flow| flow.key)
}

/// RFC 768: a computed UDP checksum of 0 is sent as 0xffff.
#[inline]
fn udp_nonzero(checksum: u16) -> u16 {
    if checksum == 0 {
        0xffff
    } else {
        checksum
    }
}

/// Writes an incrementally updated ICMP checksum. The two encodings of zero
/// are where eqn. 3 can differ from a full computation (an all-zero message
/// needs 0xffff; a chain of updates can end on 0xffff where 0x0000 is
/// canonical): such a result is recomputed over `message` when the whole
/// message is there, and left as it is (still valid) otherwise.
fn write_icmp_checksum(message: &mut [u8], updated: u16, complete: bool) {
    write_u16(message, ICMP_CHECKSUM, updated);
    if (updated == 0 || updated == 0xffff) && complete {
        write_u16(message, ICMP_CHECKSUM, 0);
        let full = checksum::checksum(message);
        write_u16(message, ICMP_CHECKSUM, full);
    }
}

/// Changes the IPv4 address at `offset` and updates the IPv4 header checksum.
#[inline]
fn set_ip_addr(ip: &mut [u8], offset: usize, new_addr: u32) {
    let old_addr = read_u32(ip, offset);
    let updated = checksum::update32(read_u16(ip, IP_CHECKSUM), old_addr, new_addr);
    write_u32(ip, offset, new_addr);
    write_u16(ip, IP_CHECKSUM, updated);
}

#[inline]
fn rewrite(ip: &mut [u8], side: Side, addr: Ipv4Addr, port: u16) -> Result<(), NatError> {
    let layout = locate(ip)?;
    if layout.icmp_error {
        return Err(NatError::WrongKind);
    }
    let new_addr = u32::from(addr);
    let old_addr = read_u32(ip, side.addr_offset());
    let l4 = layout.l4;
    match layout.proto {
        Proto::Tcp => {
            let port_at = l4 + side.port_offset();
            let old_port = read_u16(ip, port_at);
            let sum_at = l4 + TCP_CHECKSUM;
            let c = checksum::update32(read_u16(ip, sum_at), old_addr, new_addr);
            let c = checksum::update16(c, old_port, port);
            write_u16(ip, sum_at, c);
            write_u16(ip, port_at, port);
        }
        Proto::Udp => {
            let port_at = l4 + side.port_offset();
            let old_port = read_u16(ip, port_at);
            let sum_at = l4 + UDP_CHECKSUM;
            let old_sum = read_u16(ip, sum_at);
            if old_sum != 0 {
                let c = checksum::update32(old_sum, old_addr, new_addr);
                let c = checksum::update16(c, old_port, port);
                write_u16(ip, sum_at, udp_nonzero(c));
            }
            write_u16(ip, port_at, port);
        }
        Proto::Icmp => {
            let id_at = l4 + ICMP_ECHO_ID;
            let old_id = read_u16(ip, id_at);
            let updated = checksum::update16(read_u16(ip, l4 + ICMP_CHECKSUM), old_id, port);
            write_u16(ip, id_at, port);
            let complete = !ipv4::Packet::new_unchecked(&ip[..]).more_frags();
            write_icmp_checksum(&mut ip[l4..layout.end], updated, complete);
        }
    }
    set_ip_addr(ip, side.addr_offset(), new_addr);
    Ok(())
}

/// Rewrites the source address and source port (TCP/UDP) or echo identifier
/// (ICMP) of `ip`, in place, with incremental checksum updates. The outbound
/// translation: `(addr, port)` is the mapping's public endpoint.
///
/// Errors as [`parse_flow`], plus [`NatError::WrongKind`] for an ICMP error
/// (use [`translate_icmp_error_outbound`]). On error `ip` is unchanged.
#[inline]
pub fn rewrite_src(ip: &mut [u8], addr: Ipv4Addr, port: u16) -> Result<(), NatError> {
    rewrite(ip, Side::Src, addr, port)
}

/// Rewrites the destination address and destination port (TCP/UDP) or echo
/// identifier (ICMP) of `ip`, in place. The inbound translation: `(addr,
/// port)` is the mapping's inside endpoint. Errors as [`rewrite_src`].
#[inline]
pub fn rewrite_dst(ip: &mut [u8], addr: Ipv4Addr, port: u16) -> Result<(), NatError> {
    rewrite(ip, Side::Dst, addr, port)
}

/// Translates an ICMP error arriving from outside (RFC 5508 §4.2): the outer
/// destination, and the quoted packet's source address and source port (or
/// echo id), become `inside_addr`/`inside_port`. Look the mapping up with
/// [`parse_flow`]'s key (by its destination, as for any inbound packet).
///
/// Errors as [`parse_flow`], plus [`NatError::WrongKind`] if `ip` is not an
/// ICMP error and [`NatError::BadChecksum`] if its ICMP checksum is wrong. On
/// error `ip` is unchanged.
pub fn translate_icmp_error_inbound(ip: &mut [u8], inside_addr: Ipv4Addr, inside_port: u16) -> Result<(), NatError> {
    translate_icmp_error(ip, Side::Dst, inside_addr, inside_port)
}

/// Translates an ICMP error sent by an inside host about a packet it received
/// through the NAT: the outer source, and the quoted packet's destination
/// address and destination port (or echo id), become
/// `public_addr`/`public_port`. Look the mapping up with [`parse_flow`]'s key
/// (by its source, as for any outbound packet). Errors as
/// [`translate_icmp_error_inbound`].
pub fn translate_icmp_error_outbound(ip: &mut [u8], public_addr: Ipv4Addr, public_port: u16) -> Result<(), NatError> {
    translate_icmp_error(ip, Side::Src, public_addr, public_port)
}

fn translate_icmp_error(ip: &mut [u8], outer: Side, addr: Ipv4Addr, port: u16) -> Result<(), NatError> {
    let layout = locate(ip)?;
    if !layout.icmp_error {
        return Err(NatError::WrongKind);
    }
    let quote = locate_quote(&ip[layout.l4..layout.end])?;
    if checksum::sum(&ip[layout.l4..layout.end]) != 0xffff {
        return Err(NatError::BadChecksum);
    }
    // From here on nothing can fail.
    let new_addr = u32::from(addr);
    let inner = outer.opposite();
    let icmp = &mut ip[layout.l4..layout.end];
    let mut icmp_sum = read_u16(icmp, ICMP_CHECKSUM);

    // Quoted IPv4 header: address and header checksum.
    let addr_at = quote.ip + inner.addr_offset();
    let old_addr = read_u32(icmp, addr_at);
    let ip_sum_at = quote.ip + IP_CHECKSUM;
    let old_ip_sum = read_u16(icmp, ip_sum_at);
    let new_ip_sum = checksum::update32(old_ip_sum, old_addr, new_addr);
    write_u32(icmp, addr_at, new_addr);
    write_u16(icmp, ip_sum_at, new_ip_sum);
    icmp_sum = checksum::update32(icmp_sum, old_addr, new_addr);
    icmp_sum = checksum::update16(icmp_sum, old_ip_sum, new_ip_sum);

    // Quoted transport header: port or id, and its checksum when quoted.
    icmp_sum = match quote.proto {
        Proto::Tcp | Proto::Udp => quote_rewrite_port(icmp, &quote, inner, (old_addr, new_addr), port, icmp_sum),
        Proto::Icmp => quote_rewrite_echo_id(icmp, &quote, port, icmp_sum),
    };
    write_icmp_checksum(icmp, icmp_sum, true);

    set_ip_addr(ip, outer.addr_offset(), new_addr);
    Ok(())
}

/// Rewrites the quoted TCP/UDP port on `inner` to `port`, and the quoted
/// checksum when it is there (a zero UDP checksum stays zero); returns the
/// ICMP checksum updated for every change.
fn quote_rewrite_port(
    icmp: &mut [u8],
    quote: &Quote,
    inner: Side,
    (old_addr, new_addr): (u32, u32),
    port: u16,
    mut icmp_sum: u16,
) -> u16 {
    let port_at = quote.l4 + inner.port_offset();
    let old_port = read_u16(icmp, port_at);
    let sum_at = quote.l4 + if quote.proto == Proto::Tcp { TCP_CHECKSUM } else { UDP_CHECKSUM };
    if sum_at + 2 <= icmp.len() {
        let old_sum = read_u16(icmp, sum_at);
        if quote.proto == Proto::Tcp || old_sum != 0 {
            let c = checksum::update32(old_sum, old_addr, new_addr);
            let c = checksum::update16(c, old_port, port);
            let c = if quote.proto == Proto::Udp { udp_nonzero(c) } else { c };
            write_u16(icmp, sum_at, c);
            icmp_sum = checksum::update16(icmp_sum, old_sum, c);
        }
    }
    write_u16(icmp, port_at, port);
    checksum::update16(icmp_sum, old_port, port)
}

/// Rewrites the quoted echo's identifier to `id` and its checksum (checked
/// for a 0x0000 result when the whole echo is quoted); returns the ICMP
/// checksum updated for every change.
fn quote_rewrite_echo_id(icmp: &mut [u8], quote: &Quote, id: u16, icmp_sum: u16) -> u16 {
    let quote_end = icmp.len();
    let id_at = quote.l4 + ICMP_ECHO_ID;
    let old_id = read_u16(icmp, id_at);
    let sum_at = quote.l4 + ICMP_CHECKSUM;
    let old_sum = read_u16(icmp, sum_at);
    let updated = checksum::update16(old_sum, old_id, id);
    write_u16(icmp, id_at, id);
    // Whole quoted echo present? Then a 0x0000 result can be checked.
    // (A quoted header can lie about its length: trust it only when it
    // covers the 8-byte echo header and fits the quote.)
    let quoted_total = usize::from(read_u16(icmp, quote.ip + 2));
    let complete = quoted_total >= quote.l4 - quote.ip + ICMP_HEADER_LEN
        && quote_end - quote.ip >= quoted_total
        && read_u16(icmp, quote.ip + 6) & 0x2000 == 0;
    let echo_end = if complete { quote.ip + quoted_total } else { quote_end };
    write_icmp_checksum(&mut icmp[quote.l4..echo_end], updated, complete);
    let new_sum = read_u16(icmp, sum_at);
    let icmp_sum = checksum::update16(icmp_sum, old_id, id);
    checksum::update16(icmp_sum, old_sum, new_sum)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Test packet builders: every checksum computed in full, independently
    /// of the incremental code under test.
    pub(crate) mod build {
        use super::*;

        pub fn ip(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, options: &[u8], l4: &[u8]) -> Vec<u8> {
            assert_eq!(options.len() % 4, 0);
            let header_len = 20 + options.len();
            let total = header_len + l4.len();
            let mut p = vec![0u8; total];
            p[0] = 0x40 | (header_len / 4) as u8;
            p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
            p[6] = 0x40; // DF
            p[8] = 64;
            p[9] = proto;
            p[12..16].copy_from_slice(&src.octets());
            p[16..20].copy_from_slice(&dst.octets());
            p[20..header_len].copy_from_slice(options);
            let c = checksum::checksum(&p[..header_len]);
            p[10..12].copy_from_slice(&c.to_be_bytes());
            p[header_len..].copy_from_slice(l4);
            p
        }

        fn transport_checksum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4: &[u8]) -> u16 {
            let pseudo = checksum::pseudo_header_v4(src, dst, proto, l4.len() as u16);
            checksum::finish(checksum::add(pseudo, checksum::sum(l4)))
        }

        pub fn tcp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
            let mut l4 = vec![0u8; 20 + payload.len()];
            l4[0..2].copy_from_slice(&sport.to_be_bytes());
            l4[2..4].copy_from_slice(&dport.to_be_bytes());
            l4[4..8].copy_from_slice(&0x0102_0304u32.to_be_bytes());
            l4[12] = 5 << 4;
            l4[13] = flags;
            l4[14..16].copy_from_slice(&64240u16.to_be_bytes());
            l4[20..].copy_from_slice(payload);
            let c = transport_checksum(src, dst, 6, &l4);
            l4[16..18].copy_from_slice(&c.to_be_bytes());
            l4
        }

        pub fn udp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8], no_checksum: bool) -> Vec<u8> {
            let mut l4 = vec![0u8; 8 + payload.len()];
            l4[0..2].copy_from_slice(&sport.to_be_bytes());
            l4[2..4].copy_from_slice(&dport.to_be_bytes());
            let len = l4.len() as u16;
            l4[4..6].copy_from_slice(&len.to_be_bytes());
            l4[8..].copy_from_slice(payload);
            if !no_checksum {
                let c = udp_nonzero(transport_checksum(src, dst, 17, &l4));
                l4[6..8].copy_from_slice(&c.to_be_bytes());
            }
            l4
        }

        pub fn echo(msg_type: u8, id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
            let mut l4 = vec![0u8; 8 + data.len()];
            l4[0] = msg_type;
            l4[4..6].copy_from_slice(&id.to_be_bytes());
            l4[6..8].copy_from_slice(&seq.to_be_bytes());
            l4[8..].copy_from_slice(data);
            let c = checksum::checksum(&l4);
            l4[2..4].copy_from_slice(&c.to_be_bytes());
            l4
        }

        pub fn icmp_error(msg_type: u8, code: u8, quote: &[u8]) -> Vec<u8> {
            let mut l4 = vec![0u8; 8 + quote.len()];
            l4[0] = msg_type;
            l4[1] = code;
            l4[8..].copy_from_slice(quote);
            let c = checksum::checksum(&l4);
            l4[2..4].copy_from_slice(&c.to_be_bytes());
            l4
        }
    }

    /// Checksums as a full computation would write them, for every layer
    /// present (the transport only if the packet is whole and unfragmented).
    /// Panics with a message on the first wrong one.
    pub(crate) fn assert_checksums_canonical(ip: &[u8]) {
        let packet = ipv4::Packet::new_checked(ip).unwrap();
        let mut header = packet.header().to_vec();
        let stored = read_u16(&header, IP_CHECKSUM);
        write_u16(&mut header, IP_CHECKSUM, 0);
        assert_eq!(stored, checksum::checksum(&header), "IPv4 header checksum");
        if packet.is_fragment() {
            return;
        }
        let l4 = packet.payload();
        let (src, dst) = (packet.src_addr(), packet.dst_addr());
        let full = |sum_at: usize, pseudo: bool| {
            let mut copy = l4.to_vec();
            write_u16(&mut copy, sum_at, 0);
            let mut s = checksum::sum(&copy);
            if pseudo {
                s = checksum::add(s, checksum::pseudo_header_v4(src, dst, packet.protocol().0, l4.len() as u16));
            }
            checksum::finish(s)
        };
        match packet.protocol().0 {
            6 => assert_eq!(read_u16(l4, 16), full(16, true), "TCP checksum"),
            17 => {
                let stored = read_u16(l4, 6);
                if stored != 0 {
                    assert_eq!(stored, udp_nonzero(full(6, true)), "UDP checksum");
                }
            }
            1 => {
                assert_eq!(read_u16(l4, 2), full(2, false), "ICMP checksum");
                assert_eq!(checksum::sum(l4), 0xffff);
            }
            _ => {}
        }
    }

    const INSIDE: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 10);
    const PUBLIC: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
    const SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
    const ROUTER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);

    fn udp_packet(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
        build::ip(src, dst, 17, &[], &build::udp(src, dst, sport, dport, payload, false))
    }

    #[test]
    fn flow_of_each_kind() {
        let tcp = build::ip(INSIDE, SERVER, 6, &[], &build::tcp(INSIDE, SERVER, 40000, 443, tcp_flags::SYN, b""));
        let flow = parse_flow(&tcp).unwrap();
        assert_eq!(flow.key, FlowKey { proto: Proto::Tcp, src: INSIDE, sport: 40000, dst: SERVER, dport: 443 });
        assert!(!flow.icmp_error);
        assert_eq!(flow.tcp_flags, tcp_flags::SYN);

        let udp = udp_packet(INSIDE, 5353, SERVER, 53, b"q");
        assert_eq!(
            flow_key(&udp).unwrap(),
            FlowKey { proto: Proto::Udp, src: INSIDE, sport: 5353, dst: SERVER, dport: 53 }
        );
        assert_eq!(parse_flow(&udp).unwrap().tcp_flags, 0);

        let ping = build::ip(INSIDE, SERVER, 1, &[], &build::echo(8, 77, 1, b"abc"));
        assert_eq!(
            flow_key(&ping).unwrap(),
            FlowKey { proto: Proto::Icmp, src: INSIDE, sport: 77, dst: SERVER, dport: 77 }
        );

        // Port unreachable from the server about a translated datagram: the
        // key is the datagram's, reversed (an inbound key).
        let sent = udp_packet(PUBLIC, 40000, SERVER, 53, b"query");
        let error = build::ip(SERVER, PUBLIC, 1, &[], &build::icmp_error(3, 3, &sent));
        let flow = parse_flow(&error).unwrap();
        assert!(flow.icmp_error);
        assert_eq!(flow.key, FlowKey { proto: Proto::Udp, src: SERVER, sport: 53, dst: PUBLIC, dport: 40000 });

        // Time exceeded about an echo request: id in both ports.
        let ping = build::ip(PUBLIC, SERVER, 1, &[], &build::echo(8, 2000, 1, &[0; 32]));
        let error = build::ip(ROUTER, PUBLIC, 1, &[], &build::icmp_error(11, 0, &ping[..28]));
        assert_eq!(
            parse_flow(&error).unwrap().key,
            FlowKey { proto: Proto::Icmp, src: SERVER, sport: 2000, dst: PUBLIC, dport: 2000 }
        );
    }

    #[test]
    fn flow_rejects() {
        let udp = udp_packet(INSIDE, 5353, SERVER, 53, b"q");
        assert_eq!(parse_flow(&udp[..19]), Err(NatError::Malformed));
        assert_eq!(parse_flow(&udp[..27]), Err(NatError::Malformed)); // total_len > buffer
        let short = build::ip(INSIDE, SERVER, 17, &[], &[0; 7]);
        assert_eq!(parse_flow(&short), Err(NatError::Malformed));
        assert_eq!(parse_flow(&build::ip(INSIDE, SERVER, 6, &[], &[0; 19])), Err(NatError::Malformed));

        let gre = build::ip(INSIDE, SERVER, 47, &[], &[0; 8]);
        assert_eq!(parse_flow(&gre), Err(NatError::UnsupportedProtocol));

        let mut later_fragment = udp.clone();
        later_fragment[6..8].copy_from_slice(&0x0001u16.to_be_bytes());
        assert_eq!(parse_flow(&later_fragment), Err(NatError::Fragment));
        let mut first_fragment = udp.clone();
        first_fragment[6] = 0x20; // MF, offset 0: ports present
        assert_eq!(parse_flow(&first_fragment).unwrap().key.sport, 5353);

        let timestamp = build::ip(INSIDE, SERVER, 1, &[], &build::echo(13, 1, 1, &[0; 12]));
        assert_eq!(parse_flow(&timestamp), Err(NatError::UnsupportedIcmp));
        let redirect = build::ip(ROUTER, INSIDE, 1, &[], &build::icmp_error(5, 1, &udp));
        assert_eq!(parse_flow(&redirect), Err(NatError::UnsupportedIcmp));

        // Errors: quote too short, quoting an error, a later fragment, GRE.
        let error = |quote: &[u8]| build::ip(SERVER, PUBLIC, 1, &[], &build::icmp_error(3, 3, quote));
        assert_eq!(parse_flow(&error(&udp[..27])), Err(NatError::Malformed));
        assert_eq!(parse_flow(&error(&udp[..19])), Err(NatError::Malformed));
        let mut v6 = udp.clone();
        v6[0] = 0x65;
        assert_eq!(parse_flow(&error(&v6)), Err(NatError::Malformed));
        let nested = error(&udp);
        assert_eq!(parse_flow(&error(&nested)), Err(NatError::UnsupportedIcmp));
        assert_eq!(parse_flow(&error(&later_fragment)), Err(NatError::Fragment));
        assert_eq!(parse_flow(&error(&gre)), Err(NatError::UnsupportedProtocol));
        let mut fragmented_error = error(&udp);
        fragmented_error[6] = 0x20;
        assert_eq!(parse_flow(&fragmented_error), Err(NatError::Fragment));
    }

    #[test]
    fn rewrite_udp_and_back() {
        let original = udp_packet(INSIDE, 5353, SERVER, 53, b"hello");
        let mut p = original.clone();
        rewrite_src(&mut p, PUBLIC, 40001).unwrap();
        assert_checksums_canonical(&p);
        assert_eq!(
            flow_key(&p).unwrap(),
            FlowKey { proto: Proto::Udp, src: PUBLIC, sport: 40001, dst: SERVER, dport: 53 }
        );
        assert_eq!(&p[28..], b"hello");
        rewrite_src(&mut p, INSIDE, 5353).unwrap();
        assert_eq!(p, original);

        // The reply, inbound.
        let mut reply = udp_packet(SERVER, 53, PUBLIC, 40001, b"answer");
        rewrite_dst(&mut reply, INSIDE, 5353).unwrap();
        assert_checksums_canonical(&reply);
        assert_eq!(
            flow_key(&reply).unwrap(),
            FlowKey { proto: Proto::Udp, src: SERVER, sport: 53, dst: INSIDE, dport: 5353 }
        );
    }

    #[test]
    fn udp_zero_checksum_stays_zero() {
        let mut p = build::ip(INSIDE, SERVER, 17, &[], &build::udp(INSIDE, SERVER, 5353, 53, b"x", true));
        rewrite_src(&mut p, PUBLIC, 40001).unwrap();
        assert_eq!(read_u16(&p, 20 + 6), 0);
        assert_eq!(read_u16(&p, 20), 40001);
        assert_checksums_canonical(&p);
    }

    #[test]
    fn tcp_and_echo_rewrites() {
        let mut p = build::ip(
            INSIDE,
            SERVER,
            6,
            &[1, 1, 1, 0],
            &build::tcp(INSIDE, SERVER, 40000, 443, tcp_flags::SYN, b"data"),
        );
        rewrite_src(&mut p, PUBLIC, 1024).unwrap();
        assert_checksums_canonical(&p);
        assert_eq!(flow_key(&p).unwrap().sport, 1024);

        let mut ping = build::ip(INSIDE, SERVER, 1, &[], &build::echo(8, 7, 3, b"payload"));
        rewrite_src(&mut ping, PUBLIC, 5000).unwrap();
        assert_checksums_canonical(&ping);
        assert_eq!(
            flow_key(&ping).unwrap(),
            FlowKey { proto: Proto::Icmp, src: PUBLIC, sport: 5000, dst: SERVER, dport: 5000 }
        );
        assert_eq!(read_u16(&ping, 26), 3); // sequence kept

        let mut pong = build::ip(SERVER, PUBLIC, 1, &[], &build::echo(0, 5000, 3, b"payload"));
        rewrite_dst(&mut pong, INSIDE, 7).unwrap();
        assert_checksums_canonical(&pong);
        assert_eq!(
            flow_key(&pong).unwrap(),
            FlowKey { proto: Proto::Icmp, src: SERVER, sport: 7, dst: INSIDE, dport: 7 }
        );
    }

    #[test]
    fn all_zero_echo_reply_gets_0xffff() {
        // Echo reply, id/seq/data 0: the message sums to 0, its checksum is
        // 0xffff; translating id 1024 -> 0 must give that back, not 0x0000.
        let mut pong = build::ip(SERVER, PUBLIC, 1, &[], &build::echo(0, 1024, 0, b""));
        rewrite_dst(&mut pong, INSIDE, 0).unwrap();
        assert_eq!(read_u16(&pong, 22), 0xffff);
        assert_checksums_canonical(&pong);
    }

    #[test]
    fn rewrite_refuses_icmp_errors_and_vice_versa() {
        let sent = udp_packet(PUBLIC, 40000, SERVER, 53, b"query");
        let mut error = build::ip(SERVER, PUBLIC, 1, &[], &build::icmp_error(3, 3, &sent));
        let copy = error.clone();
        assert_eq!(rewrite_dst(&mut error, INSIDE, 1), Err(NatError::WrongKind));
        assert_eq!(error, copy);
        let mut udp = sent.clone();
        assert_eq!(translate_icmp_error_inbound(&mut udp, INSIDE, 1), Err(NatError::WrongKind));
        assert_eq!(translate_icmp_error_outbound(&mut udp, INSIDE, 1), Err(NatError::WrongKind));
        assert_eq!(udp, sent);
    }

    #[test]
    fn icmp_error_with_bad_checksum_is_refused() {
        let sent = udp_packet(PUBLIC, 40000, SERVER, 53, b"query");
        let mut error = build::ip(SERVER, PUBLIC, 1, &[], &build::icmp_error(3, 3, &sent));
        let last = error.len() - 1;
        error[last] ^= 0x40;
        let copy = error.clone();
        assert_eq!(translate_icmp_error_inbound(&mut error, INSIDE, 5353), Err(NatError::BadChecksum));
        assert_eq!(error, copy);
    }

    /// Port unreachable from 203.0.113.7 about 198.51.100.1:40000 →
    /// 203.0.113.7:53 "query", sent to the NAT's public address, and the same
    /// error as the subscriber 100.64.0.10:5353 must receive it. Both
    /// written out byte by byte; every checksum was computed in full by a
    /// separate Python script, not by this crate.
    #[rustfmt::skip]
    const PORT_UNREACHABLE_IN: [u8; 61] = [
        // outer IPv4: 203.0.113.7 -> 198.51.100.1, ICMP, total 61
        0x45, 0x00, 0x00, 0x3d, 0xbe, 0xef, 0x00, 0x00, 0x40, 0x01, 0x55, 0x94,
        203, 0, 113, 7, 198, 51, 100, 1,
        // ICMP: type 3 code 3, checksum, unused
        0x03, 0x03, 0x63, 0x58, 0x00, 0x00, 0x00, 0x00,
        // quoted IPv4: 198.51.100.1 -> 203.0.113.7, UDP, total 33, id 0x1234, DF, TTL 63
        0x45, 0x00, 0x00, 0x21, 0x12, 0x34, 0x40, 0x00, 0x3f, 0x11, 0xc3, 0x5b,
        198, 51, 100, 1, 203, 0, 113, 7,
        // quoted UDP: 40000 -> 53, length 13, checksum; "query"
        0x9c, 0x40, 0x00, 0x35, 0x00, 0x0d, 0xad, 0x39,
        b'q', b'u', b'e', b'r', b'y',
    ];

    #[rustfmt::skip]
    const PORT_UNREACHABLE_OUT: [u8; 61] = [
        // outer IPv4: 203.0.113.7 -> 100.64.0.10
        0x45, 0x00, 0x00, 0x3d, 0xbe, 0xef, 0x00, 0x00, 0x40, 0x01, 0x1b, 0x7f,
        203, 0, 113, 7, 100, 64, 0, 10,
        0x03, 0x03, 0x9d, 0x6d, 0x00, 0x00, 0x00, 0x00,
        // quoted IPv4: 100.64.0.10 -> 203.0.113.7
        0x45, 0x00, 0x00, 0x21, 0x12, 0x34, 0x40, 0x00, 0x3f, 0x11, 0x89, 0x46,
        100, 64, 0, 10, 203, 0, 113, 7,
        // quoted UDP: 5353 -> 53
        0x14, 0xe9, 0x00, 0x35, 0x00, 0x0d, 0xfa, 0x7b,
        b'q', b'u', b'e', b'r', b'y',
    ];

    #[test]
    fn icmp_error_inbound_byte_for_byte() {
        let mut p = PORT_UNREACHABLE_IN;
        assert_checksums_canonical(&p);
        translate_icmp_error_inbound(&mut p, INSIDE, 5353).unwrap();
        assert_eq!(p, PORT_UNREACHABLE_OUT);
        // And back: the mirror translation restores the original bytes.
        let mut back = p;
        translate_icmp_error_inbound(&mut back, PUBLIC, 40000).unwrap();
        // (outer dst back to PUBLIC, quoted src back to PUBLIC:40000)
        assert_eq!(back, PORT_UNREACHABLE_IN);
    }

    #[test]
    fn icmp_error_inbound_matches_full_rebuild() {
        // TCP, whole quote; compared against a packet rebuilt from scratch.
        let sent =
            build::ip(PUBLIC, SERVER, 6, &[], &build::tcp(PUBLIC, SERVER, 40000, 443, tcp_flags::SYN, b"0123456789"));
        let mut error = build::ip(ROUTER, PUBLIC, 1, &[7, 4, 4, 0], &build::icmp_error(11, 0, &sent));
        translate_icmp_error_inbound(&mut error, INSIDE, 33333).unwrap();
        let original =
            build::ip(INSIDE, SERVER, 6, &[], &build::tcp(INSIDE, SERVER, 33333, 443, tcp_flags::SYN, b"0123456789"));
        let expected = build::ip(ROUTER, INSIDE, 1, &[7, 4, 4, 0], &build::icmp_error(11, 0, &original));
        assert_eq!(error, expected);

        // Echo request quoted with 8 bytes only (RFC 792 minimum).
        let ping = build::ip(PUBLIC, SERVER, 1, &[], &build::echo(8, 2000, 9, &[0xab; 40]));
        let mut error = build::ip(ROUTER, PUBLIC, 1, &[], &build::icmp_error(11, 0, &ping[..28]));
        translate_icmp_error_inbound(&mut error, INSIDE, 7).unwrap();
        let original = build::ip(INSIDE, SERVER, 1, &[], &build::echo(8, 7, 9, &[0xab; 40]));
        let expected = build::ip(ROUTER, INSIDE, 1, &[], &build::icmp_error(11, 0, &original[..28]));
        assert_eq!(error, expected);
    }

    #[test]
    fn icmp_error_outbound_matches_full_rebuild() {
        // The subscriber answers the server's datagram with port unreachable.
        let received = udp_packet(SERVER, 53, INSIDE, 5353, b"reply");
        let mut error = build::ip(INSIDE, SERVER, 1, &[], &build::icmp_error(3, 3, &received));
        let flow = parse_flow(&error).unwrap();
        assert!(flow.icmp_error);
        assert_eq!(flow.key, FlowKey { proto: Proto::Udp, src: INSIDE, sport: 5353, dst: SERVER, dport: 53 });
        translate_icmp_error_outbound(&mut error, PUBLIC, 40000).unwrap();
        let as_sent = udp_packet(SERVER, 53, PUBLIC, 40000, b"reply");
        let expected = build::ip(PUBLIC, SERVER, 1, &[], &build::icmp_error(3, 3, &as_sent));
        assert_eq!(error, expected);
    }

    #[test]
    fn truncated_tcp_quote_keeps_checksum_field_rule() {
        let sent = build::ip(PUBLIC, SERVER, 6, &[], &build::tcp(PUBLIC, SERVER, 40000, 443, 0x18, b"xyz"));
        let original = build::ip(INSIDE, SERVER, 6, &[], &build::tcp(INSIDE, SERVER, 33333, 443, 0x18, b"xyz"));
        for quoted in [28, 36, 37, 38, 39, 40, 43] {
            let mut error = build::ip(ROUTER, PUBLIC, 1, &[], &build::icmp_error(3, 4, &sent[..quoted]));
            translate_icmp_error_inbound(&mut error, INSIDE, 33333).unwrap();
            let expected_quote = expected_quote(&original, &sent, quoted);
            let expected = build::ip(ROUTER, INSIDE, 1, &[], &build::icmp_error(3, 4, &expected_quote));
            assert_eq!(error, expected, "quote of {quoted} bytes");
        }
        // Quote ending inside the TCP checksum: its one byte is left alone.
        let mut error = build::ip(ROUTER, PUBLIC, 1, &[], &build::icmp_error(3, 4, &sent[..37]));
        translate_icmp_error_inbound(&mut error, INSIDE, 33333).unwrap();
        assert_eq!(error[28 + 36], sent[36]);
    }

    #[test]
    fn hairpin_two_rewrites() {
        // A (100.64.0.10:5000) sends to B's public endpoint 198.51.100.2:6000;
        // the NAT maps A's source to 198.51.100.1:7000 and B's destination to
        // 100.64.0.11:6001.
        let b_inside = Ipv4Addr::new(100, 64, 0, 11);
        let b_public = Ipv4Addr::new(198, 51, 100, 2);
        let mut p = udp_packet(INSIDE, 5000, b_public, 6000, b"hairpin");
        rewrite_src(&mut p, PUBLIC, 7000).unwrap();
        rewrite_dst(&mut p, b_inside, 6001).unwrap();
        assert_checksums_canonical(&p);
        assert_eq!(p, udp_packet(PUBLIC, 7000, b_inside, 6001, b"hairpin"));
    }

    /// The first `len` bytes of `translated`, except that a TCP checksum cut
    /// in half by the end of the quote keeps its byte from `original` (there
    /// is no way to update half a checksum).
    fn expected_quote(translated: &[u8], original: &[u8], len: usize) -> Vec<u8> {
        let mut quote = translated[..len].to_vec();
        let header_len = usize::from(translated[0] & 0x0f) * 4;
        if translated[9] == 6 && len == header_len + TCP_CHECKSUM + 1 {
            quote[len - 1] = original[len - 1];
        }
        quote
    }

    // ---- property tests ----

    #[derive(Debug, Clone)]
    struct Spec {
        kind: u8, // 0 TCP, 1 UDP, 2 UDP without checksum, 3 echo request, 4 echo reply
        src: Ipv4Addr,
        dst: Ipv4Addr,
        sport: u16,
        dport: u16,
        flags: u8,
        options: Vec<u8>,
        payload: Vec<u8>,
    }

    fn arb_spec() -> impl Strategy<Value = Spec> {
        (
            0u8..5,
            any::<u32>(),
            any::<u32>(),
            any::<u16>(),
            any::<u16>(),
            any::<u8>(),
            (0usize..=10).prop_flat_map(|words| proptest::collection::vec(any::<u8>(), words * 4)),
            proptest::collection::vec(any::<u8>(), 0..80),
        )
            .prop_map(|(kind, src, dst, sport, dport, flags, options, payload)| Spec {
                kind,
                src: src.into(),
                dst: dst.into(),
                sport,
                dport,
                flags,
                options,
                payload,
            })
    }

    fn packet_of(s: &Spec) -> Vec<u8> {
        let (proto, l4) = match s.kind {
            0 => (6, build::tcp(s.src, s.dst, s.sport, s.dport, s.flags, &s.payload)),
            1 | 2 => (17, build::udp(s.src, s.dst, s.sport, s.dport, &s.payload, s.kind == 2)),
            3 => (1, build::echo(8, s.sport, s.dport, &s.payload)),
            _ => (1, build::echo(0, s.sport, s.dport, &s.payload)),
        };
        build::ip(s.src, s.dst, proto, &s.options, &l4)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

        /// Rewriting is the same as building the packet with the new values,
        /// byte for byte (so every checksum equals a full recomputation), in
        /// both directions, and rewriting back restores the original.
        #[test]
        fn rewrite_equals_rebuild(spec in arb_spec(), addr in any::<u32>(), port in any::<u16>(), dst_side in any::<bool>()) {
            let addr = Ipv4Addr::from(addr);
            let original = packet_of(&spec);
            let mut p = original.clone();
            let mut expected = spec.clone();
            let is_icmp = spec.kind >= 3;
            if dst_side {
                rewrite_dst(&mut p, addr, port).unwrap();
                expected.dst = addr;
                if is_icmp { expected.sport = port } else { expected.dport = port }
            } else {
                rewrite_src(&mut p, addr, port).unwrap();
                expected.src = addr;
                expected.sport = port;
            }
            let rebuilt = packet_of(&expected);
            if spec.kind == 1 {
                // UDP: 0 and 0xffff stand for the same sum; a computed 0 is
                // sent as 0xffff, so both sides are non-zero.
                prop_assert_ne!(read_u16(&p, 20 + spec.options.len() + 6), 0);
            }
            prop_assert_eq!(&p, &rebuilt);
            assert_checksums_canonical(&p);
            let key = flow_key(&p).unwrap();
            if dst_side { prop_assert_eq!((key.dst, key.dport), (addr, port)); }
            else { prop_assert_eq!((key.src, key.sport), (addr, port)); }

            if dst_side {
                rewrite_dst(&mut p, spec.dst, if is_icmp { spec.sport } else { spec.dport }).unwrap();
            } else {
                rewrite_src(&mut p, spec.src, spec.sport).unwrap();
            }
            prop_assert_eq!(p, original);
        }

        /// An ICMP error about any flow, quoted to any length the RFCs allow,
        /// translates to exactly the error about the translated packet, quoted
        /// to the same length, in both directions.
        #[test]
        fn icmp_error_equals_rebuild(
            spec in arb_spec(),
            quote_extra in 0usize..200,
            error_type in prop_oneof![Just(3u8), Just(11u8), Just(12u8)],
            code in 0u8..16,
            reporter in any::<u32>(),
            addr in any::<u32>(),
            port in any::<u16>(),
            inbound in any::<bool>(),
        ) {
            let addr = Ipv4Addr::from(addr);
            let reporter = Ipv4Addr::from(reporter);
            let quoted = packet_of(&spec);
            let quote_len = (20 + spec.options.len() + 8 + quote_extra).min(quoted.len());
            let mut translated_spec = spec.clone();
            let is_icmp = spec.kind >= 3;
            let (outer_src, outer_dst) = if inbound {
                // The error reports a packet we sent: it goes to its source.
                translated_spec.src = addr;
                translated_spec.sport = port;
                ((reporter, spec.src), (reporter, addr))
            } else {
                // The inside host reports a packet it received: from its destination.
                translated_spec.dst = addr;
                if is_icmp { translated_spec.sport = port } else { translated_spec.dport = port }
                ((spec.dst, spec.src), (addr, spec.src))
            };
            let mut p = build::ip(outer_src.0, outer_src.1, 1, &[], &build::icmp_error(error_type, code, &quoted[..quote_len]));
            let flow = parse_flow(&p).unwrap();
            prop_assert!(flow.icmp_error);
            if inbound {
                translate_icmp_error_inbound(&mut p, addr, port).unwrap();
            } else {
                translate_icmp_error_outbound(&mut p, addr, port).unwrap();
            }
            let translated = packet_of(&translated_spec);
            let quote = expected_quote(&translated, &quoted, quote_len);
            let expected = build::ip(outer_dst.0, outer_dst.1, 1, &[], &build::icmp_error(error_type, code, &quote));
            prop_assert_eq!(&p, &expected);
            assert_checksums_canonical(&p);
        }

        /// An error quoting a packet whose quoted header lies about its
        /// lengths and flags: no panic; when translated, the checksums that
        /// cover what is there are right.
        #[test]
        fn quoted_header_lies_never_panic(
            spec in arb_spec(),
            quoted_total in prop_oneof![0u16..100, any::<u16>()],
            quoted_flags in any::<u8>(),
            quote_extra in 0usize..100,
            addr in any::<u32>(),
            port in any::<u16>(),
        ) {
            let mut quoted = packet_of(&spec);
            let header_len = 20 + spec.options.len();
            quoted[2..4].copy_from_slice(&quoted_total.to_be_bytes());
            quoted[6] = quoted_flags & 0xe0;
            quoted[7] = 0;
            quoted[10] = 0;
            quoted[11] = 0;
            let c = checksum::checksum(&quoted[..header_len]);
            quoted[10..12].copy_from_slice(&c.to_be_bytes());
            let quote_len = (header_len + 8 + quote_extra).min(quoted.len());
            let mut p = build::ip(SERVER, spec.src, 1, &[], &build::icmp_error(3, 1, &quoted[..quote_len]));
            translate_icmp_error_inbound(&mut p, Ipv4Addr::from(addr), port).unwrap();
            assert_checksums_canonical(&p);
            let inner = &p[28..];
            prop_assert_eq!(checksum::sum(&inner[..header_len]), 0xffff);
        }

        /// Any bytes: no panic, and an error leaves the buffer unchanged.
        #[test]
        fn garbage_never_panics_and_errors_leave_bytes(
            mut bytes in proptest::collection::vec(any::<u8>(), 0..120),
            shape in any::<bool>(),
            proto in prop_oneof![Just(1u8), Just(6u8), Just(17u8)],
            inner_proto in prop_oneof![Just(1u8), Just(6u8), Just(17u8)],
            addr in any::<u32>(),
            port in any::<u16>(),
        ) {
            if shape && bytes.len() >= 20 {
                let len = bytes.len() as u16;
                bytes[0] = 0x45;
                bytes[2..4].copy_from_slice(&len.to_be_bytes());
                bytes[6] &= 0xe0;
                bytes[7] = 0;
                bytes[9] = proto;
                if proto == 1 && bytes.len() >= 28 + 20 + 8 && bytes[20] % 2 == 0 {
                    // An error quoting a packet whose fields are random
                    // (lengths included), with a valid ICMP checksum.
                    bytes[20] = 3;
                    bytes[28] = 0x45;
                    bytes[34] &= 0xe0;
                    bytes[35] = 0;
                    bytes[37] = inner_proto;
                    if inner_proto == 1 {
                        bytes[48] = 8;
                        if bytes[29] % 2 == 0 {
                            bytes[30] = 0; // a quoted total length of at most 255
                        }
                    }
                    let c = checksum::checksum(&{ let mut m = bytes[20..].to_vec(); m[2] = 0; m[3] = 0; m });
                    bytes[22..24].copy_from_slice(&c.to_be_bytes());
                }
            }
            let addr = Ipv4Addr::from(addr);
            let _ = parse_flow(&bytes);
            type Op = fn(&mut [u8], Ipv4Addr, u16) -> Result<(), NatError>;
            let ops: [Op; 4] =
                [rewrite_src, rewrite_dst, translate_icmp_error_inbound, translate_icmp_error_outbound];
            for op in ops {
                let mut copy = bytes.clone();
                if op(&mut copy, addr, port).is_err() {
                    prop_assert_eq!(&copy, &bytes);
                }
            }
        }
    }
}

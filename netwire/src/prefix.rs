//! IP prefixes: an address with a prefix length, as written in configs
//! (`192.0.2.1/24`: an interface address, host bits allowed) or as networks
//! (`198.51.100.0/24`). One implementation for the whole project: the
//! config, the pipeline's connected-subnet checks and the CLI use it.
//!
//! With the `serde` feature the types serialize as their text (`addr/len`).

use core::fmt;
use core::str::FromStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IPv4 address with a prefix length: an interface address (`192.0.2.1/24`,
/// host bits allowed) or a network (`198.51.100.0/24`, host bits zero).
/// Displays and serializes as `addr/len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    /// The address as written (host bits may be set).
    pub addr: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub len: u8,
}

impl Ipv4Cidr {
    /// `None` if `len > 32`.
    pub fn new(addr: Ipv4Addr, len: u8) -> Option<Self> {
        (len <= 32).then_some(Ipv4Cidr { addr, len })
    }

    /// The netmask as a number (`/24` => `0xffff_ff00`).
    pub fn mask(&self) -> u32 {
        mask32(self.len)
    }

    /// The network address (host bits cleared).
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// The subnet's broadcast address (host bits set).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    /// The prefix with host bits cleared (`192.0.2.1/24` => `192.0.2.0/24`).
    pub fn trunc(&self) -> Ipv4Cidr {
        Ipv4Cidr { addr: self.network(), len: self.len }
    }

    /// Whether `ip` is inside the subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr) & self.mask()
    }

    /// Whether the two subnets share an address (one contains the other).
    pub fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        let m = mask32(self.len.min(other.len));
        u32::from(self.addr) & m == u32::from(other.addr) & m
    }

    /// Whether all host bits are zero.
    pub fn is_network(&self) -> bool {
        self.addr == self.network()
    }
}

/// An IPv6 address with a prefix length; see [`Ipv4Cidr`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Cidr {
    /// The address as written (host bits may be set).
    pub addr: Ipv6Addr,
    /// Prefix length, 0..=128.
    pub len: u8,
}

impl Ipv6Cidr {
    /// `None` if `len > 128`.
    pub fn new(addr: Ipv6Addr, len: u8) -> Option<Self> {
        (len <= 128).then_some(Ipv6Cidr { addr, len })
    }

    /// The netmask as a number.
    pub fn mask(&self) -> u128 {
        mask128(self.len)
    }

    /// The network address (host bits cleared).
    pub fn network(&self) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.addr) & self.mask())
    }

    /// The prefix with host bits cleared.
    pub fn trunc(&self) -> Ipv6Cidr {
        Ipv6Cidr { addr: self.network(), len: self.len }
    }

    /// Whether `ip` is inside the subnet.
    pub fn contains(&self, ip: Ipv6Addr) -> bool {
        u128::from(ip) & self.mask() == u128::from(self.addr) & self.mask()
    }

    /// Whether the two subnets share an address (one contains the other).
    pub fn overlaps(&self, other: &Ipv6Cidr) -> bool {
        let m = mask128(self.len.min(other.len));
        u128::from(self.addr) & m == u128::from(other.addr) & m
    }

    /// Whether all host bits are zero.
    pub fn is_network(&self) -> bool {
        self.addr == self.network()
    }
}

/// An IPv4 or IPv6 prefix (a route's destination).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpCidr {
    /// IPv4 prefix.
    V4(Ipv4Cidr),
    /// IPv6 prefix.
    V6(Ipv6Cidr),
}

impl IpCidr {
    /// The address as written.
    pub fn addr(&self) -> IpAddr {
        match self {
            IpCidr::V4(c) => IpAddr::V4(c.addr),
            IpCidr::V6(c) => IpAddr::V6(c.addr),
        }
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        match self {
            IpCidr::V4(c) => c.len,
            IpCidr::V6(c) => c.len,
        }
    }

    /// The network address (host bits cleared).
    pub fn network(&self) -> IpAddr {
        match self {
            IpCidr::V4(c) => IpAddr::V4(c.network()),
            IpCidr::V6(c) => IpAddr::V6(c.network()),
        }
    }

    /// Whether `ip` is inside the prefix (false across families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self, ip) {
            (IpCidr::V4(c), IpAddr::V4(a)) => c.contains(a),
            (IpCidr::V6(c), IpAddr::V6(a)) => c.contains(a),
            _ => false,
        }
    }

    /// Whether this is an IPv4 prefix.
    pub fn is_ipv4(&self) -> bool {
        matches!(self, IpCidr::V4(_))
    }

    /// Whether all host bits are zero.
    pub fn is_network(&self) -> bool {
        match self {
            IpCidr::V4(c) => c.is_network(),
            IpCidr::V6(c) => c.is_network(),
        }
    }
}

/// The IPv4 netmask of a prefix length as a number (`24` => `0xffff_ff00`).
pub fn mask32(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

/// The IPv6 netmask of a prefix length as a number.
pub fn mask128(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len.min(128)))
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl fmt::Display for Ipv6Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpCidr::V4(c) => c.fmt(f),
            IpCidr::V6(c) => c.fmt(f),
        }
    }
}

/// Parses `addr/len`; host bits are allowed. The error is a message for a user.
impl FromStr for Ipv4Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, l) = split_cidr(s, "192.0.2.1/24")?;
        let addr: Ipv4Addr = a.parse().map_err(|_| format!("{a} is not an IPv4 address"))?;
        Ok(Ipv4Cidr { addr, len: parse_len(l, 32)? })
    }
}

/// Parses `addr/len`; host bits are allowed. The error is a message for a user.
impl FromStr for Ipv6Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, l) = split_cidr(s, "2001:db8::1/64")?;
        let addr: Ipv6Addr = a.parse().map_err(|_| format!("{a} is not an IPv6 address"))?;
        Ok(Ipv6Cidr { addr, len: parse_len(l, 128)? })
    }
}

/// Parses an IPv4 (no `:`) or IPv6 `addr/len`; host bits are allowed.
impl FromStr for IpCidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.contains(':') {
            s.parse().map(IpCidr::V6)
        } else {
            s.parse().map(IpCidr::V4)
        }
    }
}

fn split_cidr<'a>(s: &'a str, example: &str) -> Result<(&'a str, &'a str), String> {
    s.split_once('/').ok_or_else(|| format!("{s} has no prefix length (expected address/length, e.g. {example})"))
}

fn parse_len(l: &str, max: u8) -> Result<u8, String> {
    if l.is_empty() || !l.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("prefix length {l:?} is not a number"));
    }
    match l.parse::<u8>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(format!("prefix length {l} is out of range 0..={max}")),
    }
}

#[cfg(feature = "serde")]
macro_rules! cidr_serialize {
    ($($t:ty),*) => {$(
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    )*};
}
#[cfg(feature = "serde")]
cidr_serialize!(Ipv4Cidr, Ipv6Cidr, IpCidr);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_contain_and_display() {
        let c: Ipv4Cidr = "192.0.2.1/24".parse().unwrap();
        assert!(c.contains(Ipv4Addr::new(192, 0, 2, 200)) && !c.contains(Ipv4Addr::new(192, 0, 3, 1)));
        assert_eq!(c.trunc().to_string(), "192.0.2.0/24");
        assert_eq!(c.broadcast(), Ipv4Addr::new(192, 0, 2, 255));
        assert!(!c.is_network() && c.trunc().is_network());
        let d: IpCidr = "2001:db8::1/64".parse().unwrap();
        assert!(d.contains("2001:db8::ffff".parse().unwrap()));
        assert!(!d.contains("192.0.2.1".parse().unwrap()), "never across families");
        assert_eq!(Ipv4Cidr::new(Ipv4Addr::UNSPECIFIED, 0).unwrap().mask(), 0);
        assert!("192.0.2.1".parse::<Ipv4Cidr>().unwrap_err().contains("no prefix length"));
        assert!("192.0.2.1/33".parse::<Ipv4Cidr>().unwrap_err().contains("out of range"));
        assert!("10.0.0.0/8".parse::<Ipv4Cidr>().unwrap().overlaps(&"10.1.0.0/16".parse().unwrap()));
    }
}

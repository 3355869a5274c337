//! SR-steered requests from a kernel socket: a type-4 Segment Routing Header attached to every
//! packet of a UDP socket with the `IPV6_RTHDR` socket option.
//!
//! Linux (since 4.10) accepts a type-4 routing header in `IPV6_RTHDR` (it validates it with
//! `seg6_validate_srh`) and, on every send, writes the socket's destination into Segment
//! List\[0\] and sends the packet to Segment List\[Segments Left\]. So for the travel order
//! S1, ..., Sn of an intent ([`objmeta::model::Intent::segments`]) the socket sends to Sn (the
//! final segment) with the list `[Sn, Sn-1, ..., S1]`, Segments Left = n - 1: the packet goes
//! to S1 first. Kernels without that support answer `EINVAL` (reported as such).
//!
//! This is the crate's only `unsafe` code (two `setsockopt` calls: the SRH here, and the
//! receive buffer size of `objcli bench`'s socket, [`set_rcvbuf`]).
#![allow(unsafe_code)]

use std::io;
use std::net::{Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use netwire::ipv4::Protocol;
use netwire::srh;

/// Most segments this client puts in an SRH (a 1280-byte MTU: 40 + 8 + 16·8 + 8 + 40 + 1040).
pub const MAX_SEGMENTS: usize = 8;

/// The SRH for the travel order `segments` (first visited first) and the destination to send
/// to (the last segment). `None` for an empty list or more than [`MAX_SEGMENTS`].
pub fn srh(segments: &[Ipv6Addr]) -> Option<(Vec<u8>, Ipv6Addr)> {
    let n = segments.len();
    if n == 0 || n > MAX_SEGMENTS {
        return None;
    }
    // SRH order: Segment List[0] is the last segment. The next header is left 0: the kernel
    // fills it in.
    let in_srh_order: Vec<Ipv6Addr> = segments.iter().rev().copied().collect();
    let mut b = vec![0u8; srh::HEADER_LEN + srh::SEGMENT_LEN * n];
    srh::emit_srh(&mut b, Protocol(0), (n - 1) as u8, 0, &in_srh_order).ok()?;
    Some((b, segments[n - 1]))
}

/// Attaches `srh` (from [`srh`]) to every packet `sock` sends.
pub fn set_rthdr(sock: &UdpSocket, srh: &[u8]) -> io::Result<()> {
    let len = libc::socklen_t::try_from(srh.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "SRH too long"))?;
    // SAFETY: `sock` is an open socket for the duration of the call (borrowed); `srh` is a
    // live, initialised buffer of `len` bytes that the kernel only reads (it copies it).
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_RTHDR,
            srh.as_ptr().cast::<libc::c_void>(),
            len,
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("setsockopt(IPV6_RTHDR, type-4 SRH): {e} (this kernel may not accept SRHs on sockets)"),
        ));
    }
    Ok(())
}

/// A socket bound to `[::]:0` that sends every packet along `segments` (travel order), and
/// the socket address (`last segment`, `port`) to send the requests to.
pub fn steered_socket(segments: &[Ipv6Addr], port: u16) -> io::Result<(UdpSocket, SocketAddr)> {
    let (hdr, dst) = srh(segments).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("segment list of {} SIDs: need 1 to {MAX_SEGMENTS}", segments.len()),
        )
    })?;
    let sock = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0))?;
    set_rthdr(&sock, &hdr)?;
    Ok((sock, SocketAddr::new(dst.into(), port)))
}

/// Asks for a receive buffer of `bytes`: SO_RCVBUFFORCE (root, past `net.core.rmem_max`),
/// else SO_RCVBUF (capped by it). Best effort: a smaller buffer only costs retransmissions.
pub(crate) fn set_rcvbuf(sock: &UdpSocket, bytes: usize) {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: a valid socket descriptor and a pointer to a c_int of the given length.
        let rc = unsafe { libc::setsockopt(sock.as_raw_fd(), libc::SOL_SOCKET, opt, (&raw const v).cast(), len) };
        if rc == 0 {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srh_lists_segments_reversed() {
        let s: Vec<Ipv6Addr> = ["fc00::1", "fc00::2", "fc00::3"].iter().map(|a| a.parse().unwrap()).collect();
        let (b, dst) = srh(&s).unwrap();
        assert_eq!(dst, s[2]);
        assert_eq!(b.len(), 8 + 48);
        assert_eq!(&b[..8], &[0, 6, 4, 2, 2, 0, 0, 0]);
        assert_eq!(&b[8..24], &s[2].octets());
        assert_eq!(&b[40..56], &s[0].octets());
        assert!(srh(&[]).is_none());
        assert!(srh(&[s[0]; 9]).is_none());
    }

    /// The kernel accepts the SRH and sends a packet with it (Segments Left 0). The loopback
    /// receiver only gets it where `seg6_enabled` is on for `all` and `lo` (the kernel drops
    /// SRH packets otherwise, whatever Segments Left); where the kernel refuses type-4 SRHs
    /// on sockets, the refusal is a clear EINVAL.
    #[test]
    fn kernel_sends_with_an_srh() {
        let rx = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).unwrap();
        let port = rx.local_addr().unwrap().port();
        let enabled = |dev: &str| {
            std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{dev}/seg6_enabled"))
                .is_ok_and(|v| v.trim() == "1")
        };
        match steered_socket(&[Ipv6Addr::LOCALHOST], port) {
            Ok((tx, dst)) => {
                tx.send_to(b"hello", dst).unwrap();
                if enabled("all") && enabled("lo") {
                    rx.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
                    let mut buf = [0u8; 16];
                    let (n, _) = rx.recv_from(&mut buf).unwrap();
                    assert_eq!(&buf[..n], b"hello");
                }
            }
            Err(e) => {
                assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
                eprintln!("kernel refuses type-4 SRH on sockets: {e}");
            }
        }
    }
}

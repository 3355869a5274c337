//! Every L2/L3 parser: Ethernet, ARP, IPv4, IPv6, ICMP, ICMPv6 with NDP
//! options; each accessor is called on whatever `new_checked` accepts.
#![no_main]
use libfuzzer_sys::fuzz_target;
use netwire::{arp, ethernet, icmpv4, icmpv6, ipv4, ipv6};

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = ethernet::Packet::new_checked(data) {
        let _ = (e.dst_addr(), e.src_addr(), e.ethertype(), e.payload().len());
    }
    if let Ok(a) = arp::Packet::new_checked(data) {
        let _ = (a.operation(), a.sender_hardware_addr(), a.sender_protocol_addr(), a.target_protocol_addr());
    }
    if let Ok(p) = ipv4::Packet::new_checked(data) {
        let _ = (p.verify_checksum(), p.ttl(), p.protocol(), p.src_addr(), p.dst_addr(), p.frag_offset_bytes());
        let _ = icmpv4::is_error_allowed(data);
        let mut copy = data.to_vec();
        let _ = icmpv4::echo_request_to_reply(&mut copy);
    }
    if let Ok(p) = ipv6::Packet::new_checked(data) {
        let _ = (p.payload_len(), p.next_header(), p.hop_limit(), p.src_addr(), p.dst_addr());
        let mut copy = data.to_vec();
        let _ = icmpv6::echo_request_to_reply(&mut copy);
    }
    if let Ok(i) = icmpv4::Packet::new_checked(data) {
        let _ = (i.msg_type(), i.msg_code(), i.verify_checksum());
    }
    if let Ok(i) = icmpv6::Packet::new_checked(data) {
        let _ = (i.msg_type(), i.msg_code());
    }
    if let Some((&hop, rest)) = data.split_first() {
        let _ = icmpv6::validate_nd(hop, rest);
        if let Ok(ns) = icmpv6::NeighborSolicit::new_checked(rest) {
            let _ = (ns.target_addr(), ns.source_link_layer_addr());
            for o in ns.options() {
                let _ = o;
            }
        }
        if let Ok(na) = icmpv6::NeighborAdvert::new_checked(rest) {
            let _ = (na.flags(), na.target_addr(), na.target_link_layer_addr());
        }
    }
});

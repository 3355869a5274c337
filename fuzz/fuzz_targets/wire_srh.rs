//! IPv6 extension-header walk and the SRH: view, checks, TLVs, Repr; a
//! parsed Repr must emit and parse back to itself.
#![no_main]
use libfuzzer_sys::fuzz_target;
use netwire::ipv4::Protocol;
use netwire::{ipv6ext, srh};

fuzz_target!(|data: &[u8]| {
    let Some((&nh, payload)) = data.split_first() else { return };
    if let Ok(chain) = ipv6ext::walk(Protocol(nh), payload) {
        assert!(chain.upper_layer_offset <= payload.len());
        if let Some(rt) = chain.routing {
            let bytes = &payload[rt.offset..rt.offset + rt.len];
            if let Ok(p) = srh::Packet::new_checked(bytes) {
                let _ = (p.segments_left(), p.last_entry(), p.active_segment(), p.hmac());
                for t in p.tlv_iter() {
                    let _ = t;
                }
                if p.check_srh().is_ok() {
                    let r = srh::Repr::parse(&p).expect("a checked SRH parses");
                    let mut out = vec![0u8; r.buffer_len()];
                    let n = r.emit(&mut out).expect("a parsed SRH emits");
                    let back = srh::Repr::parse(&srh::Packet::new_checked(&out[..n]).unwrap()).unwrap();
                    assert_eq!(back, r);
                }
            }
        }
    }
    if let Ok(p) = srh::Packet::new_checked(data) {
        let _ = (p.check_srh(), p.segments().count());
    }
});

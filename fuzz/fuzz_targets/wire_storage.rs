//! The storage request header and the probe reply body.
#![no_main]
use libfuzzer_sys::fuzz_target;
use netwire::storage;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = storage::Packet::new_checked(data) {
        let r = storage::Repr::parse(&p);
        let mut out = [0u8; storage::HEADER_LEN];
        r.emit(&mut out).unwrap();
        assert_eq!(storage::Repr::parse(&storage::Packet::new_checked(&out[..]).unwrap()), r);
        let _ = p.data();
    }
    let _ = storage::ProbeReply::parse(data);
});

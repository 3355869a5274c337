//! What the sections' tests share: a small valid config to edit, the shipped
//! configs, and assertions on the error text.

use super::Config;

pub(super) const BENCH_MEMIF: &str = include_str!("../../../configs/bench-memif.yaml");
pub(super) const BENCH_NAT: &str = include_str!("../../../configs/bench-nat.yaml");
pub(super) const NAT_CONFIG: &str = include_str!("../../../configs/nat.yaml");

/// A small valid config; tests edit it with `replace`.
pub(super) const BASE: &str = r#"
ports:
  - name: inside
    device: net_af_packet0
    args: "iface=veth0,qpairs=1"
    ipv4: ["192.0.2.1/24"]
    ipv6: ["2001:db8:1::1/64"]
  - name: outside
    device: net_af_packet1
    args: "iface=veth1,qpairs=1"
    ipv4: ["198.51.100.1/24"]
    ipv6: ["2001:db8:2::1/64"]
routes:
  - prefix: 203.0.113.0/24
    via: 198.51.100.254
    port: outside
  - prefix: 2001:db8:99::/48
    via: 2001:db8:2::fe
    port: outside
neighbors:
  - ip: 192.0.2.2
    mac: "02:00:00:00:00:02"
    port: inside
"#;

/// Appended to BASE: every SRv6 feature once.
pub(super) const SRV6: &str = r#"srv6:
  encap_source: "2001:db8:2::1"
  trusted_ports: [outside, inside]
  local_sids:
    - sid: "2001:db8:a::1"
      behavior: end
      flavors: [psp, usd]
    - sid: "2001:db8:a::2"
      behavior: end.x
      flavors: [usd]
      next_hop: "2001:db8:2::2"
      port: outside
    - sid: "2001:db8:a::3"
      behavior: end.dt6
    - sid: "2001:db8:a::4"
      behavior: end.dx6
      next_hop: "fe80::2"
      port: inside
    - sid: "2001:db8:a::5"
      behavior: storage
      policy: sr-c
      threshold: 8
    - sid: "2001:db8:a::6"
      behavior: storage
      policy: holds-object
  steering:
    - prefix: "2001:db8:77::/64"
      segments: ["2001:db8:b::1", "2001:db8:c::100"]
    - prefix: 100.64.0.0/10
      mode: encaps.red
      segments: ["2001:db8:b::1"]
      source: "2001:db8:1::1"
storage_service:
  udp_port: 9999
  queue_depth: 3
  objects: [7, "0x2a", "18446744073709551615", 0]
"#;

pub(super) fn ok(yaml: &str) -> Config {
    match Config::from_yaml_str(yaml) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got: {e}\n{yaml}"),
    }
}

pub(super) fn err(yaml: &str) -> String {
    match Config::from_yaml_str(yaml) {
        Ok(_) => panic!("expected an error for:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

/// BASE with `from` replaced by `to` (which must occur).
pub(super) fn edit(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "{from:?} not in BASE");
    BASE.replacen(from, to, 1)
}

pub(super) fn assert_err(yaml: &str, expected: &str) {
    let e = err(yaml);
    assert_eq!(e, expected, "\n{yaml}");
}

pub(super) fn assert_err_starts(yaml: &str, expected: &str) {
    let e = err(yaml);
    assert!(e.starts_with(expected), "got {e:?}, expected prefix {expected:?}");
}

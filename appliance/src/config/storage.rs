//! `storage_service:` — the built-in storage responder that storage SIDs
//! deliver to — and `storage:`, the object storage service on the workers
//! (docs/storage-service.md).

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::{count, range, ConfigError, Ipv6Cidr, Port, Res};

/// Largest `threshold` of an `sr-c` storage SID, and largest
/// `storage_service.queue_depth`.
pub(super) const MAX_STORAGE_QUEUE_DEPTH: u32 = 1_000_000;
/// Most object ids held by the storage service (`storage_service.objects`).
const MAX_STORAGE_OBJECTS: usize = 4096;
/// Slots of each ring that hands a storage request from one worker to the
/// worker owning its object (not configurable; counted in the hugepage budget).
pub const HANDOVER_RING_SIZE: u32 = 1024;

const DEFAULT_UDP_PORT: u16 = 7878;
const DEFAULT_QUEUE_DEPTH: u32 = 0;

/// `storage_service:` as the file writes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct StorageServiceYaml {
    udp_port: i64,
    queue_depth: i64,
    objects: Vec<ObjectIdYaml>,
}

impl Default for StorageServiceYaml {
    fn default() -> Self {
        StorageServiceYaml {
            udp_port: i64::from(DEFAULT_UDP_PORT),
            queue_depth: i64::from(DEFAULT_QUEUE_DEPTH),
            objects: Vec::new(),
        }
    }
}

/// An object id as written: a YAML integer, or a string holding a decimal or
/// `0x`-hex number. Checked in validation, and printed as an integer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ObjectIdYaml {
    Int(i128),
    Text(String),
}

impl<'de> Deserialize<'de> for ObjectIdYaml {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ObjectIdYaml;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object id (an integer, or a decimal or 0x-hex string)")
            }
            fn visit_i64<E>(self, v: i64) -> Result<ObjectIdYaml, E> {
                Ok(ObjectIdYaml::Int(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<ObjectIdYaml, E> {
                Ok(ObjectIdYaml::Int(v.into()))
            }
            fn visit_i128<E>(self, v: i128) -> Result<ObjectIdYaml, E> {
                Ok(ObjectIdYaml::Int(v))
            }
            fn visit_u128<E>(self, v: u128) -> Result<ObjectIdYaml, E> {
                // anything above i128::MAX is out of range anyway
                Ok(ObjectIdYaml::Int(i128::try_from(v).unwrap_or(i128::MAX)))
            }
            fn visit_str<E>(self, v: &str) -> Result<ObjectIdYaml, E> {
                Ok(ObjectIdYaml::Text(v.to_string()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl Serialize for ObjectIdYaml {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ObjectIdYaml::Int(v) => match u64::try_from(*v) {
                Ok(id) => s.serialize_u64(id),
                Err(_) => s.serialize_i128(*v),
            },
            ObjectIdYaml::Text(t) => s.serialize_str(t),
        }
    }
}

/// `storage:` as the file writes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StorageYaml {
    object_prefix: String,
    device: DevicesYaml,
    #[serde(default = "default_size_mb")]
    size_mb: i64,
    #[serde(default = "default_objects_max")]
    objects_max: i64,
    #[serde(default = "default_requests_max")]
    requests_max: i64,
    #[serde(default = "default_assemblies_max")]
    assemblies_max: i64,
}

fn default_size_mb() -> i64 {
    256
}

fn default_objects_max() -> i64 {
    65536
}

fn default_requests_max() -> i64 {
    256
}

fn default_assemblies_max() -> i64 {
    64
}

/// `storage.device`: one path, or one per worker (printed as a list).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
enum DevicesYaml {
    One(String),
    PerWorker(Vec<String>),
}

/// The built-in storage responder (`storage_service:`) that storage SIDs
/// deliver accepted requests to, until the object store exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageService {
    /// UDP port of the responder, 1..=65535.
    pub udp_port: u16,
    /// Simulated local queue depth, 0..=1000000: reported in replies and
    /// compared with an `sr-c` SID's threshold.
    pub queue_depth: u32,
    /// Object ids this node holds (for the `holds-object` policy), 0..=4096,
    /// unique, in configuration order.
    pub objects: Vec<u64>,
}

impl Default for StorageService {
    fn default() -> Self {
        StorageService { udp_port: DEFAULT_UDP_PORT, queue_depth: DEFAULT_QUEUE_DEPTH, objects: Vec::new() }
    }
}

impl StorageService {
    /// Whether the node holds object `id`.
    pub fn holds(&self, id: u64) -> bool {
        self.objects.contains(&id)
    }
}

/// The object storage service (`storage:`), docs/storage-service.md.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Storage {
    /// The node's object prefix (a /64): replica addresses are this prefix
    /// plus the object id.
    pub object_prefix: Ipv6Cidr,
    /// One device per worker (worker `w` serves the objects with
    /// `id % workers == w` from `devices[w]`): a block device or raw file,
    /// or `ram` (memory, lost at exit: for tests). Written `device:` as one
    /// string (one worker) or a list.
    pub devices: Vec<String>,
    /// Size of the file created when `device` does not exist, and of `ram`.
    pub size_mb: u32,
    /// Objects the store can hold (fixed when the device is formatted).
    pub objects_max: u32,
    /// Requests held at once (waiting for I/O); more are answered `busy`.
    pub requests_max: u32,
    /// Chunks being assembled from fragments at once.
    pub assemblies_max: u32,
}

/// Validates `storage_service:`; prints the object ids as integers.
pub(super) fn validate_service(r: &mut StorageServiceYaml) -> Res<StorageService> {
    let udp_port = range("storage_service.udp_port", r.udp_port, 1, 65535)?;
    let queue_depth = range("storage_service.queue_depth", r.queue_depth, 0, i64::from(MAX_STORAGE_QUEUE_DEPTH))?;
    count("storage_service.objects", r.objects.len(), 0, MAX_STORAGE_OBJECTS)?;
    let mut seen: HashMap<u64, usize> = HashMap::with_capacity(r.objects.len());
    let mut objects = Vec::with_capacity(r.objects.len());
    for (i, o) in r.objects.iter_mut().enumerate() {
        let path = format!("storage_service.objects[{i}]");
        let id = object_id(&path, o)?;
        if let Some(j) = seen.get(&id) {
            return Err(ConfigError::invalid(
                path,
                format!("duplicate object id {id} (also storage_service.objects[{j}])"),
            ));
        }
        seen.insert(id, i);
        objects.push(id);
        *o = ObjectIdYaml::Int(id.into());
    }
    Ok(StorageService { udp_port, queue_depth, objects })
}

fn object_id(path: &str, o: &ObjectIdYaml) -> Res<u64> {
    match o {
        ObjectIdYaml::Int(v) => u64::try_from(*v).map_err(|_| {
            ConfigError::invalid(path, format!("{v} is out of range 0..={} (object ids are u64)", u64::MAX))
        }),
        ObjectIdYaml::Text(s) => parse_object_id(s).ok_or_else(|| {
            ConfigError::invalid(
                path,
                format!("{s:?} is not an object id (a decimal or 0x-hex number in 0..={})", u64::MAX),
            )
        }),
    }
}

/// `123` or `0x7b` (no sign, no spaces).
fn parse_object_id(s: &str) -> Option<u64> {
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(hex, 16).ok()
    } else {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    }
}

/// Validates `storage:` for `workers` workers; prints the prefix
/// canonically and the devices as a list.
pub(super) fn validate(r: &mut StorageYaml, ports: &[Port], workers: usize) -> Res<Storage> {
    let object_prefix = validate_object_prefix(&r.object_prefix, ports)?;
    let devices = validate_devices(&r.device, workers)?;
    let storage = Storage {
        object_prefix,
        devices,
        size_mb: range("storage.size_mb", r.size_mb, 16, 1 << 20)?,
        objects_max: range("storage.objects_max", r.objects_max, 1, 1 << 24)?,
        requests_max: range("storage.requests_max", r.requests_max, 1, 65536)?,
        assemblies_max: range("storage.assemblies_max", r.assemblies_max, 1, 4096)?,
    };
    r.object_prefix = storage.object_prefix.to_string();
    r.device = DevicesYaml::PerWorker(storage.devices.clone());
    Ok(storage)
}

/// A global unicast /64, host bits zero, overlapping no port's subnet.
fn validate_object_prefix(text: &str, ports: &[Port]) -> Res<Ipv6Cidr> {
    let path = "storage.object_prefix";
    let prefix: Ipv6Cidr = text.parse().map_err(|e: String| ConfigError::invalid(path, e))?;
    if prefix.len != 64 {
        return Err(ConfigError::invalid(
            path,
            format!("{text} must be a /64 (the object id is the interface identifier)"),
        ));
    }
    if prefix.addr != prefix.network() {
        return Err(ConfigError::invalid(
            path,
            format!("{text} has host bits set (the network is {}/64)", prefix.network()),
        ));
    }
    if prefix.addr.is_multicast() || (prefix.addr.segments()[0] & 0xffc0) == 0xfe80 {
        return Err(ConfigError::invalid(path, "must be a global unicast prefix"));
    }
    for (i, p) in ports.iter().enumerate() {
        for (k, c) in p.ipv6.iter().enumerate() {
            if c.overlaps(&prefix) {
                return Err(ConfigError::invalid(
                    path,
                    format!("overlaps ports[{i}].ipv6[{k}] ({}/{})", c.addr, c.len),
                ));
            }
        }
    }
    Ok(prefix)
}

/// One device per worker: each an absolute path (no path twice) or `ram`.
fn validate_devices(device: &DevicesYaml, workers: usize) -> Res<Vec<String>> {
    let (devices, listed) = match device {
        DevicesYaml::One(d) => (vec![d.clone()], false),
        DevicesYaml::PerWorker(v) => (v.clone(), true),
    };
    if devices.len() != workers {
        return Err(ConfigError::invalid(
            "storage.device",
            format!(
                "{} device(s) for {workers} workers: each worker serves its share of the objects from its own device (give a list of {workers})",
                devices.len()
            ),
        ));
    }
    for (i, d) in devices.iter().enumerate() {
        let path = if listed { format!("storage.device[{i}]") } else { "storage.device".to_string() };
        if d.is_empty() || (d != "ram" && !d.starts_with('/')) {
            return Err(ConfigError::invalid(
                path,
                format!("{d:?}: an absolute path of a block device or file, or \"ram\""),
            ));
        }
        if d != "ram" {
            if let Some(j) = devices[..i].iter().position(|e| e == d) {
                return Err(ConfigError::invalid(path, format!("{d} is also storage.device[{j}]")));
            }
        }
    }
    Ok(devices)
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    #[test]
    fn storage_service_ranges() {
        assert_err(&format!("{BASE}storage_service:\n  udp_port: 0\n"), "storage_service.udp_port: must be 1..=65535");
        assert_err(
            &format!("{BASE}storage_service:\n  udp_port: 65536\n"),
            "storage_service.udp_port: must be 1..=65535",
        );
        assert_err(
            &format!("{BASE}storage_service:\n  queue_depth: 1000001\n"),
            "storage_service.queue_depth: must be 0..=1000000",
        );
        assert_err(
            &format!("{BASE}storage_service:\n  queue_depth: -1\n"),
            "storage_service.queue_depth: must be 0..=1000000",
        );
        let c = ok(&format!("{BASE}storage_service:\n  udp_port: 65535\n  queue_depth: 1000000\n"));
        assert_eq!((c.storage_service.udp_port, c.storage_service.queue_depth), (65535, 1_000_000));
    }

    #[test]
    fn storage_service_objects() {
        let objs = |list: &str| format!("{BASE}storage_service:\n  objects: {list}\n");
        let c = ok(&objs("[0, \"1\", \"0x10\", \"0XfF\", 0x11, \"99\", 18446744073709551615]"));
        assert_eq!(c.storage_service.objects, vec![0, 1, 16, 255, 17, 99, u64::MAX]);
        assert_err(
            &objs("[1, 5, 9, 7, \"0x7\"]"),
            "storage_service.objects[4]: duplicate object id 7 (also storage_service.objects[3])",
        );
        assert_err(
            &objs("[1, 5, 7, \"7\"]"),
            "storage_service.objects[3]: duplicate object id 7 (also storage_service.objects[2])",
        );
        assert_err(
            &objs("[1, -5]"),
            "storage_service.objects[1]: -5 is out of range 0..=18446744073709551615 (object ids are u64)",
        );
        assert_err(
            &objs("[18446744073709551616]"),
            "storage_service.objects[0]: 18446744073709551616 is out of range 0..=18446744073709551615 (object ids are u64)",
        );
        for bad in ["abc", "0x", "0x1g", "+5", " 5", "-5", "18446744073709551616", "0x10000000000000000", ""] {
            assert_err(
                &objs(&format!("[{bad:?}]")),
                &format!("storage_service.objects[0]: {bad:?} is not an object id (a decimal or 0x-hex number in 0..=18446744073709551615)"),
            );
        }
        let many: Vec<String> = (0..4097).map(|i| i.to_string()).collect();
        assert_err(
            &objs(&format!("[{}]", many.join(", "))),
            "storage_service.objects: must have 0..=4096 entries, has 4097",
        );
        assert_eq!(ok(&objs(&format!("[{}]", many[..4096].join(", ")))).storage_service.objects.len(), 4096);
    }

    #[test]
    fn storage_section() {
        let yaml = format!("{BASE}storage:\n  object_prefix: \"2001:db8:f0:1::/64\"\n  device: ram\n");
        let c = ok(&yaml);
        let st = c.storage.as_ref().unwrap();
        assert_eq!(st.object_prefix.len, 64);
        assert_eq!(st.size_mb, 256);
        assert_eq!(ok(&c.to_yaml()), c);
        let cases: &[(&str, &str)] = &[
            ("object_prefix: \"2001:db8:f0:1::/64\"", "storage.object_prefix: ... must be a /64"),
            ("device: ram", "storage.device: \"disk.img\": an absolute path"),
        ];
        let e = err(&yaml.replace("2001:db8:f0:1::/64", "2001:db8:f0:1::/48"));
        assert!(e.starts_with("storage.object_prefix: 2001:db8:f0:1::/48 must be a /64"), "{e}");
        let e = err(&yaml.replace("2001:db8:f0:1::/64", "2001:db8:f0:1::5/64"));
        assert!(e.contains("host bits"), "{e}");
        let e = err(&yaml.replace("2001:db8:f0:1::/64", "2001:db8:1::/64"));
        assert!(e.starts_with("storage.object_prefix: overlaps ports[0].ipv6[0]"), "{e}");
        let e = err(&yaml.replace("device: ram", "device: disk.img"));
        assert!(e.starts_with(cases[1].1), "{e}");
        let e = err(&format!("{yaml}  size_mb: 1\n"));
        assert!(e.starts_with("storage.size_mb: must be 16..="), "{e}");
        let two =
            yaml.replace("ports:", "lcores:\n  main: { lcore: 0 }\n  workers: [{ lcore: 1 }, { lcore: 2 }]\nports:");
        let two = two.replace("qpairs=1", "qpairs=2");
        let e = err(&two);
        assert!(e.starts_with("storage.device: 1 device(s) for 2 workers"), "{e}");
        let c2 = ok(&two.replace("device: ram", "device: [ram, /var/tmp/apl-dev1.img]"));
        assert_eq!(c2.storage.as_ref().unwrap().devices, ["ram", "/var/tmp/apl-dev1.img"]);
        assert_eq!(ok(&c2.to_yaml()), c2);
        let e = err(&two.replace("device: ram", "device: [/a.img, /a.img]"));
        assert!(e.starts_with("storage.device[1]: /a.img is also storage.device[0]"), "{e}");
    }
}

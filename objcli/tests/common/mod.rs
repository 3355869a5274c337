//! Test peers: a fake storage node (a UDP server thread on `::1` speaking the storage
//! protocol, chunks in memory) with fault knobs, and the metadata service on loopback.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use objcli::wire::{self, status, Header, Op, CHUNK, FRAGMENT};
use objmeta::client::MetaClient;
use objmeta::model::NodeRegistration;
use objmeta::server::{self, ServerHandle};
use objmeta::store::EmbeddedStore;
use objmeta::{MetadataService, ServiceConfig};

#[derive(Default)]
struct Object {
    size: u64,
    version: u64,
    chunks: HashMap<u32, Vec<u8>>,
}

#[derive(Default)]
struct Assembly {
    buf: Vec<u8>,
    have: HashSet<u64>,
    /// Fragments waiting for the chunk: (sender, header).
    waiting: Vec<(SocketAddr, Header)>,
}

#[derive(Default)]
struct Store {
    objects: BTreeMap<u64, Object>,
    assembling: HashMap<(u64, u64, u32), Assembly>,
}

/// Fault knobs, changeable while the node runs.
#[derive(Default)]
pub struct Faults {
    /// Drops this many per mille of the packets received and of the replies sent.
    pub drop_per_mille: AtomicU32,
    /// Answers `busy` to the next this many requests.
    pub busy_next: AtomicU32,
    /// Answers nothing at all.
    pub down: AtomicBool,
    /// Absorbs puts without ever acknowledging them (answers the other ops).
    pub never_ack_puts: AtomicBool,
    /// Gets of this chunk index (of any object) + 1 answer `checksum`; 0: none.
    pub checksum_chunk_plus1: AtomicU32,
}

/// A fake storage node.
pub struct FakeNode {
    pub addr: SocketAddr,
    pub faults: Arc<Faults>,
    /// Requests received (after drops).
    pub received: Arc<AtomicU64>,
    pub busy_sent: Arc<AtomicU64>,
    store: Arc<Mutex<Store>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeNode {
    pub fn start() -> FakeNode {
        let sock = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let addr = sock.local_addr().unwrap();
        let faults = Arc::new(Faults::default());
        let received = Arc::new(AtomicU64::new(0));
        let busy_sent = Arc::new(AtomicU64::new(0));
        let store = Arc::new(Mutex::new(Store::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, r, b, s, st) = (faults.clone(), received.clone(), busy_sent.clone(), store.clone(), stop.clone());
        let thread = thread::spawn(move || serve(sock, f, r, b, s, st));
        FakeNode { addr, faults, received, busy_sent, store, stop, thread: Some(thread) }
    }

    /// The object's bytes as stored (chunks concatenated), if complete.
    pub fn object(&self, id: u64) -> Option<Vec<u8>> {
        let st = self.store.lock().unwrap();
        let o = st.objects.get(&id)?;
        let chunks = chunks_of(o.size);
        let mut out = Vec::new();
        for c in 0..chunks {
            out.extend_from_slice(o.chunks.get(&c)?);
        }
        Some(out)
    }

    pub fn has(&self, id: u64) -> bool {
        self.store.lock().unwrap().objects.contains_key(&id)
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn chunks_of(size: u64) -> u32 {
    if size == 0 {
        1
    } else {
        size.div_ceil(CHUNK as u64) as u32
    }
}

struct Rng(u64);
impl Rng {
    fn per_mille(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % 1000) as u32
    }
}

fn serve(
    sock: UdpSocket,
    faults: Arc<Faults>,
    received: Arc<AtomicU64>,
    busy_sent: Arc<AtomicU64>,
    store: Arc<Mutex<Store>>,
    stop: Arc<AtomicBool>,
) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ u64::from(sock.local_addr().unwrap().port()));
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::SeqCst) {
        let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
        if faults.down.load(Ordering::SeqCst) {
            continue;
        }
        let drop = faults.drop_per_mille.load(Ordering::SeqCst);
        if drop > 0 && rng.per_mille() < drop {
            continue;
        }
        let Ok((h, rest)) = Header::decode(&buf[..n]) else { continue };
        received.fetch_add(1, Ordering::SeqCst);
        let mut send = |h: &Header, st: u16, data: &[u8]| {
            if drop > 0 && rng.per_mille() < drop {
                return;
            }
            let r = Header { op: h.op | wire::REPLY, status: st, length: data.len() as u32, ..*h };
            let _ = sock.send_to(&wire::encode(&r, data), from_of(h, from));
        };
        if faults.busy_next.load(Ordering::SeqCst) > 0 {
            faults.busy_next.fetch_sub(1, Ordering::SeqCst);
            busy_sent.fetch_add(1, Ordering::SeqCst);
            send(&h, status::BUSY, &[]);
            continue;
        }
        let mut st = store.lock().unwrap();
        match Op(h.op) {
            Op::PUT_CHUNK => {
                if faults.never_ack_puts.load(Ordering::SeqCst) {
                    continue;
                }
                if rest.len() < 16 + h.length as usize
                    || h.offset % FRAGMENT as u64 != 0
                    || h.length as usize > FRAGMENT
                {
                    send(&h, status::BAD_REQUEST, &[]);
                    continue;
                }
                let (size, version) = wire::parse_get(rest).map(|(s, v, _)| (s, v)).unwrap_or_default();
                let frag = &rest[16..16 + h.length as usize];
                let chunk = (h.offset / CHUNK as u64) as u32;
                if let Some(o) = st.objects.get(&h.object_id) {
                    if o.version == version && o.size == size && o.chunks.contains_key(&chunk) {
                        send(&h, status::OK, &[]);
                        continue;
                    }
                    if o.version > version {
                        send(&h, status::VERSION, &[]);
                        continue;
                    }
                }
                let chunk_start = u64::from(chunk) * CHUNK as u64;
                let chunk_len = size.saturating_sub(chunk_start).min(CHUNK as u64);
                let need = if chunk_len == 0 { 1 } else { chunk_len.div_ceil(FRAGMENT as u64) };
                let key = (h.object_id, version, chunk);
                let a = st.assembling.entry(key).or_default();
                if a.buf.is_empty() {
                    a.buf = vec![0; chunk_len as usize];
                }
                let at = (h.offset - chunk_start) as usize;
                if at + frag.len() > a.buf.len() {
                    send(&h, status::BAD_REQUEST, &[]);
                    continue;
                }
                a.buf[at..at + frag.len()].copy_from_slice(frag);
                a.have.insert(h.offset);
                a.waiting.push((from, h));
                if a.have.len() as u64 == need {
                    let a = st.assembling.remove(&key).unwrap();
                    let o = st.objects.entry(h.object_id).or_default();
                    if o.version != version || o.size != size {
                        *o = Object { size, version, chunks: HashMap::new() };
                    }
                    o.chunks.insert(chunk, a.buf);
                    for (f, wh) in a.waiting {
                        if drop > 0 && rng.per_mille() < drop {
                            continue;
                        }
                        let r = Header { op: wh.op | wire::REPLY, status: status::OK, length: 0, ..wh };
                        let _ = sock.send_to(&wire::encode(&r, &[]), f);
                    }
                }
            }
            Op::GET_CHUNK => {
                let Some(o) = st.objects.get(&h.object_id) else {
                    send(&h, status::NOT_FOUND, &[]);
                    continue;
                };
                let chunk = (h.offset / CHUNK as u64) as u32;
                if faults.checksum_chunk_plus1.load(Ordering::SeqCst) == chunk + 1 {
                    send(&h, status::CHECKSUM, &[]);
                    continue;
                }
                let Some(c) = o.chunks.get(&chunk) else {
                    send(&h, status::NOT_FOUND, &[]);
                    continue;
                };
                let at = (h.offset % CHUNK as u64) as usize;
                let end = (at + h.length as usize).min(c.len());
                let mut d = o.size.to_be_bytes().to_vec();
                d.extend_from_slice(&o.version.to_be_bytes());
                d.extend_from_slice(&c[at.min(end)..end]);
                send(&h, status::OK, &d);
            }
            Op::STAT => {
                let Some(o) = st.objects.get(&h.object_id) else {
                    send(&h, status::NOT_FOUND, &[]);
                    continue;
                };
                let complete = o.chunks.len() as u32 == chunks_of(o.size);
                let mut d = o.size.to_be_bytes().to_vec();
                d.extend_from_slice(&o.version.to_be_bytes());
                d.extend_from_slice(&(o.chunks.len() as u32).to_be_bytes());
                d.extend_from_slice(&u32::from(complete).to_be_bytes());
                send(&h, status::OK, &d);
            }
            Op::DELETE => {
                st.objects.remove(&h.object_id);
                send(&h, status::OK, &[]);
            }
            Op::LIST => {
                let after = (h.flags & wire::FLAG_AFTER != 0).then_some(h.object_id);
                // As the appliance's service: one reply's data (a put head and a fragment)
                // holds 43 entries, fewer than LIST_MAX.
                let room = (wire::PutHead::LEN + wire::FRAGMENT - 4) / wire::ListEntry::LEN;
                let max = (h.length as usize).clamp(1, wire::LIST_MAX).min(room);
                let items: Vec<(u64, u64, u64)> = st
                    .objects
                    .iter()
                    .filter(|(id, _)| after.is_none_or(|a| **id > a))
                    .take(max)
                    .map(|(id, o)| (*id, o.size, o.version))
                    .collect();
                let mut d = (items.len() as u32).to_be_bytes().to_vec();
                for (id, s, v) in items {
                    d.extend_from_slice(&id.to_be_bytes());
                    d.extend_from_slice(&s.to_be_bytes());
                    d.extend_from_slice(&v.to_be_bytes());
                }
                send(&h, status::OK, &d);
            }
            _ => send(&h, status::UNSUPPORTED, &[]),
        }
    }
}

fn from_of(_h: &Header, from: SocketAddr) -> SocketAddr {
    from
}

/// The metadata service on loopback over an embedded store in a temp dir, with `nodes`
/// registered (ids `node-0`.., prefixes `2001:db8:0:N::/64`, one failure domain each).
pub struct Meta {
    pub client: MetaClient,
    pub url: String,
    _server: ServerHandle,
    _dir: tempfile::TempDir,
}

impl Meta {
    pub fn start(nodes: &[&FakeNode]) -> Meta {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path().join("meta.log")).unwrap();
        let svc = Arc::new(MetadataService::new(Box::new(store), ServiceConfig::default()));
        let server = server::spawn(TcpListener::bind("127.0.0.1:0").unwrap(), svc).unwrap();
        let url = format!("http://{}", server.addr());
        let client = MetaClient::new(url.clone());
        for (i, _) in nodes.iter().enumerate() {
            client
                .register(&NodeRegistration {
                    id: node_id(i),
                    object_prefix: format!("2001:db8:0:{i}::/64").parse().unwrap(),
                    storage_sid: format!("fc00:0:{i}::5").parse().unwrap(),
                    capacity_bytes: 1 << 40,
                    used_bytes: 0,
                    failure_domain: format!("rack-{i}"),
                })
                .unwrap();
        }
        Meta { client, url, _server: server, _dir: dir }
    }
}

pub fn node_id(i: usize) -> String {
    format!("node-{i}")
}

/// Client config sending node `i`'s requests to `nodes[i]`, with short timeouts for tests.
pub fn config(nodes: &[&FakeNode]) -> objcli::Config {
    let mut c = objcli::Config::default();
    for (i, n) in nodes.iter().enumerate() {
        c.node_addrs.insert(node_id(i), n.addr);
    }
    c.transport.timeout = Duration::from_millis(60);
    c.transport.tries = 10;
    c
}

/// Deterministic content of `len` bytes.
pub fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

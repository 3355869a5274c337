//! Crash consistency: a stream of puts, deletes and gets driven through the non-blocking API on
//! the RAM device, a power cut at a random poll, remount, then:
//! * every object with no request in flight at the cut is exactly as the acknowledged requests
//!   left it (version, size, the set of chunks, every chunk's bytes);
//! * on objects with requests in flight, acknowledged chunks that no in-flight request touches
//!   are intact, and every chunk that reads back is one that was submitted, whole;
//! * no read ever returns a checksum error (nothing torn is ever referenced).
//!
//! Half the cuts tear whole blocks only, half also tear blocks inside (512-byte sectors).

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};

use common::{pattern, Rng};
use objstore::blk::RamDevice;
use objstore::index::{chunk_count, chunk_len};
use objstore::store::FormatOptions;
use objstore::{BlockingStore, Error, Reply, Request, Store, StoreCompletion, StoreConfig};

const OBJECTS: u64 = 8;
const SIZES: [u64; 6] = [0, 1, 100, 4096, 3 * 4096, 2 * 4096 + 5];

#[derive(Debug, Clone)]
enum Op {
    Put { object: u128, chunk: u32, version: u64, size: u64, key: u64 },
    Delete { object: u128 },
    Get { object: u128, chunk: u32 },
}

#[derive(Debug, Clone, Default)]
struct Obj {
    version: u64,
    size: u64,
    chunks: BTreeMap<u32, u64>, // chunk -> content key
}

fn content(key: u64, size: u64, chunk: u32) -> Vec<u8> {
    pattern(key, chunk_len(size, chunk))
}

/// Apply an acknowledged op to the model, with the store's rules.
fn model_apply(model: &mut HashMap<u128, Obj>, op: &Op) {
    match *op {
        Op::Put { object, chunk, version, size, key } => {
            let o = model.entry(object).or_insert_with(|| Obj { version, size, chunks: BTreeMap::new() });
            if o.version != version {
                *o = Obj { version, size, chunks: BTreeMap::new() };
            }
            if size > 0 {
                o.chunks.insert(chunk, key);
            }
        }
        Op::Delete { object } => {
            model.remove(&object);
        }
        Op::Get { .. } => {}
    }
}

#[derive(Default)]
struct Stats {
    acked: u64,
    in_flight_at_cut: u64,
    dirty_at_cut: u64,
    persisted_at_cut: u64,
    torn_at_cut: u64,
    checkpoints: u64,
    cuts_during_checkpoint: u64,
}

fn run_one(seed: u64, stats: &mut Stats) {
    let mut rng = Rng::new(seed);
    let dev = RamDevice::new(1024, seed);
    Store::format(&dev, FormatOptions { max_objects: 64, journal_blocks: 16 }).unwrap();
    let cfg = StoreConfig { max_requests: 16, checkpoint_depth: 2 };
    let mut store = Store::open(&dev, cfg).unwrap();

    let mut model: HashMap<u128, Obj> = HashMap::new();
    // What was submitted per object: latest version/size, every content key per (object, chunk).
    let mut sub: HashMap<u128, (u64, u64)> = HashMap::new();
    let mut submitted: HashMap<(u128, u32), HashSet<(u64, u64)>> = HashMap::new();
    let mut pending: HashMap<u64, Op> = HashMap::new();
    let mut next_tag = 1u64;
    let mut out: Vec<StoreCompletion> = Vec::new();
    let polls = 20 + rng.below(400);
    let mut acked = 0;

    for _ in 0..polls {
        // Submit a few requests.
        for _ in 0..rng.below(4) {
            let object = rng.below(OBJECTS) as u128;
            let roll = rng.below(10);
            let op = if roll < 6 {
                let (mut version, mut size) = *sub.get(&object).unwrap_or(&(0, 0));
                if version == 0 || rng.below(8) == 0 {
                    version += 1;
                    size = SIZES[rng.below(SIZES.len() as u64) as usize];
                }
                let chunk = rng.below(chunk_count(size)) as u32;
                Op::Put { object, chunk, version, size, key: rng.next() }
            } else if roll < 7 {
                Op::Delete { object }
            } else {
                Op::Get { object, chunk: rng.below(3) as u32 }
            };
            let data;
            let req = match op {
                Op::Put { object, chunk, version, size, key } => {
                    data = content(key, size, chunk);
                    Request::Put { object, chunk, data: &data, size, version }
                }
                Op::Delete { object } => Request::Delete { object },
                Op::Get { object, chunk } => Request::Get { object, chunk },
            };
            let tag = next_tag;
            next_tag += 1;
            match store.submit(req, tag) {
                Ok(()) => {
                    if let Op::Put { object, chunk, version, size, key } = op {
                        sub.insert(object, (version, size));
                        submitted.entry((object, chunk)).or_default().insert((key, size));
                    }
                    pending.insert(tag, op);
                }
                Err(Error::Busy) => {}
                // Refused up front (e.g. a get of a chunk not written yet): nothing happens.
                Err(_) => {}
            }
        }
        store.poll(&mut out);
        for c in out.drain(..) {
            let op = pending.remove(&c.tag).expect("completion for a submitted request");
            match (&op, c.result) {
                (Op::Get { object, chunk }, Ok(Reply::Get(d))) => {
                    let keys = &submitted[&(*object, *chunk)];
                    assert!(
                        keys.iter().any(|&(k, size)| content(k, size, *chunk) == *d),
                        "seed {seed}: get returned data never written"
                    );
                }
                (_, Err(Error::Checksum { .. })) => panic!("seed {seed}: checksum error before any crash"),
                (Op::Get { .. }, _) => {}
                (_, Ok(_)) => {
                    acked += 1;
                    model_apply(&mut model, &op);
                }
                // A put that lost to a newer version committed first.
                (_, Err(Error::StaleVersion { .. })) => {}
                (_, Err(e)) => panic!("seed {seed}: unexpected error {e}"),
            }
        }
    }

    // Power cut.
    // Odd seeds also tear blocks inside, sector by sector.
    let (after, report) = if seed % 2 == 1 { dev.crash_torn_sectors(seed ^ 0xDEAD) } else { dev.crash(seed ^ 0xDEAD) };
    stats.torn_at_cut += report.torn as u64;
    stats.cuts_during_checkpoint += u64::from(store.checkpoint_in_progress());
    stats.acked += acked;
    stats.in_flight_at_cut += pending.len() as u64;
    stats.dirty_at_cut += report.dirty as u64;
    stats.persisted_at_cut += report.persisted as u64;
    stats.checkpoints += store.superblock().generation - 1;
    drop(store);
    let mut s = BlockingStore::open(&after, StoreConfig::default())
        .unwrap_or_else(|e| panic!("seed {seed}: remount failed: {e}"));

    let mut busy: HashMap<u128, Vec<&Op>> = HashMap::new();
    for op in pending.values() {
        match op {
            Op::Put { object, .. } | Op::Delete { object } => busy.entry(*object).or_default().push(op),
            Op::Get { .. } => {}
        }
    }
    for object in 0..OBJECTS as u128 {
        let stat = s.stat(object);
        // Whatever is there reads back whole and as submitted.
        if let Ok(info) = &stat {
            for chunk in 0..info.chunks {
                match s.get_chunk(object, chunk) {
                    Ok(d) => {
                        let keys = submitted
                            .get(&(object, chunk))
                            .unwrap_or_else(|| panic!("seed {seed}: chunk never written"));
                        assert!(
                            keys.iter().any(|&(k, size)| size == info.size && content(k, size, chunk) == d),
                            "seed {seed}: object {object} chunk {chunk} is not a whole submitted chunk"
                        );
                    }
                    Err(Error::ChunkMissing { .. }) => {}
                    Err(e) => panic!("seed {seed}: object {object} chunk {chunk}: {e}"),
                }
            }
        }
        let expect = model.get(&object);
        match busy.get(&object) {
            None => match (expect, stat) {
                (None, Err(Error::NotFound(_))) => {}
                (Some(o), Ok(info)) => {
                    assert_eq!((info.version, info.size), (o.version, o.size), "seed {seed}: object {object}");
                    assert_eq!(info.present as usize, o.chunks.len(), "seed {seed}: object {object} chunk count");
                    for (&chunk, &key) in &o.chunks {
                        assert_eq!(s.get_chunk(object, chunk).unwrap(), content(key, o.size, chunk), "seed {seed}");
                    }
                }
                (e, st) => panic!("seed {seed}: object {object}: model {e:?}, store {st:?}"),
            },
            Some(ops) => {
                // Only same-version puts in flight: acknowledged chunks they do not touch are intact.
                let Some(o) = expect else { continue };
                let only_puts = ops.iter().all(|op| matches!(op, Op::Put { version, .. } if *version == o.version));
                if !only_puts {
                    continue;
                }
                let touched: HashSet<u32> = ops
                    .iter()
                    .filter_map(|op| if let Op::Put { chunk, .. } = op { Some(*chunk) } else { None })
                    .collect();
                let info = stat.unwrap_or_else(|e| panic!("seed {seed}: acknowledged object {object} lost: {e}"));
                assert_eq!((info.version, info.size), (o.version, o.size), "seed {seed}");
                for (&chunk, &key) in o.chunks.iter().filter(|(c, _)| !touched.contains(c)) {
                    assert_eq!(s.get_chunk(object, chunk).unwrap(), content(key, o.size, chunk), "seed {seed}");
                }
            }
        }
    }
    // The remounted store keeps working.
    s.put_object(1000, 1, &pattern(seed, 5000)).unwrap();
    assert_eq!(s.get_object(1000).unwrap(), pattern(seed, 5000));
}

#[test]
fn crash_at_random_points_loses_no_acknowledged_write() {
    let mut stats = Stats::default();
    for seed in 1..=300u64 {
        run_one(seed, &mut stats);
    }
    eprintln!(
        "acked {} requests, {} in flight at the cuts, {} dirty blocks at the cuts of which {} persisted whole and {} torn, \
         {} checkpoints, {} cuts during a checkpoint",
        stats.acked,
        stats.in_flight_at_cut,
        stats.dirty_at_cut,
        stats.persisted_at_cut,
        stats.torn_at_cut,
        stats.checkpoints,
        stats.cuts_during_checkpoint
    );
    // The runs did exercise what they claim to.
    assert!(stats.acked > 1000);
    assert!(stats.in_flight_at_cut > 100);
    assert!(stats.persisted_at_cut > 0 && stats.persisted_at_cut < stats.dirty_at_cut);
    assert!(stats.checkpoints > 50);
    assert!(stats.torn_at_cut > 0);
    assert!(stats.cuts_during_checkpoint > 0);
}

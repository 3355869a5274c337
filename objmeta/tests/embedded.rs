//! The embedded store: the conformance suite, reopen, and crash safety (the file cut at many
//! points, as a crash in the middle of an append leaves it).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::sync::Arc;

use objmeta::store::{EmbeddedStore, MetaStore};

#[test]
fn conformance() {
    let dir = tempfile::tempdir().unwrap();
    let s = EmbeddedStore::open(dir.path().join("c.db")).unwrap();
    common::conformance(&s);
}

#[test]
fn concurrent_compare_and_swap_loses_no_update() {
    let dir = tempfile::tempdir().unwrap();
    let s: Arc<dyn MetaStore> = Arc::new(EmbeddedStore::open(dir.path().join("c.db")).unwrap());
    common::concurrent_cas(s, 4, 50);
}

#[test]
fn reopen_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.db");
    {
        let s = EmbeddedStore::open(&path).unwrap();
        s.put(b"k1", b"v1").unwrap();
        s.put(b"k2", b"v2").unwrap();
        s.put(b"k1", b"v1'").unwrap();
        s.delete(b"k2").unwrap();
        assert!(s.compare_and_swap(b"k3", None, Some(b"v3")).unwrap());
    }
    let s = EmbeddedStore::open(&path).unwrap();
    assert_eq!(s.truncated_at_open(), 0);
    let all = s.list_prefix(b"", None, 10).unwrap();
    assert_eq!(all, vec![(b"k1".to_vec(), b"v1'".to_vec()), (b"k3".to_vec(), b"v3".to_vec())]);
}

#[test]
fn not_a_store_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    fs::write(&path, b"hello, this is not a store").unwrap();
    assert!(EmbeddedStore::open(&path).is_err());
    fs::write(&path, b"hel").unwrap();
    assert!(EmbeddedStore::open(&path).is_err());
}

/// SplitMix64: a fixed-seed generator, so a failure can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

#[test]
fn a_crash_at_any_point_keeps_every_completed_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db");
    let mut rng = Rng(0x5eed);
    // A history of puts (various sizes, overwrites) and deletes; after each, the file length.
    let mut ops = Vec::new();
    let mut ends = Vec::new();
    {
        let s = EmbeddedStore::open(&path).unwrap();
        ends.push(fs::metadata(&path).unwrap().len()); // after the header
        for i in 0..300 {
            let key = format!("k{}", rng.below(40)).into_bytes();
            if i % 7 == 3 {
                if s.delete(&key).unwrap() {
                    ops.push(Op::Delete(key));
                    ends.push(fs::metadata(&path).unwrap().len());
                }
            } else {
                let len = rng.below(600) as usize;
                let val: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                s.put(&key, &val).unwrap();
                ops.push(Op::Put(key, val));
                ends.push(fs::metadata(&path).unwrap().len());
            }
        }
    }
    let full = fs::read(&path).unwrap();
    assert_eq!(*ends.last().unwrap(), full.len() as u64);
    let expected_after = |n: usize| {
        let mut m = BTreeMap::new();
        for op in &ops[..n] {
            match op {
                Op::Put(k, v) => {
                    m.insert(k.clone(), v.clone());
                }
                Op::Delete(k) => {
                    m.remove(k);
                }
            }
        }
        m
    };
    // Every record boundary, one byte either side of it, and random points.
    let mut cuts: Vec<u64> = (0..=8).collect();
    for &e in &ends {
        cuts.extend([e.saturating_sub(1), e, e + 1]);
    }
    cuts.extend((0..300).map(|_| rng.below(full.len() as u64 + 1)));
    cuts.retain(|&c| c <= full.len() as u64);
    cuts.sort();
    cuts.dedup();
    let cut_path = dir.path().join("cut.db");
    for cut in cuts {
        fs::write(&cut_path, &full[..cut as usize]).unwrap();
        let s = EmbeddedStore::open(&cut_path).unwrap();
        // The writes that had completed when the file was this long.
        let done = ends.iter().filter(|&&e| e <= cut).count().saturating_sub(1);
        let want: Vec<(Vec<u8>, Vec<u8>)> = expected_after(done).into_iter().collect();
        assert_eq!(s.list_prefix(b"", None, 1000).unwrap(), want, "cut at {cut}");
        let good = if cut < 8 { 8 } else { ends[done] };
        assert_eq!(s.truncated_at_open(), if cut < 8 { cut } else { cut - good }, "cut at {cut}");
        // The store goes on working after the repair, and that survives a reopen too.
        s.put(b"after-crash", b"yes").unwrap();
        drop(s);
        let s = EmbeddedStore::open(&cut_path).unwrap();
        assert_eq!(s.truncated_at_open(), 0);
        assert_eq!(s.get(b"after-crash").unwrap().as_deref(), Some(&b"yes"[..]));
        assert_eq!(s.list_prefix(b"", None, 1000).unwrap().len(), want.len() + 1);
    }
}

#[test]
fn a_garbage_tail_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.db");
    {
        let s = EmbeddedStore::open(&path).unwrap();
        s.put(b"a", b"1").unwrap();
    }
    let good = fs::metadata(&path).unwrap().len();
    let mut bytes = fs::read(&path).unwrap();
    bytes.extend_from_slice(&[0x17; 100]);
    fs::write(&path, &bytes).unwrap();
    let s = EmbeddedStore::open(&path).unwrap();
    assert_eq!(s.truncated_at_open(), 100);
    assert_eq!(fs::metadata(&path).unwrap().len(), good);
    assert_eq!(s.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
}

#[test]
fn compaction_keeps_the_live_data_and_shrinks_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.db");
    let big = vec![0xab; 64 << 10];
    {
        let s = EmbeddedStore::open(&path).unwrap();
        // ~6 MiB of overwrites of 4 keys: compaction runs on its own past 4 MiB.
        for i in 0..100u32 {
            let mut v = big.clone();
            v[..4].copy_from_slice(&i.to_le_bytes());
            s.put(format!("k{}", i % 4).as_bytes(), &v).unwrap();
        }
        s.put(b"small", b"x").unwrap();
        // 6.4 MiB written; compacted to 4 live keys at ~4 MiB, then 2.3 MiB more.
        assert!(fs::metadata(&path).unwrap().len() < 4 << 20, "compacted");
        s.compact_now().unwrap();
        s.put(b"after", b"y").unwrap();
    }
    assert!(!dir.path().join("big.db.compact").exists());
    let s = EmbeddedStore::open(&path).unwrap();
    assert_eq!(s.truncated_at_open(), 0);
    for k in 0..4u32 {
        let v = s.get(format!("k{k}").as_bytes()).unwrap().unwrap();
        assert_eq!(u32::from_le_bytes(v[..4].try_into().unwrap()), 96 + k);
        assert_eq!(v.len(), big.len());
    }
    assert_eq!(s.get(b"small").unwrap().as_deref(), Some(&b"x"[..]));
    assert_eq!(s.get(b"after").unwrap().as_deref(), Some(&b"y"[..]));
}

//! The local chunk cache: one file per chunk, named by its digest, under `<state>/chunks/`.
//!
//! Invariants:
//! * a chunk file appears only whole: it is written to `<digest>.tmp` and renamed into place;
//! * a chunk file is trusted only after its SHA-256 was checked in this process's lifetime:
//!   chunks found at start (a cache that survived a restart or a crash) are indexed as
//!   unverified and hashed on first reuse; a mismatch removes the file (counted) and the chunk
//!   is fetched again, so a torn or corrupted file never returns wrong bytes;
//! * the bytes held stay under `max_bytes`: an insert evicts least recently used chunks first.
//!
//! Chunks are shared by every image that has them (same digest, one file).
//! Limits: the index lives in memory (about 100 bytes per chunk); file I/O is done outside
//! the index lock, so a reader may find a file evicted under it: that read is a miss.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};

use crate::metrics::Metrics;

/// A SHA-256 digest.
pub type Digest = [u8; 32];

/// Lower-case hex of a digest.
pub fn hex(d: &Digest) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// A digest from 64 hex digits.
pub fn parse_hex(s: &str) -> Option<Digest> {
    if s.len() != 64 {
        return None;
    }
    let mut d = [0u8; 32];
    for (i, b) in d.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(d)
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> Digest {
    Sha256::digest(data).into()
}

struct Entry {
    len: u32,
    tick: u64,
    verified: bool,
}

#[derive(Default)]
struct Index {
    entries: HashMap<Digest, Entry>,
    lru: BTreeMap<u64, Digest>,
    tick: u64,
    bytes: u64,
}

impl Index {
    fn touch(&mut self, d: &Digest) {
        self.tick += 1;
        let t = self.tick;
        if let Some(e) = self.entries.get_mut(d) {
            self.lru.remove(&e.tick);
            e.tick = t;
            self.lru.insert(t, *d);
        }
    }

    fn remove(&mut self, d: &Digest) -> bool {
        match self.entries.remove(d) {
            Some(e) => {
                self.lru.remove(&e.tick);
                self.bytes -= u64::from(e.len);
                true
            }
            None => false,
        }
    }
}

/// See the module doc.
pub struct ChunkCache {
    dir: PathBuf,
    max_bytes: u64,
    index: Mutex<Index>,
    metrics: Arc<Metrics>,
}

/// What [`ChunkCache::read`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    Hit,
    Miss,
}

impl ChunkCache {
    /// Opens (creating) the cache in `dir`, indexing the chunk files there as unverified
    /// (oldest modification first in the LRU order) and removing leftover `.tmp` files.
    pub fn open(dir: &Path, max_bytes: u64, metrics: Arc<Metrics>) -> io::Result<ChunkCache> {
        std::fs::create_dir_all(dir)?;
        let mut found = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            match parse_hex(&name) {
                Some(d) => {
                    let md = e.metadata()?;
                    found.push((md.modified().ok(), d, md.len()));
                }
                None => {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        found.sort();
        let mut idx = Index::default();
        for (_, d, len) in found {
            idx.tick += 1;
            idx.entries.insert(d, Entry { len: len as u32, tick: idx.tick, verified: false });
            idx.lru.insert(idx.tick, d);
            idx.bytes += len;
        }
        let c = ChunkCache { dir: dir.to_path_buf(), max_bytes, index: Mutex::new(idx), metrics };
        c.metrics.cache_max_bytes.store(max_bytes, Ordering::Relaxed);
        c.evict_to(max_bytes);
        c.publish();
        Ok(c)
    }

    fn path(&self, d: &Digest) -> PathBuf {
        self.dir.join(hex(d))
    }

    fn publish(&self) {
        let i = self.index.lock().expect("lock");
        self.metrics.cache_bytes.store(i.bytes, Ordering::Relaxed);
        self.metrics.cache_chunks.store(i.entries.len() as u64, Ordering::Relaxed);
    }

    pub fn contains(&self, d: &Digest) -> bool {
        self.index.lock().expect("lock").entries.contains_key(d)
    }

    /// Bytes and chunks held.
    pub fn usage(&self) -> (u64, usize) {
        let i = self.index.lock().expect("lock");
        (i.bytes, i.entries.len())
    }

    /// Copies `buf.len()` bytes at `offset` of chunk `d` into `buf`, verifying the chunk first
    /// if this process has not yet. A chunk not held, shorter than asked, evicted meanwhile or
    /// failing its check is a [`Read::Miss`].
    pub fn read(&self, d: &Digest, offset: u32, buf: &mut [u8]) -> Read {
        let verified = {
            let mut i = self.index.lock().expect("lock");
            let Some(e) = i.entries.get(d) else {
                return Read::Miss;
            };
            if u64::from(offset) + buf.len() as u64 > u64::from(e.len) {
                return Read::Miss;
            }
            let v = e.verified;
            i.touch(d);
            v
        };
        let Ok(f) = File::open(self.path(d)) else {
            self.forget(d);
            return Read::Miss;
        };
        if !verified {
            let mut all = Vec::new();
            if io::Read::read_to_end(&mut &f, &mut all).is_err() || sha256(&all) != *d {
                Metrics::add(&self.metrics.verify_failures, 1);
                self.metrics.set_error(format!("cached chunk {} failed its digest check: removed", hex(d)));
                self.remove(d);
                return Read::Miss;
            }
            if let Some(e) = self.index.lock().expect("lock").entries.get_mut(d) {
                e.verified = true;
            }
            let o = offset as usize;
            buf.copy_from_slice(&all[o..o + buf.len()]);
            return Read::Hit;
        }
        match f.read_exact_at(buf, u64::from(offset)) {
            Ok(()) => Read::Hit,
            Err(_) => {
                self.forget(d);
                Read::Miss
            }
        }
    }

    /// Stores a chunk whose digest the caller has checked, then evicts down to the limit.
    pub fn insert(&self, d: &Digest, data: &[u8]) -> io::Result<()> {
        let final_path = self.path(d);
        let tmp = self.dir.join(format!("{}.tmp.{:?}", hex(d), std::thread::current().id()));
        {
            let mut f = File::create(&tmp)?;
            f.write_all(data)?;
        }
        std::fs::rename(&tmp, &final_path)?;
        {
            let mut i = self.index.lock().expect("lock");
            i.remove(d);
            i.tick += 1;
            let t = i.tick;
            i.entries.insert(*d, Entry { len: data.len() as u32, tick: t, verified: true });
            i.lru.insert(t, *d);
            i.bytes += data.len() as u64;
        }
        self.evict_to(self.max_bytes);
        self.publish();
        Ok(())
    }

    /// Evicts least recently used chunks until at most `limit` bytes are held.
    fn evict_to(&self, limit: u64) {
        loop {
            let victim = {
                let mut i = self.index.lock().expect("lock");
                if i.bytes <= limit {
                    return;
                }
                let Some((_, d)) = i.lru.pop_first() else {
                    return;
                };
                let e = i.entries.remove(&d).expect("lru and entries agree");
                i.bytes -= u64::from(e.len);
                d
            };
            let _ = std::fs::remove_file(self.path(&victim));
            Metrics::add(&self.metrics.evictions, 1);
        }
    }

    fn forget(&self, d: &Digest) {
        self.index.lock().expect("lock").remove(d);
        self.publish();
    }

    /// Removes a chunk (index and file).
    pub fn remove(&self, d: &Digest) {
        let had = self.index.lock().expect("lock").remove(d);
        if had {
            let _ = std::fs::remove_file(self.path(d));
        }
        self.publish();
    }

    /// Removes every chunk not in `keep`; returns how many went.
    pub fn retain(&self, keep: &HashSet<Digest>) -> usize {
        let gone: Vec<Digest> = {
            let i = self.index.lock().expect("lock");
            i.entries.keys().filter(|d| !keep.contains(*d)).copied().collect()
        };
        for d in &gone {
            self.remove(d);
        }
        gone.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(dir: &Path, max: u64) -> ChunkCache {
        ChunkCache::open(dir, max, Arc::new(Metrics::default())).unwrap()
    }

    #[test]
    fn stores_reads_and_evicts_least_recently_used() {
        let t = tempfile::tempdir().unwrap();
        let c = cache(t.path(), 3000);
        let chunks: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 1000]).collect();
        let ds: Vec<Digest> = chunks.iter().map(|c| sha256(c)).collect();
        for i in 0..3 {
            c.insert(&ds[i], &chunks[i]).unwrap();
        }
        let mut b = [0u8; 10];
        assert_eq!(c.read(&ds[0], 990, &mut b), Read::Hit); // 0 is now the most recent
        assert_eq!(b, [0u8; 10]);
        assert_eq!(c.read(&ds[0], 995, &mut b), Read::Miss, "past the end");
        c.insert(&ds[3], &chunks[3]).unwrap();
        assert!(!c.contains(&ds[1]), "1 was least recently used");
        assert!(c.contains(&ds[0]) && c.contains(&ds[2]) && c.contains(&ds[3]));
        assert_eq!(c.usage(), (3000, 3));
        assert_eq!(c.retain(&[ds[3]].into_iter().collect()), 2);
        assert_eq!(c.usage(), (1000, 1));
    }

    #[test]
    fn survives_reopen_and_verifies_on_reuse() {
        let t = tempfile::tempdir().unwrap();
        let good = vec![7u8; 4096];
        let bad = vec![9u8; 4096];
        let (dg, db) = (sha256(&good), sha256(&bad));
        {
            let c = cache(t.path(), 1 << 20);
            c.insert(&dg, &good).unwrap();
            c.insert(&db, &bad).unwrap();
        }
        // A bit flips in one file while the agent is down; a torn temp file is left behind.
        let p = t.path().join(hex(&db));
        let mut v = std::fs::read(&p).unwrap();
        v[100] ^= 1;
        std::fs::write(&p, v).unwrap();
        std::fs::write(t.path().join("abc.tmp.1"), b"junk").unwrap();
        let m = Arc::new(Metrics::default());
        let c = ChunkCache::open(t.path(), 1 << 20, m.clone()).unwrap();
        assert!(!t.path().join("abc.tmp.1").exists());
        let mut b = [0u8; 8];
        assert_eq!(c.read(&dg, 8, &mut b), Read::Hit);
        assert_eq!(b, [7u8; 8]);
        assert_eq!(c.read(&db, 8, &mut b), Read::Miss, "the corrupted chunk is not served");
        assert!(!c.contains(&db) && !p.exists());
        assert_eq!(m.verify_failures.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn hex_round_trip() {
        let d = sha256(b"x");
        assert_eq!(parse_hex(&hex(&d)), Some(d));
        assert_eq!(parse_hex("zz"), None);
    }
}

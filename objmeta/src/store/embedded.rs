//! The embedded store: one file, an append-only log of records replayed into memory at open.
//!
//! File format: the 8-byte magic `OBJMETA1`, then records
//! `[len: u32 LE][crc32c(payload): u32 LE][payload: len bytes]` where the payload is
//! `[op: u8 (1 put, 2 delete)][key len: u32 LE][key][value]` (the value is the rest).
//!
//! Crash safety: a mutation appends one record and `fdatasync`s the file before it returns
//! (and before the in-memory map changes), under one mutex, so at most the last record of the
//! file can be torn by a crash. At open the log is replayed up to the first record that is
//! short or fails its CRC; that tail is cut off (and the file synced) so later appends follow
//! the last good record. Every record whose append returned `Ok` is therefore present after a
//! crash at any point. A failed append is undone by truncating back; if even that fails the
//! store refuses further writes ([`StoreError::Poisoned`]).
//!
//! Compaction: when the log is over 4 MiB and more than twice the live data, the live map is
//! written to `FILE.compact`, synced, renamed over the file, and the directory synced: the
//! rename is atomic, so a crash leaves either the old or the new log (a stale `.compact` file
//! is removed at open).
//!
//! Limits: the whole data set lives in memory; one writer at a time (a mutex); a CRC failure
//! in the *middle* of the log (media corruption, not a crash) also cuts the log there.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::ops::Bound;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{Kv, MetaStore};
use crate::error::StoreError;

const MAGIC: &[u8; 8] = b"OBJMETA1";
const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
const COMPACT_MIN: u64 = 4 << 20;

struct Inner {
    file: File,
    /// Bytes of valid log (the append offset).
    len: u64,
    map: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Bytes the live map would take as a fresh log.
    live: u64,
    poisoned: Option<String>,
}

/// A crash-safe single-file key-value store. See the module doc.
pub struct EmbeddedStore {
    path: PathBuf,
    inner: Mutex<Inner>,
    /// Bytes of torn tail cut off at open.
    truncated_at_open: u64,
}

fn record(op: u8, key: &[u8], value: &[u8]) -> Vec<u8> {
    let plen = 1 + 4 + key.len() + value.len();
    let mut r = Vec::with_capacity(8 + plen);
    r.extend_from_slice(&(plen as u32).to_le_bytes());
    r.extend_from_slice(&[0; 4]);
    r.push(op);
    r.extend_from_slice(&(key.len() as u32).to_le_bytes());
    r.extend_from_slice(key);
    r.extend_from_slice(value);
    let crc = crc32c::crc32c(&r[8..]);
    r[4..8].copy_from_slice(&crc.to_le_bytes());
    r
}

fn record_size(key: &[u8], value: &[u8]) -> u64 {
    (8 + 1 + 4 + key.len() + value.len()) as u64
}

/// Replays `buf` (after the magic) into `map`; returns the length of the valid prefix.
fn replay(buf: &[u8], map: &mut BTreeMap<Vec<u8>, Vec<u8>>) -> usize {
    let mut off = 0;
    loop {
        let Some(hdr) = buf.get(off..off + 8) else {
            return off;
        };
        let plen = u32::from_le_bytes(hdr[0..4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(hdr[4..8].try_into().unwrap());
        let Some(payload) = buf.get(off + 8..off + 8 + plen) else {
            return off;
        };
        if plen < 5 || crc32c::crc32c(payload) != crc {
            return off;
        }
        let klen = u32::from_le_bytes(payload[1..5].try_into().unwrap()) as usize;
        let Some(key) = payload.get(5..5 + klen) else {
            return off;
        };
        let value = &payload[5 + klen..];
        match payload[0] {
            OP_PUT => {
                map.insert(key.to_vec(), value.to_vec());
            }
            OP_DELETE => {
                map.remove(key);
            }
            _ => return off,
        }
        off += 8 + plen;
    }
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    File::open(dir)?.sync_all()
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store file at `path`, replaying its log.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let compact = compact_path(&path);
        if compact.exists() {
            fs::remove_file(&compact)?;
        }
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        let mut map = BTreeMap::new();
        let mut truncated = 0;
        let len = if buf.len() < MAGIC.len() {
            // New file, or a crash while the magic was being written: start afresh.
            if !MAGIC.starts_with(&buf) {
                return Err(corrupt(&path, "not an objmeta store (bad magic)"));
            }
            truncated = buf.len() as u64;
            file.set_len(0)?;
            file.write_all_at(MAGIC, 0)?;
            file.sync_all()?;
            sync_dir(&path)?;
            MAGIC.len() as u64
        } else {
            if &buf[..8] != MAGIC {
                return Err(corrupt(&path, "not an objmeta store (bad magic)"));
            }
            let valid = 8 + replay(&buf[8..], &mut map);
            if valid < buf.len() {
                truncated = (buf.len() - valid) as u64;
                file.set_len(valid as u64)?;
                file.sync_all()?;
            }
            valid as u64
        };
        let live = 8 + map.iter().map(|(k, v)| record_size(k, v)).sum::<u64>();
        Ok(Self {
            path,
            inner: Mutex::new(Inner { file, len, map, live, poisoned: None }),
            truncated_at_open: truncated,
        })
    }

    /// Bytes of torn or corrupt tail that were cut off when the file was opened.
    pub fn truncated_at_open(&self) -> u64 {
        self.truncated_at_open
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map ahead of the file (the map is
        // changed only after a successful append), so a poisoned mutex is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends one record durably and applies it to the map.
    fn apply(&self, inner: &mut Inner, op: u8, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        if let Some(why) = &inner.poisoned {
            return Err(StoreError::Poisoned(why.clone()));
        }
        let rec = record(op, key, value);
        let res = inner.file.write_all_at(&rec, inner.len).and_then(|()| inner.file.sync_data());
        if let Err(e) = res {
            if let Err(e2) = inner.file.set_len(inner.len).and_then(|()| inner.file.sync_data()) {
                inner.poisoned = Some(format!("append failed ({e}), truncate failed ({e2})"));
            }
            return Err(e.into());
        }
        inner.len += rec.len() as u64;
        match op {
            OP_PUT => {
                if let Some(old) = inner.map.insert(key.to_vec(), value.to_vec()) {
                    inner.live -= record_size(key, &old);
                }
                inner.live += record_size(key, value);
            }
            _ => {
                if let Some(old) = inner.map.remove(key) {
                    inner.live -= record_size(key, &old);
                }
            }
        }
        if inner.len > COMPACT_MIN && inner.len > 2 * inner.live {
            // The record is durable whatever happens here: a failed compaction is not an
            // error of this mutation (it is retried on a later one).
            self.compact(inner);
        }
        Ok(())
    }

    /// Rewrites the log with only the live records (see the module doc).
    fn compact(&self, inner: &mut Inner) {
        let tmp = compact_path(&self.path);
        let mut out = Vec::with_capacity(inner.live as usize);
        out.extend_from_slice(MAGIC);
        for (k, v) in &inner.map {
            out.extend_from_slice(&record(OP_PUT, k, v));
        }
        let written = File::create(&tmp).and_then(|mut f| {
            f.write_all(&out)?;
            f.sync_all()
        });
        if written.and_then(|()| fs::rename(&tmp, &self.path)).is_err() {
            let _ = fs::remove_file(&tmp);
            return;
        }
        // The new log is in place: from here on `inner.file` (the old inode) must not be used.
        match sync_dir(&self.path).and_then(|()| OpenOptions::new().read(true).write(true).open(&self.path)) {
            Ok(f) => {
                inner.file = f;
                inner.len = out.len() as u64;
            }
            Err(e) => inner.poisoned = Some(format!("reopen after compaction failed: {e}")),
        }
    }

    /// Forces a compaction now (for tests and tools).
    pub fn compact_now(&self) -> Result<(), StoreError> {
        let mut g = self.lock();
        self.compact(&mut g);
        match &g.poisoned {
            Some(why) => Err(StoreError::Poisoned(why.clone())),
            None => Ok(()),
        }
    }
}

fn compact_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".compact");
    PathBuf::from(p)
}

fn corrupt(path: &Path, msg: &str) -> StoreError {
    StoreError::Corrupt { path: path.display().to_string(), msg: msg.to_string() }
}

impl MetaStore for EmbeddedStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().map.get(key).cloned())
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let mut g = self.lock();
        self.apply(&mut g, OP_PUT, key, value)
    }

    fn delete(&self, key: &[u8]) -> Result<bool, StoreError> {
        let mut g = self.lock();
        if !g.map.contains_key(key) {
            return Ok(false);
        }
        self.apply(&mut g, OP_DELETE, key, &[])?;
        Ok(true)
    }

    fn list_prefix(&self, prefix: &[u8], start_after: Option<&[u8]>, limit: usize) -> Result<Vec<Kv>, StoreError> {
        let g = self.lock();
        let lower = match start_after {
            Some(s) if s >= prefix => Bound::Excluded(s.to_vec()),
            _ => Bound::Included(prefix.to_vec()),
        };
        Ok(g.map
            .range((lower, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn compare_and_swap(&self, key: &[u8], expected: Option<&[u8]>, new: Option<&[u8]>) -> Result<bool, StoreError> {
        let mut g = self.lock();
        if g.map.get(key).map(Vec::as_slice) != expected {
            return Ok(false);
        }
        match new {
            Some(v) => self.apply(&mut g, OP_PUT, key, v)?,
            None if expected.is_some() => self.apply(&mut g, OP_DELETE, key, &[])?,
            None => {}
        }
        Ok(true)
    }
}

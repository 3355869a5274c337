//! Container images in the object store (issue 11): the **manifest** of an image and the
//! **start traces** that hosts record, as the metadata service keeps them. Plain data, JSON on
//! the wire and in the store, with the validation the service applies before storing them.
//! The reference is `docs/images.md`.
//!
//! An image is a read-only block image (an erofs file system) cut into fixed-size chunks; each
//! chunk is an ordinary object of the store named `sha256:<hex digest of its bytes>`, so equal
//! chunks are stored once (pushing the same root file system again stores nothing new). The
//! manifest lists, in image order, each chunk's digest, object id and replica nodes (a snapshot
//! of the chunk object's metadata, so a host reads a chunk without asking the metadata
//! service first; the digest is checked on every fetch, so a stale entry can cost a retry but
//! never wrong bytes).
//!
//! A trace is the order and time of the first access to each chunk during one container start
//! on one host. Traces are kept per image digest (a trace describes one exact image), at most
//! [`TRACES_KEPT`] per image (the oldest go first); merging them into a prefetch order is the
//! host agent's job (`imgagent::trace`).
//!
//! Limits: a manifest must fit a request body (1 MiB): at about 110 bytes per chunk that is
//! some 9000 chunks, 560 MiB with 64 KiB chunks.

use serde::{Deserialize, Serialize};

use crate::error::MetaError;

/// Image formats a manifest may declare.
pub const FORMATS: &[&str] = &["erofs"];
/// Smallest and largest chunk size (bytes, powers of two).
pub const CHUNK_MIN: u32 = 4096;
pub const CHUNK_MAX: u32 = 4 << 20;
/// Traces kept per image digest.
pub const TRACES_KEPT: usize = 32;
/// Most entries in one trace.
pub const TRACE_ENTRIES_MAX: usize = 100_000;

/// The name of the object that holds a chunk with this digest (lower-case hex SHA-256).
pub fn chunk_object_name(digest: &str) -> String {
    format!("sha256:{digest}")
}

/// One chunk of an image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    /// SHA-256 of the chunk's bytes, 64 lower-case hex digits. The last chunk of an image may
    /// be shorter than `chunk_size`; its digest is over its real length.
    pub digest: String,
    /// The object holding it (named [`chunk_object_name`]`(digest)`).
    pub object: u64,
    /// Node ids of its replicas, in placement order (as the metadata service gave them).
    pub replicas: Vec<String>,
}

/// What `objcli image push` stores for an image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageManifest {
    /// 1..=128 characters of `[A-Za-z0-9._-]`.
    pub name: String,
    /// `erofs` (see [`FORMATS`]).
    pub format: String,
    /// Bytes of every chunk but the last.
    pub chunk_size: u32,
    /// Bytes of the image.
    pub size: u64,
    /// SHA-256 over the concatenated chunk digests (hex): the image's identity. Traces are
    /// kept per digest.
    pub digest: String,
    pub chunks: Vec<ChunkRef>,
    /// When it was pushed (ms since the Unix epoch); informational.
    #[serde(default)]
    pub created: u64,
}

impl ImageManifest {
    /// Number of chunks an image of `size` bytes has with `chunk_size`.
    pub fn chunk_count(size: u64, chunk_size: u32) -> usize {
        size.div_ceil(u64::from(chunk_size)) as usize
    }

    /// Bytes of chunk `i`.
    pub fn chunk_len(&self, i: usize) -> u32 {
        let start = i as u64 * u64::from(self.chunk_size);
        (self.size - start).min(u64::from(self.chunk_size)) as u32
    }

    /// Checks the invariants: a known format, a power-of-two chunk size in range, exactly
    /// `ceil(size / chunk_size)` chunks, well-formed digests, object ids that are not 0, at
    /// least one replica per chunk.
    pub fn validate(&self) -> Result<(), MetaError> {
        validate_image_name(&self.name)?;
        let bad = |m: String| Err(MetaError::Invalid(format!("manifest of {}: {m}", self.name)));
        if !FORMATS.contains(&self.format.as_str()) {
            return bad(format!("format {:?}: expected one of {FORMATS:?}", self.format));
        }
        if !self.chunk_size.is_power_of_two() || !(CHUNK_MIN..=CHUNK_MAX).contains(&self.chunk_size) {
            return bad(format!("chunk_size {}: a power of two from {CHUNK_MIN} to {CHUNK_MAX}", self.chunk_size));
        }
        if self.size == 0 {
            return bad("size 0".into());
        }
        let want = Self::chunk_count(self.size, self.chunk_size);
        if self.chunks.len() != want {
            return bad(format!(
                "{} chunks listed, a {}-byte image of {}-byte chunks has {want}",
                self.chunks.len(),
                self.size,
                self.chunk_size
            ));
        }
        if !is_digest(&self.digest) {
            return bad(format!("digest {:?}: 64 lower-case hex digits", self.digest));
        }
        for (i, c) in self.chunks.iter().enumerate() {
            if !is_digest(&c.digest) {
                return bad(format!("chunk {i}: digest {:?}: 64 lower-case hex digits", c.digest));
            }
            if c.object == 0 {
                return bad(format!("chunk {i}: object id 0"));
            }
            if c.replicas.is_empty() {
                return bad(format!("chunk {i}: no replicas"));
            }
        }
        Ok(())
    }
}

/// One first access of a start: chunk `chunk` was first read `at_us` microseconds after the
/// image was opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceEntry {
    pub chunk: u32,
    pub at_us: u64,
}

/// The first accesses of one container start on one host, in access order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trace {
    /// The image digest the trace was recorded on ([`ImageManifest::digest`]).
    pub image_digest: String,
    /// Who recorded it (free text: a host name).
    pub host: String,
    /// When the start began (ms since the Unix epoch).
    pub started_ms: u64,
    pub entries: Vec<TraceEntry>,
}

impl Trace {
    /// Checks the trace against the manifest it is stored with: same digest, chunk indices
    /// inside the image, each chunk at most once, times not decreasing.
    pub fn validate(&self, m: &ImageManifest) -> Result<(), MetaError> {
        let bad = |msg: String| Err(MetaError::Invalid(format!("trace of {}: {msg}", m.name)));
        if self.image_digest != m.digest {
            return Err(MetaError::Conflict(format!(
                "trace of {}: recorded on image {}, the image is now {}",
                m.name, self.image_digest, m.digest
            )));
        }
        if self.host.is_empty() || self.host.len() > 256 || self.host.chars().any(char::is_control) {
            return bad(format!("host {:?}: 1 to 256 bytes, no control characters", self.host));
        }
        if self.entries.len() > TRACE_ENTRIES_MAX {
            return bad(format!("{} entries, at most {TRACE_ENTRIES_MAX}", self.entries.len()));
        }
        let mut seen = vec![false; m.chunks.len()];
        let mut last = 0;
        for e in &self.entries {
            let Some(s) = seen.get_mut(e.chunk as usize) else {
                return bad(format!("chunk {} outside the image's {} chunks", e.chunk, m.chunks.len()));
            };
            if *s {
                return bad(format!("chunk {} listed twice", e.chunk));
            }
            *s = true;
            if e.at_us < last {
                return bad(format!("chunk {}: time {} µs before the previous entry's {last}", e.chunk, e.at_us));
            }
            last = e.at_us;
        }
        Ok(())
    }
}

/// Validates an image name: 1..=128 characters of `[A-Za-z0-9._-]` (a path segment and a
/// store key without escaping).
pub fn validate_image_name(name: &str) -> Result<(), MetaError> {
    if name.is_empty()
        || name.len() > 128
        || name.starts_with('.')
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(MetaError::Invalid(format!(
            "image name {name:?}: 1 to 128 characters of [A-Za-z0-9._-], not starting with '.'"
        )));
    }
    Ok(())
}

/// Whether `s` is 64 lower-case hex digits.
pub fn is_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(i: u8) -> String {
        format!("{:064x}", i)
    }

    fn manifest(size: u64, chunk: u32) -> ImageManifest {
        let n = ImageManifest::chunk_count(size, chunk);
        ImageManifest {
            name: "deb".into(),
            format: "erofs".into(),
            chunk_size: chunk,
            size,
            digest: d(0),
            chunks: (0..n)
                .map(|i| ChunkRef { digest: d(i as u8 + 1), object: i as u64 + 1, replicas: vec!["n1".into()] })
                .collect(),
            created: 0,
        }
    }

    #[test]
    fn manifest_invariants() {
        let m = manifest(65536 * 2 + 10, 65536);
        m.validate().unwrap();
        assert_eq!(m.chunks.len(), 3);
        assert_eq!(m.chunk_len(2), 10);
        assert_eq!(m.chunk_len(0), 65536);
        let mut b = m.clone();
        b.chunks.pop();
        assert!(b.validate().is_err());
        let mut b = m.clone();
        b.chunk_size = 3000;
        assert!(b.validate().is_err());
        let mut b = m.clone();
        b.format = "tar".into();
        assert!(b.validate().is_err());
        let mut b = m.clone();
        b.chunks[1].digest = "ABC".into();
        assert!(b.validate().is_err());
        let mut b = m.clone();
        b.chunks[1].object = 0;
        assert!(b.validate().is_err());
        let mut b = m;
        b.name = "a/b".into();
        assert!(b.validate().is_err());
    }

    #[test]
    fn trace_invariants() {
        let m = manifest(65536 * 4, 65536);
        let t = |entries: &[(u32, u64)]| Trace {
            image_digest: m.digest.clone(),
            host: "h1".into(),
            started_ms: 1,
            entries: entries.iter().map(|&(chunk, at_us)| TraceEntry { chunk, at_us }).collect(),
        };
        t(&[(0, 0), (3, 5), (1, 5)]).validate(&m).unwrap();
        assert!(t(&[(0, 0), (0, 5)]).validate(&m).is_err(), "twice");
        assert!(t(&[(4, 0)]).validate(&m).is_err(), "outside");
        assert!(t(&[(1, 9), (2, 3)]).validate(&m).is_err(), "time goes back");
        let mut other = t(&[]);
        other.image_digest = d(9);
        assert!(matches!(other.validate(&m), Err(MetaError::Conflict(_))));
    }
}

//! `objcli image push`: a root file system → an erofs image → chunks stored as objects named
//! by their digest → the manifest at the metadata service.
//!
//! Each distinct chunk is created at the metadata service by name (`sha256:<digest>`, the
//! create is idempotent). An object already `complete` is reused as it is (nothing is sent);
//! one still `creating` (an earlier push that died) is written again to every replica and
//! committed. So pushing the same tree twice stores nothing new, and an interrupted push is
//! finished by running it again. The manifest is stored last: an image is visible only when
//! every chunk it names is complete on every replica.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use objmeta::client::MetaClient;
use objmeta::image::{chunk_object_name, validate_image_name, ChunkRef, ImageManifest, CHUNK_MAX, CHUNK_MIN};
use objmeta::model::{CreateRequest, ObjectState};

use super::pack;
use crate::client::{Config, Error, StorageClient};

/// Tunables of a push.
#[derive(Clone, Debug)]
pub struct PushOptions {
    /// Bytes per chunk (a power of two, 4 KiB to 4 MiB).
    pub chunk_size: u32,
    /// Replicas of every chunk.
    pub replicas: usize,
    /// Chunks written at once (one client, socket and window each).
    pub parallel: usize,
    /// Keep the built image here instead of a temporary file.
    pub keep_image: Option<PathBuf>,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions { chunk_size: 64 << 10, replicas: 3, parallel: 4, keep_image: None }
    }
}

/// What a push did.
#[derive(Clone, Debug)]
pub struct PushReport {
    pub manifest: ImageManifest,
    /// Distinct chunks written now.
    pub chunks_stored: usize,
    /// Distinct chunks that were already complete in the store.
    pub chunks_reused: usize,
    /// Bytes written now (per replica).
    pub bytes_stored: u64,
}

struct TempFile(PathBuf, bool);

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.1 {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// Packs `rootfs` and pushes it as image `name` (see the module doc).
pub fn push(
    meta: &MetaClient,
    cfg: &Config,
    rootfs: &Path,
    name: &str,
    opts: &PushOptions,
) -> Result<PushReport, Error> {
    validate_image_name(name).map_err(|e| Error::Refused(e.to_string()))?;
    if !opts.chunk_size.is_power_of_two() || !(CHUNK_MIN..=CHUNK_MAX).contains(&opts.chunk_size) {
        return Err(Error::Refused(format!(
            "chunk size {}: a power of two from {CHUNK_MIN} to {CHUNK_MAX} bytes",
            opts.chunk_size
        )));
    }
    let image = match &opts.keep_image {
        Some(p) => TempFile(p.clone(), false),
        None => TempFile(std::env::temp_dir().join(format!("objcli-image-{}-{name}.erofs", std::process::id())), true),
    };
    pack::build_erofs(rootfs, &image.0)?;
    push_image_file(meta, cfg, &image.0, name, opts)
}

/// Pushes an image file that is already built (erofs) as image `name`.
pub fn push_image_file(
    meta: &MetaClient,
    cfg: &Config,
    image: &Path,
    name: &str,
    opts: &PushOptions,
) -> Result<PushReport, Error> {
    validate_image_name(name).map_err(|e| Error::Refused(e.to_string()))?;
    let size = std::fs::metadata(image)?.len();
    if size == 0 {
        return Err(Error::Refused(format!("{}: empty image", image.display())));
    }
    let cs = opts.chunk_size as usize;
    let digests = pack::chunk_digests(image, cs)?;
    // One job per distinct digest (the first chunk that has it).
    let mut first: Vec<usize> = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for (i, d) in digests.iter().enumerate() {
        seen.entry(d.as_str()).or_insert_with(|| {
            first.push(i);
            i
        });
    }
    let file = File::open(image)?;
    let next = AtomicUsize::new(0);
    let refs: Mutex<Vec<Option<ChunkRef>>> = Mutex::new(vec![None; digests.len()]);
    let stored = AtomicUsize::new(0);
    let reused = AtomicUsize::new(0);
    let bytes = AtomicUsize::new(0);
    let failure: Mutex<Option<Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..opts.parallel.max(1) {
            s.spawn(|| {
                let mut client = match StorageClient::new(cfg.clone()) {
                    Ok(c) => c,
                    Err(e) => {
                        failure.lock().expect("lock").get_or_insert(Error::Io(e));
                        return;
                    }
                };
                let mut buf = vec![0u8; cs];
                loop {
                    if failure.lock().expect("lock").is_some() {
                        return;
                    }
                    let k = next.fetch_add(1, Ordering::SeqCst);
                    let Some(&i) = first.get(k) else { return };
                    let off = i as u64 * cs as u64;
                    let len = (size - off).min(cs as u64) as usize;
                    let r = file
                        .read_exact_at(&mut buf[..len], off)
                        .map_err(Error::from)
                        .and_then(|()| store_chunk(meta, &mut client, &digests[i], &buf[..len], opts.replicas));
                    match r {
                        Ok((cref, new)) => {
                            if new {
                                stored.fetch_add(1, Ordering::SeqCst);
                                bytes.fetch_add(len, Ordering::SeqCst);
                            } else {
                                reused.fetch_add(1, Ordering::SeqCst);
                            }
                            refs.lock().expect("lock")[i] = Some(cref);
                        }
                        Err(e) => {
                            failure.lock().expect("lock").get_or_insert(e);
                            return;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().expect("lock") {
        return Err(e);
    }
    let by_digest: std::collections::HashMap<String, ChunkRef> =
        refs.into_inner().expect("lock").into_iter().flatten().map(|c| (c.digest.clone(), c)).collect();
    let chunks: Vec<ChunkRef> = digests.iter().map(|d| by_digest[d].clone()).collect();
    let manifest = ImageManifest {
        name: name.to_string(),
        format: "erofs".into(),
        chunk_size: opts.chunk_size,
        size,
        digest: pack::image_digest(digests.iter().map(String::as_str)),
        chunks,
        created: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
    };
    let manifest = meta.put_image(&manifest)?;
    Ok(PushReport {
        manifest,
        chunks_stored: stored.into_inner(),
        chunks_reused: reused.into_inner(),
        bytes_stored: bytes.into_inner() as u64,
    })
}

/// Stores one chunk unless it is already complete; returns its reference and whether it was
/// written now.
fn store_chunk(
    meta: &MetaClient,
    client: &mut StorageClient,
    digest: &str,
    data: &[u8],
    replicas: usize,
) -> Result<(ChunkRef, bool), Error> {
    let m = meta.create(&CreateRequest {
        id: None,
        name: Some(chunk_object_name(digest)),
        size: data.len() as u64,
        replicas: Some(replicas),
    })?;
    let new = match m.state {
        ObjectState::Complete => false,
        ObjectState::Creating => {
            let targets: Vec<_> = m.replicas.iter().map(|r| client.replica_target(r)).collect();
            client.write_replicas(m.id, m.version, data, &targets, &())?;
            meta.commit(m.id, m.version)?;
            true
        }
        ObjectState::Deleting => {
            return Err(Error::Refused(format!(
                "chunk object {} is being deleted; push again once it is gone",
                chunk_object_name(digest)
            )))
        }
    };
    Ok((
        ChunkRef {
            digest: digest.to_string(),
            object: m.id,
            replicas: m.replicas.iter().map(|r| r.node.clone()).collect(),
        },
        new,
    ))
}

//! Image manifests and start traces (issue 11; the data is [`crate::image`]).
//!
//! | key | value |
//! |---|---|
//! | `objmeta/images/<name>` | [`ImageManifest`] |
//! | `objmeta/image-traces/<name>/<image digest>/<started ms, 16 hex>-<fnv of host, 8 hex>` | [`Trace`] |
//!
//! A push of a name that exists replaces its manifest (a tag moved to a new image); the
//! traces of the old digest stay until the image is removed (they are found by digest, so they
//! never describe the wrong image). Adding a trace keeps the newest [`TRACES_KEPT`] of that
//! digest: the key sorts by start time, so the first keys of the listing are the oldest.

use super::{from_json, to_json, MetadataService};
use crate::error::MetaError;
use crate::image::{validate_image_name, ImageManifest, Trace, TRACES_KEPT};

const IMAGES: &str = "objmeta/images/";
const TRACES: &str = "objmeta/image-traces/";

fn image_key(name: &str) -> String {
    format!("{IMAGES}{name}")
}

fn traces_prefix(name: &str, digest: &str) -> String {
    format!("{TRACES}{name}/{digest}/")
}

fn fnv32(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

impl MetadataService {
    /// Stores (or replaces) an image's manifest after validating it.
    pub fn put_image(&self, m: ImageManifest) -> Result<ImageManifest, MetaError> {
        m.validate()?;
        self.store.put(image_key(&m.name).as_bytes(), &to_json(&m))?;
        Ok(m)
    }

    pub fn image(&self, name: &str) -> Result<ImageManifest, MetaError> {
        validate_image_name(name)?;
        match self.get::<ImageManifest>(&image_key(name))? {
            Some((m, _)) => Ok(m),
            None => Err(MetaError::NotFound(format!("image {name}"))),
        }
    }

    /// Every image name, sorted.
    pub fn images(&self) -> Result<Vec<String>, MetaError> {
        let mut names = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self.store.list_prefix(IMAGES.as_bytes(), after.as_deref(), 1000)?;
            let full = page.len() == 1000;
            after = page.last().map(|(k, _)| k.clone());
            names.extend(page.into_iter().map(|(k, _)| String::from_utf8_lossy(&k[IMAGES.len()..]).into_owned()));
            if !full {
                return Ok(names);
            }
        }
    }

    /// Removes an image's manifest and all its traces; `Ok(None)` when it did not exist. The
    /// chunk objects stay (other images may share them).
    pub fn delete_image(&self, name: &str) -> Result<Option<ImageManifest>, MetaError> {
        validate_image_name(name)?;
        let m = match self.get::<ImageManifest>(&image_key(name))? {
            Some((m, _)) => m,
            None => return Ok(None),
        };
        let prefix = format!("{TRACES}{name}/");
        loop {
            let page = self.store.list_prefix(prefix.as_bytes(), None, 1000)?;
            if page.is_empty() {
                break;
            }
            for (k, _) in page {
                self.store.delete(&k)?;
            }
        }
        self.store.delete(image_key(name).as_bytes())?;
        Ok(Some(m))
    }

    /// Adds a start trace to the image `name` (it must describe the current manifest), then
    /// drops the oldest traces of that digest beyond [`TRACES_KEPT`]. Returns how many are kept.
    pub fn add_trace(&self, name: &str, t: Trace) -> Result<usize, MetaError> {
        let m = self.image(name)?;
        t.validate(&m)?;
        let prefix = traces_prefix(name, &m.digest);
        let key = format!("{prefix}{:016x}-{:08x}", t.started_ms, fnv32(&t.host));
        self.store.put(key.as_bytes(), &to_json(&t))?;
        let keys: Vec<Vec<u8>> =
            self.store.list_prefix(prefix.as_bytes(), None, 10 * TRACES_KEPT)?.into_iter().map(|(k, _)| k).collect();
        let excess = keys.len().saturating_sub(TRACES_KEPT);
        for k in &keys[..excess] {
            self.store.delete(k)?;
        }
        Ok(keys.len() - excess)
    }

    /// The kept traces of the image's current digest, oldest first.
    pub fn traces(&self, name: &str) -> Result<Vec<Trace>, MetaError> {
        let m = self.image(name)?;
        let prefix = traces_prefix(name, &m.digest);
        self.store
            .list_prefix(prefix.as_bytes(), None, 10 * TRACES_KEPT)?
            .iter()
            .map(|(k, v)| from_json::<Trace>(&String::from_utf8_lossy(k), v))
            .collect()
    }
}

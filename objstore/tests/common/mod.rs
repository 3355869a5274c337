//! Shared test helpers: a directory where O_DIRECT works, deterministic content, a tiny RNG.
#![allow(dead_code)]

use std::path::PathBuf;

use objstore::blk::UringDevice;

/// A directory for device files that supports O_DIRECT: cargo's per-target temp dir (under
/// `target/`, on the same file system as the build), else /var/tmp, else /tmp. tmpfs before
/// Linux 6.6 refuses O_DIRECT, which the probe detects.
pub fn odirect_dir() -> PathBuf {
    let candidates = [PathBuf::from(env!("CARGO_TARGET_TMPDIR")), PathBuf::from("/var/tmp"), PathBuf::from("/tmp")];
    for d in candidates {
        if std::fs::create_dir_all(&d).is_ok() && UringDevice::dir_supports_o_direct(&d) {
            return d;
        }
    }
    panic!("no directory supporting O_DIRECT among target/tmp, /var/tmp, /tmp");
}

/// A temp file of `bytes` in an O_DIRECT-capable directory, removed on drop.
pub struct DevFile {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

pub fn dev_file(bytes: u64) -> DevFile {
    let dir = tempfile::tempdir_in(odirect_dir()).expect("temp dir");
    let path = dir.path().join("dev.img");
    UringDevice::create_file(&path, bytes).expect("create device file");
    DevFile { dir, path }
}

/// xorshift64*, deterministic per seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// `len` bytes determined by `key`.
pub fn pattern(key: u64, len: usize) -> Vec<u8> {
    let mut r = Rng::new(key ^ 0x5555);
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        v.extend_from_slice(&r.next().to_le_bytes());
    }
    v.truncate(len);
    v
}

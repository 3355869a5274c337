//! Packing a root file system into a read-only block image and cutting it into chunks.
//!
//! The image is an **uncompressed erofs** made by `mkfs.erofs` (erofs-utils). Why erofs, and
//! why uncompressed (measured on this project's machines, `docs/images.md`): the kernel mounts
//! it straight from a file (no loop device, no FUSE file system of ours to trust), it reads
//! 4 KiB blocks in place, so a start touches about 6.7 % of the image; squashfs reads 128 KiB
//! compressed blocks and touched 13.4 %; compressed erofs (lz4hc) reads the same number of
//! blocks but costs build time, and bookworm's erofs-utils 1.5 has no zstd.
//!
//! The same tree must give the same bytes (so a second push stores nothing new). mkfs.erofs
//! 1.5 is deterministic for a tree except for the superblock's build time (`-T` would fix it,
//! but also sets every file's mtime to it, which breaks Python's `.pyc` checks); so the image
//! is built with a fixed UUID and per-file mtimes, and then the superblock's build time is set
//! to 0 and its CRC32C recomputed (the kernel checks it: `EROFS_FEATURE_COMPAT_SB_CHKSUM`).
//! Files keep their own mtimes (extended inodes), so the build time is not used by any inode.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};

/// The filesystem UUID of every image (fixed: the bytes must not depend on the build).
pub const EROFS_UUID: &str = "6c617a79-0000-4000-8000-696d61676573";
/// Offset of the erofs superblock in the image.
const SB_OFFSET: u64 = 1024;
const SB_MAGIC: u32 = 0xe0f5_e1e2;
const SB_COMPAT_CHKSUM: u32 = 0x1;

/// Builds an uncompressed erofs image of `rootfs` at `out` and makes it reproducible (see the
/// module doc).
pub fn build_erofs(rootfs: &Path, out: &Path) -> io::Result<()> {
    if !rootfs.is_dir() {
        return Err(io::Error::new(io::ErrorKind::NotFound, format!("{}: not a directory", rootfs.display())));
    }
    let st = Command::new("mkfs.erofs")
        .arg("--quiet")
        .arg(format!("-U{EROFS_UUID}"))
        .arg(out)
        .arg(rootfs)
        .status()
        .map_err(|e| io::Error::new(e.kind(), format!("mkfs.erofs (erofs-utils): {e}")))?;
    if !st.success() {
        return Err(io::Error::other(format!("mkfs.erofs {} failed: {st}", rootfs.display())));
    }
    fix_build_time(out)
}

/// Sets the erofs superblock's build time to 0 and recomputes its checksum.
pub fn fix_build_time(image: &Path) -> io::Result<()> {
    let f = std::fs::OpenOptions::new().read(true).write(true).open(image)?;
    let mut block = vec![0u8; 4096 - SB_OFFSET as usize];
    f.read_exact_at(&mut block, SB_OFFSET)?;
    let le32 = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"));
    if le32(&block, 0) != SB_MAGIC {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{}: no erofs superblock", image.display())));
    }
    block[24..32].fill(0); // build_time
    block[32..36].fill(0); // build_time_nsec
    if le32(&block, 8) & SB_COMPAT_CHKSUM != 0 {
        block[4..8].fill(0);
        // The kernel's crc32c(~0, sb, len) has no final inversion; the crate's has.
        let crc = !crc32c::crc32c(&block);
        block[4..8].copy_from_slice(&crc.to_le_bytes());
    }
    f.write_all_at(&block, SB_OFFSET)?;
    f.sync_all()
}

/// SHA-256 of `data` as 64 lower-case hex digits.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// Lower-case hex of `b`.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The digest of an image: SHA-256 over its chunk digests (as hex text, in order).
pub fn image_digest<'a>(chunk_digests: impl IntoIterator<Item = &'a str>) -> String {
    let mut h = Sha256::new();
    for d in chunk_digests {
        h.update(d.as_bytes());
    }
    hex(&h.finalize())
}

/// Reads chunk after chunk of `chunk_size` bytes from `r` (the last may be shorter) and hands
/// each to `f` with its index.
pub fn for_each_chunk(
    r: &mut impl Read,
    chunk_size: usize,
    f: &mut dyn FnMut(usize, &[u8]) -> io::Result<()>,
) -> io::Result<u64> {
    let mut buf = vec![0u8; chunk_size];
    let mut total = 0u64;
    let mut i = 0;
    loop {
        let mut n = 0;
        while n < chunk_size {
            let k = r.read(&mut buf[n..])?;
            if k == 0 {
                break;
            }
            n += k;
        }
        if n == 0 {
            return Ok(total);
        }
        f(i, &buf[..n])?;
        total += n as u64;
        i += 1;
        if n < chunk_size {
            return Ok(total);
        }
    }
}

/// Digests of every chunk of the file at `path`.
pub fn chunk_digests(path: &Path, chunk_size: usize) -> io::Result<Vec<String>> {
    let mut v = Vec::new();
    for_each_chunk(&mut File::open(path)?, chunk_size, &mut |_, c| {
        v.push(sha256_hex(c));
        Ok(())
    })?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_file() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let mut seen = Vec::new();
        let total = for_each_chunk(&mut &data[..], 4096, &mut |i, c| {
            seen.push((i, c.len()));
            Ok(())
        })
        .unwrap();
        assert_eq!(total, 10_000);
        assert_eq!(seen, vec![(0, 4096), (1, 4096), (2, 1808)]);
        let exact = vec![1u8; 8192];
        let mut n = 0;
        for_each_chunk(&mut &exact[..], 4096, &mut |_, _| {
            n += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 2);
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}

//! Mounting an image file read-only as erofs, straight from the file (no loop device: the
//! kernel's `EROFS_FS_BACKED_BY_FILE`), readahead knobs, and clearing stale mounts.
//!
//! util-linux `mount -t erofs FILE DIR` quietly sets up a loop device; the mount(2) system
//! call with a regular file as the source does not, so it is called directly (through
//! rustix's safe wrappers of `mount(2)` and `umount2(2)`).

use std::collections::HashSet;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Serialises mounts, so the bdi that appears can be matched to the mount that made it.
static MOUNTING: Mutex<()> = Mutex::new(());

fn bdis() -> HashSet<String> {
    std::fs::read_dir("/sys/class/bdi")
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

/// Mounts the erofs image `file` read-only on `target`; returns the backing device info
/// (bdi) folder the mount created, if one appeared (for its `read_ahead_kb`).
pub fn mount_erofs(file: &Path, target: &Path) -> io::Result<Option<PathBuf>> {
    let _g = MOUNTING.lock().expect("lock");
    let before = bdis();
    if let Err(e) = rustix::mount::mount(file, target, "erofs", rustix::mount::MountFlags::RDONLY, None) {
        let e = io::Error::from(e);
        return Err(io::Error::new(e.kind(), format!("mount -t erofs {} {}: {e}", file.display(), target.display())));
    }
    let new: Vec<String> = bdis().difference(&before).cloned().collect();
    Ok(new.into_iter().find(|b| b.starts_with("erofs")).map(|b| Path::new("/sys/class/bdi").join(b)))
}

/// Unmounts `target`; with `detach`, lazily (MNT_DETACH: gone from the tree now, released
/// when no longer busy).
pub fn umount(target: &Path, detach: bool) -> io::Result<()> {
    let flags = if detach { rustix::mount::UnmountFlags::DETACH } else { rustix::mount::UnmountFlags::empty() };
    if let Err(e) = rustix::mount::unmount(target, flags) {
        let e = io::Error::from(e);
        return Err(io::Error::new(e.kind(), format!("umount {}: {e}", target.display())));
    }
    Ok(())
}

/// The bdi folder of the file system mounted at `path` (FUSE: `/sys/class/bdi/MAJOR:MINOR`).
pub fn bdi_of(path: &Path) -> Option<PathBuf> {
    let dev = std::fs::metadata(path).ok()?.dev();
    let p = Path::new("/sys/class/bdi").join(format!("{}:{}", libc::major(dev), libc::minor(dev)));
    p.exists().then_some(p)
}

/// Sets a bdi's `read_ahead_kb`.
pub fn set_readahead(bdi: &Path, kb: u32) -> io::Result<()> {
    std::fs::write(bdi.join("read_ahead_kb"), format!("{kb}\n"))
        .map_err(|e| io::Error::new(e.kind(), format!("{}/read_ahead_kb: {e}", bdi.display())))
}

/// Mount points at or under `root` (from /proc/self/mountinfo), deepest first.
pub fn mounts_under(root: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(root))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v.dedup();
    v
}

/// Lazily unmounts everything at or under `root` (mounts a killed agent left); returns how
/// many.
pub fn clear_stale(root: &Path) -> usize {
    let mut n = 0;
    for _ in 0..4 {
        let m = mounts_under(root);
        if m.is_empty() {
            break;
        }
        for p in m {
            if umount(&p, true).is_ok() {
                n += 1;
            }
        }
    }
    n
}

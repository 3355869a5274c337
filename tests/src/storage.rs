//! Helpers for the object storage tests.

use crate::testbed::workspace_root;
use std::path::PathBuf;

/// A storage device file under target/storage-test (O_DIRECT needs a real file system, not
/// tmpfs), removed on drop.
#[derive(Debug)]
pub struct DeviceFile(pub PathBuf);

impl DeviceFile {
    pub fn new(tag: &str) -> DeviceFile {
        let dir = workspace_root().join("target/storage-test");
        std::fs::create_dir_all(&dir).expect("create target/storage-test");
        let p = dir.join(format!("{tag}-{}.img", std::process::id()));
        let _ = std::fs::remove_file(&p);
        DeviceFile(p)
    }

    /// Flips one bit in the first place on the device that holds `needle` (64 bytes or
    /// more of an object's content), at `offset` bytes into it. The appliance using the
    /// device must be stopped. Panics if the content is not on the device.
    pub fn flip_bit_in(&self, needle: &[u8], offset: usize) {
        let mut image = std::fs::read(&self.0).expect("read the device file");
        let pos = image.windows(needle.len()).position(|w| w == needle).expect("the content is on the device");
        image[pos + offset] ^= 0x04;
        std::fs::write(&self.0, &image).expect("write the device file");
    }
}

impl Drop for DeviceFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

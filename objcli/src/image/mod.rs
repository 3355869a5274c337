//! Container images on the object store (issue 11; reference `docs/images.md`).
//!
//! * [`pack`]: a root file system → a reproducible, uncompressed erofs image; chunking and
//!   digests.
//! * [`push`]: the chunks as objects named by digest on their replicas (a chunk already
//!   stored is not sent again), then the manifest at the metadata service.
//! * [`run`]: a container on a lazily mounted image: the host agent (`imgagent`) mounts the
//!   image read-only, this side adds an overlay for the container's writes and runs `runc`.

pub mod pack;
pub mod push;
pub mod run;

pub use push::{push, push_image_file, PushOptions, PushReport};
pub use run::{run, RunOptions};

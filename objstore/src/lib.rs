//! Object storage on a raw block device (capability O of `DESIGN.md`).
//! Placeholder: see issue 5.

//! Unit tests of the pipeline and the slow path on plain buffers.

pub(crate) mod l3;
mod nat;
mod slowpath;
mod srv6;

//! Unit tests of the pipeline and the slow path on plain buffers.

mod hostile;
pub(crate) mod l3;
mod nat;
mod slowpath;
mod srv6;

//! Unit tests of the slow path (see slowpath.rs).

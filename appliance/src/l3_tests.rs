//! Unit tests of the L3 stage (see l3.rs).

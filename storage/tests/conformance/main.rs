//! Integration tests of `shoal-storage`, in one test binary:
//! - `child`: the `kill -9` harness (a test of this binary as a child);
//! - `memory`, `redb_storage`: the conformance suite against each backend;
//! - `redb_files`: durability across reopen and the handling of bad files
//!   (garbage, truncated, foreign, future format, locked);
//! - `redb_deferred`: deferred-durability commit groups across `kill -9`,
//!   the durability bound, drop and close, and file growth.
//!
//! Run with `cargo test -p shoal-storage --all-features`.

mod child;
mod memory;
mod redb_deferred;
mod redb_files;
mod redb_storage;

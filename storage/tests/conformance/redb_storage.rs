//! The conformance suite against `RedbStorage`, each case on a fresh file
//! in its own temporary directory.

use shoal_storage::testing::Fixture;
use shoal_storage::{RedbConfig, RedbStorage};

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = RedbConfig::builder(dir.path().join("data.redb"))
        .cache_bytes(8 << 20)
        .build()
        .expect("valid config");
    let storage = RedbStorage::open(config).expect("opens a fresh file");
    Fixture::with_guard(storage, dir)
}

shoal_storage::conformance_tests!(fixture);

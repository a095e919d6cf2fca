//! The conformance suite against `MemoryStorage`.

use shoal_storage::MemoryStorage;
use shoal_storage::testing::Fixture;

shoal_storage::conformance_tests!(|| async { Fixture::new(MemoryStorage::new()) });

#[tokio::test]
async fn run_all_runs_every_case() {
    shoal_storage::testing::conformance::run_all(|| async { Fixture::new(MemoryStorage::new()) })
        .await;
}

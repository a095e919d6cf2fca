//! openraft's own conformance suite (`openraft::testing::log::Suite`)
//! against [`LogStore`] + [`StateMachine`], each case on fresh files.

use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use shoal_raft::{LogStore, StateMachine, TypeConfig};
use tempfile::TempDir;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let (dir, log, sm, _storage) = crate::fresh().await.map_err(|e| {
            StorageError::read(TypeConfig::err_from_error(&std::io::Error::other(
                e.to_string(),
            )))
        })?;
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() -> anyhow::Result<()> {
    crate::init_tracing();
    tracing::info!("--- openraft::testing::log::Suite::test_all");
    Suite::test_all(Builder).await?;
    Ok(())
}

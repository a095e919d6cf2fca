//! [`WritePath`]: the one way the entity runtime writes.
//!
//! Every write of entities, workflows, messages, cron and singletons is a
//! [`WriteBatch`] made here for its shard — carrying the epoch at which this
//! node owns the shard — and committed here. On a single node that is
//! [`Epoch::ZERO`] and a direct, group-committed storage write; in a
//! cluster this is the one place that proposes the batch through Raft with
//! the shard's current epoch, so no caller changes.

use std::sync::Arc;

use shoal_storage::{CommitOutcome, Epoch, ShardId, Storage, WriteBatch};

/// Makes and commits write batches.
pub(crate) struct WritePath {
    storage: Arc<dyn Storage>,
}

impl WritePath {
    pub(crate) fn new(storage: Arc<dyn Storage>) -> Arc<Self> {
        Arc::new(WritePath { storage })
    }

    /// The epoch at which this node owns `shard` (always
    /// [`Epoch::ZERO`] on a single node).
    pub(crate) fn epoch(&self, _shard: ShardId) -> Epoch {
        Epoch::ZERO
    }

    /// An empty batch for `shard`, fenced by this node's epoch for it.
    pub(crate) fn batch(&self, shard: ShardId) -> WriteBatch {
        WriteBatch::new(shard, self.epoch(shard))
    }

    /// Commits `batch` durably; acknowledged only once it is.
    pub(crate) async fn commit(&self, batch: WriteBatch) -> shoal_storage::Result<CommitOutcome> {
        self.storage.commit(batch).await
    }
}

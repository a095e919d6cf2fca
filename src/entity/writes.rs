//! [`WritePath`]: the one way the entity runtime writes.
//!
//! Every write of entities, workflows, messages, cron and singletons is a
//! [`WriteBatch`] made here for its shard — carrying the epoch at which this
//! node owns the shard — and committed here.
//!
//! - On a single node the epoch is [`Epoch::ZERO`] and a commit is a
//!   direct, group-committed storage write.
//! - In a cluster ([`crate::cluster`]) a batch can only be made for a shard
//!   this node owns, at the epoch it acquired the shard with; a commit is
//!   proposed through Raft (forwarded to the leader when this node is not
//!   it) and acknowledged only once it is committed *and* applied to this
//!   node's storage, so the owner reads its own writes locally. A batch
//!   whose epoch is stale by the time it is applied is refused by every
//!   replica alike ([`EntityError::NotOwner`]): two owners of one shard
//!   never both commit.

use std::sync::Arc;

use shoal_storage::{CommitOutcome, Epoch, ShardId, Storage, WriteBatch};

use super::error::EntityError;
use crate::cluster::Core;

/// Makes and commits write batches.
pub(crate) struct WritePath {
    storage: Arc<dyn Storage>,
    cluster: Option<Arc<Core>>,
}

impl WritePath {
    /// The single-node write path: straight to `storage`.
    pub(crate) fn local(storage: Arc<dyn Storage>) -> Arc<Self> {
        Arc::new(WritePath {
            storage,
            cluster: None,
        })
    }

    /// The cluster write path: through `core`'s Raft group.
    pub(crate) fn replicated(storage: Arc<dyn Storage>, core: Arc<Core>) -> Arc<Self> {
        Arc::new(WritePath {
            storage,
            cluster: Some(core),
        })
    }

    /// The cluster this node is part of, if any.
    pub(crate) fn cluster(&self) -> Option<&Arc<Core>> {
        self.cluster.as_ref()
    }

    /// The epoch at which this node owns `shard`: always [`Epoch::ZERO`]
    /// on a single node; `None` in a cluster where another node (or no
    /// node) owns it.
    pub(crate) fn epoch(&self, shard: ShardId) -> Option<Epoch> {
        match &self.cluster {
            None => Some(Epoch::ZERO),
            Some(core) => core.my_epoch(shard),
        }
    }

    /// Whether this node owns `shard` (always, on a single node).
    pub(crate) fn owns(&self, shard: ShardId) -> bool {
        self.epoch(shard).is_some()
    }

    /// An empty batch for `shard`, fenced by this node's epoch for it;
    /// [`EntityError::NotOwner`] if this node does not own it.
    pub(crate) fn batch(&self, shard: ShardId) -> Result<WriteBatch, EntityError> {
        self.epoch(shard)
            .map(|epoch| WriteBatch::new(shard, epoch))
            .ok_or(EntityError::NotOwner { shard: shard.get() })
    }

    /// Commits `batch` durably; acknowledged only once it is (and, in a
    /// cluster, once it is applied locally).
    pub(crate) async fn commit(&self, batch: WriteBatch) -> Result<CommitOutcome, EntityError> {
        match &self.cluster {
            None => Ok(self.storage.commit(batch).await?),
            Some(core) => core.commit(batch).await,
        }
    }
}

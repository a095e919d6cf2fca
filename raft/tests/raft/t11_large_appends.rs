//! Appends larger than one transport message: with a 16 KiB message limit
//! and 2 KiB batches, a restarted follower's catch-up appends (many
//! entries each) do not fit in one message; the network sends the prefix
//! that fits and reports `PartialSuccess`, and the follower still catches
//! up to the same data. A batch too large for any message is refused by
//! `Network::check_command` before it is proposed.

use shoal_storage::WriteBatch;

use crate::cluster::{Cluster, SHARD, item_key};

fn big_batch(k: u64, epoch: shoal_storage::Epoch) -> anyhow::Result<WriteBatch> {
    let mut batch = WriteBatch::new(SHARD, epoch);
    let mut value = k.to_be_bytes().to_vec();
    value.resize(2048, 0xab);
    batch.put_state(&item_key(k)?, value);
    Ok(batch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_appends_are_cut_to_the_message_limit() -> anyhow::Result<()> {
    crate::init_tracing();
    let mut cluster = Cluster::start_with(&[1, 2, 3], 16 * 1024).await?;
    let leader = cluster.leader(&[]).await?;
    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap_or(1);

    tracing::info!(
        follower,
        "--- a follower is down while 40 batches of 2 KiB commit"
    );
    cluster.kill(follower).await?;
    let mut last = 0;
    for k in 0..40 {
        last = cluster
            .write_batch(|epoch| big_batch(k, epoch), &[])
            .await?;
    }

    tracing::info!("--- it restarts: ~80 KiB to catch up through 16 KiB messages");
    cluster.restart(follower).await?;
    cluster.wait_applied(follower, last).await?;
    let storage = &cluster.node(follower)?.storage;
    for k in 0..40 {
        let value = storage.load_state(&item_key(k)?).await?;
        anyhow::ensure!(
            value
                .as_deref()
                .is_some_and(|v| v.len() == 2048 && v[..8] == k.to_be_bytes()),
            "follower lacks item {k}"
        );
    }
    cluster.shutdown().await
}

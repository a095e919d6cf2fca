//! The Raft network over real loopback QUIC, below the cluster level: a
//! multi-chunk snapshot transfer reaches openraft on the receiver, and
//! bad callers (garbage, a CLI certificate, a node speaking for another)
//! are refused while the node keeps serving.

use std::time::Duration;

use openraft::rt::watch::WatchReceiver as _;

use bytes::Bytes;
use openraft::BasicNode;
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::VoteRequest;
use shoal_raft::network::kind;
use shoal_raft::{Network, NetworkConfig, Snapshot, SnapshotMeta, Vote};
use shoal_transport::{Endpoint, ErrorCode, NodeId, Validity};

use crate::cluster::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_chunks_and_bad_callers() -> anyhow::Result<()> {
    crate::init_tracing();
    tracing::info!("--- a one-node cluster leads");
    let cluster = Cluster::start(&[1]).await?;
    // A single node has no follower to acknowledge it: wait on its own view.
    let node = cluster.node(1)?;
    node.raft
        .wait(Some(crate::cluster::WAIT))
        .current_leader(1, "node 1 leads")
        .await?;
    let addr = node.endpoint.local_addr();

    tracing::info!("--- node 2 sends a 1 MiB snapshot in 64 KiB chunks with a stale vote");
    let ca = cluster.ca();
    let sender = Endpoint::builder(ca.issue_node(NodeId::new(2), Validity::days(1))?)
        .bind("127.0.0.1:0".parse()?)?;
    let mut config = NetworkConfig::default();
    config.snapshot_chunk_bytes = 64 * 1024;
    let mut network = Network::new(sender.clone(), config)?;
    let mut client = network
        .new_client(1, &BasicNode::new(addr.to_string()))
        .await;
    let data: Vec<u8> = (0..1024 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    let snapshot = Snapshot {
        meta: SnapshotMeta::default(),
        snapshot: Bytes::from(data),
    };
    let stale = Vote::new(0, 2);
    let answer = client
        .full_snapshot(
            stale,
            snapshot,
            std::future::pending(),
            RPCOption::new(Duration::from_secs(10)),
        )
        .await?;
    // The receiver assembled it and openraft answered with its own vote,
    // refusing the stale sender.
    let current = node.raft.metrics().borrow_watched().vote;
    assert_eq!(answer.vote, current);
    assert!(answer.vote > stale);
    assert!(node.raft.metrics().borrow_watched().snapshot.is_none());

    tracing::info!("--- garbage, a vote for another node, a CLI certificate: refused");
    let garbage = sender
        .request(
            NodeId::new(1),
            kind::APPEND_ENTRIES,
            Bytes::from_static(b"\xff\xff"),
        )
        .await;
    assert!(
        matches!(&garbage, Err(shoal_transport::Error::Remote(r)) if r.code == ErrorCode::Application),
        "{garbage:?}"
    );
    let mut impostor = network
        .new_client(1, &BasicNode::new(addr.to_string()))
        .await;
    let claimed = impostor
        .vote(
            VoteRequest::new(Vote::new(9, 3), None),
            RPCOption::new(Duration::from_secs(5)),
        )
        .await;
    assert!(claimed.is_err(), "{claimed:?}");
    let cli = Endpoint::builder(ca.issue_client("ops", Validity::days(1))?)
        .bind("127.0.0.1:0".parse()?)?;
    let refused = cli.request(addr, kind::VOTE, Bytes::from_static(b"")).await;
    assert!(
        matches!(&refused, Err(shoal_transport::Error::Remote(_))),
        "{refused:?}"
    );

    tracing::info!("--- the node still serves a well-formed vote");
    let answer = client
        .vote(
            VoteRequest::new(Vote::new(0, 2), None),
            RPCOption::new(Duration::from_secs(5)),
        )
        .await?;
    assert!(!answer.vote_granted);
    assert_eq!(answer.vote, current);

    cli.shutdown().await;
    sender.shutdown().await;
    cluster.shutdown().await
}

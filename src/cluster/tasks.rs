//! A clustered node's background tasks:
//!
//! - **ownership**: on every change of the applied cluster state (and every
//!   half lease, to notice a lease running out), the node
//!   learns the members' addresses, passivates the entities (and stops the
//!   workflow tasks) of the shards it lost, scans the shards it gained for
//!   pending messages and workflow executions, and starts or stops the
//!   singletons placed on it (a singleton runs on the owner of the shard
//!   its name hashes to in the default group; a cron job, on the owner of
//!   its cursor's shard);
//! - **failure detection** (acting only while this node leads): a member
//!   whose last acknowledged heartbeat is older than `down_after` is
//!   marked down, so its shards move; one that answers again is marked up.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::Instant as _;
use openraft::ServerState;
use openraft::rt::watch::WatchReceiver as _;
use shoal_storage::ShardId;
use shoal_transport::NodeId;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use shoal_raft::ClusterState;

use super::core::Core;
use crate::Node;
use crate::node::WeakNode;
use crate::shard::{self, ShardGroup};

/// The shortest pause of the ownership task between two looks without a
/// change (it looks every half lease, to notice a lost lease in time).
const RESCAN_MIN: Duration = Duration::from_millis(50);

/// Starts the tasks for `node`.
pub(crate) fn spawn(node: &Node, core: Arc<Core>) -> Vec<JoinHandle<()>> {
    vec![
        tokio::spawn(ownership(node.downgrade(), core.clone())),
        tokio::spawn(detect_failures(core)),
    ]
}

/// The shard a singleton called `name` is placed by.
pub(crate) fn singleton_shard(name: &str, shards_per_group: u32) -> ShardId {
    shard::shard_of(ShardGroup::DEFAULT, name, shards_per_group)
}

async fn ownership(node: WeakNode, core: Arc<Core>) {
    let mut state = core.state.clone();
    let mut owned: HashSet<ShardId> = HashSet::new();
    // What the shards were last computed from: nothing to redo while the
    // applied state and the lease are as they were.
    let mut computed: Option<(Arc<ClusterState>, bool)> = None;
    loop {
        let Some(node) = node.upgrade() else { return };
        let view = state.borrow_and_update().clone();
        // Cut off from the quorum (lease run out), a node owns nothing:
        // its entities passivate and its singletons stop; it takes its
        // shards up again (rescanning them) once back in contact.
        let serving = core.serving();
        let unchanged = computed
            .as_ref()
            .is_some_and(|(last, was)| Arc::ptr_eq(last, &view) && *was == serving);
        if !unchanged {
            computed = Some((view.clone(), serving));
            take_ownership(&node, &core, &view, serving, &mut owned).await;
        }
        let shards_per_group = node.config().shards_per_group();
        for singleton in node.cluster_singletons() {
            let shard = singleton_shard(&singleton.placement, shards_per_group);
            let mine = serving && view.owner(shard) == Some(core.me);
            let running = node.singleton_running(&singleton.name);
            if mine && !running {
                tracing::info!(node = core.me, singleton = %singleton.name, "starting singleton here");
                if let Err(error) = node.start_singleton(singleton.clone()) {
                    tracing::warn!(singleton = %singleton.name, %error, "cannot start singleton");
                }
            } else if !mine && running {
                tracing::info!(node = core.me, singleton = %singleton.name, "singleton moves away");
                node.stop_singleton(&singleton.name);
            }
        }
        drop(node);
        let rescan = (core.lease() / 2).max(RESCAN_MIN);
        if let Ok(Err(_)) = tokio::time::timeout(rescan, state.changed()).await {
            return;
        }
    }
}

/// Learns the members' addresses; passivates what this node lost and
/// scans what it gained since `owned`, which becomes what it owns now.
async fn take_ownership(
    node: &Node,
    core: &Core,
    view: &ClusterState,
    serving: bool,
    owned: &mut HashSet<ShardId>,
) {
    let membership = core
        .raft
        .metrics()
        .borrow_watched()
        .membership_config
        .clone();
    if let Some(endpoint) = core.endpoint() {
        for (id, member) in membership.membership().nodes() {
            if *id != core.me
                && let Ok(addr) = member.addr.parse()
            {
                endpoint.add_peer(NodeId::new(*id), addr);
            }
        }
    }
    let now_owned: HashSet<ShardId> = if serving {
        node.shards()
            .into_iter()
            .filter(|shard| view.owner(*shard) == Some(core.me))
            .collect()
    } else {
        HashSet::new()
    };
    let lost: HashSet<ShardId> = owned.difference(&now_owned).copied().collect();
    let gained: Vec<ShardId> = now_owned.difference(owned).copied().collect();
    if !lost.is_empty() {
        tracing::info!(node = core.me, lost = lost.len(), "shards moved away");
        for (_, ty) in node.runtime().all_types() {
            ty.release(&|shard| lost.contains(&shard));
        }
    }
    if !gained.is_empty() {
        tracing::info!(node = core.me, gained = gained.len(), "shards acquired");
        if let Err(error) = node.runtime().deliverer.scan(gained).await {
            tracing::warn!(%error, "cannot scan acquired shards; the sweep will");
        }
    }
    *owned = now_owned;
}

async fn detect_failures(core: Arc<Core>) {
    let down_after = core.config.down_after;
    let period = (down_after / 5).max(Duration::from_millis(20));
    // When this leader first saw each member: a member that never
    // acknowledged anything is silent since then (a node that just joined
    // or a leader that was just elected must not count from earlier).
    let mut first_seen: HashMap<u64, Instant> = HashMap::new();
    // While following: the leader, and when this node last heard from it.
    // A new leader counts its predecessor's silence from that moment (it
    // was elected because the old leader went quiet), so a dead leader's
    // shards move about as soon as a dead follower's would.
    let mut followed: Option<(u64, std::time::Instant)> = None;
    loop {
        tokio::time::sleep(period).await;
        let metrics = core.raft.metrics().borrow_watched().clone();
        if metrics.state != ServerState::Leader {
            first_seen.clear();
            if let (Some(leader), Some(at)) =
                (metrics.current_leader, core.service.last_leader_contact())
                && leader != core.me
            {
                followed = Some((leader, at));
            }
            continue;
        }
        if first_seen.is_empty()
            && let Some((previous, at)) = followed.take()
        {
            let since = Instant::now() - at.elapsed().min(down_after);
            first_seen.insert(previous, since);
        }
        let Some(heartbeats) = metrics.heartbeat else {
            continue;
        };
        first_seen.retain(|id, _| heartbeats.contains_key(id));
        let view = core.view();
        for (id, acked) in heartbeats {
            if id == core.me {
                continue;
            }
            let seen = *first_seen.entry(id).or_insert_with(Instant::now);
            let silence = match acked {
                Some(at) => at.into_inner().elapsed().min(seen.elapsed()),
                None => seen.elapsed(),
            };
            let down = view.down().contains(&id);
            let result = if silence >= down_after && !down {
                tracing::warn!(node = id, ?silence, "member silent; marking it down");
                shoal_raft::membership::mark_down(&core.raft, id).await
            } else if silence < down_after && down {
                tracing::info!(node = id, "member answers again; marking it up");
                shoal_raft::membership::mark_up(&core.raft, id).await
            } else {
                Ok(())
            };
            if let Err(error) = result {
                tracing::debug!(node = id, %error, "cannot change a member's state");
            }
        }
    }
}

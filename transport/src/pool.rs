//! Outgoing connections: the address book (node id → address) and one
//! reusable QUIC connection per destination.
//!
//! Invariants: at most one dial per destination is in progress at a time;
//! callers arriving meanwhile wait for it (bounded by the connect timeout)
//! and share its outcome, success or failure, so a dead peer costs one
//! connect timeout per wave of callers, not one per caller. A connection
//! that has closed is never handed out again; the next caller dials a
//! fresh one. Changing a node's address drops its
//! pooled connection.
//! This module does not dial (the endpoint does) and does not retry.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use crate::error::Error;
use crate::id::NodeId;

/// Where a call goes.
///
/// ```
/// use std::net::SocketAddr;
/// use shoal_transport::{Dest, NodeId};
/// let by_id: Dest = NodeId::new(2).into();
/// let by_addr: Dest = SocketAddr::from(([127, 0, 0, 1], 7000)).into();
/// assert_ne!(by_id, by_addr);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Dest {
    /// A node by id, at the address registered with `Endpoint::add_peer`.
    /// The server must present that node's certificate.
    Node(NodeId),
    /// Whatever node of the cluster listens at this address (what the CLI
    /// uses). The server must present a node certificate of the cluster.
    Addr(SocketAddr),
}

impl From<NodeId> for Dest {
    fn from(node: NodeId) -> Self {
        Dest::Node(node)
    }
}

impl From<SocketAddr> for Dest {
    fn from(addr: SocketAddr) -> Self {
        Dest::Addr(addr)
    }
}

/// One destination's connection, and the lock serializing its dials.
#[derive(Default)]
pub(crate) struct Slot {
    current: Mutex<Option<quinn::Connection>>,
    dialing: tokio::sync::Mutex<()>,
    /// Number of dials finished; lets a waiter see that one ran meanwhile.
    dials_done: AtomicU64,
    /// Outcome of the last dial if it failed.
    last_failure: Mutex<Option<Error>>,
}

impl Slot {
    /// Dials finished so far.
    pub(crate) fn dials_done(&self) -> u64 {
        self.dials_done.load(Ordering::Acquire)
    }

    /// Records a dial's outcome: its failure, or `None` after a success.
    pub(crate) fn dial_done(&self, failure: Option<&Error>) {
        *lock(&self.last_failure) = failure.and_then(Error::replay);
        self.dials_done.fetch_add(1, Ordering::AcqRel);
    }

    /// The last dial's failure, for callers that waited on it.
    pub(crate) fn failure(&self) -> Option<Error> {
        lock(&self.last_failure).as_ref().and_then(Error::replay)
    }

    /// The pooled connection, if it is still open.
    pub(crate) fn live(&self) -> Option<quinn::Connection> {
        let current = lock(&self.current);
        current
            .as_ref()
            .filter(|conn| conn.close_reason().is_none())
            .cloned()
    }

    pub(crate) fn set(&self, conn: quinn::Connection) {
        *lock(&self.current) = Some(conn);
    }

    /// Forgets `conn` if it is the pooled one (it failed).
    pub(crate) fn forget(&self, conn: &quinn::Connection) {
        let mut current = lock(&self.current);
        if current
            .as_ref()
            .is_some_and(|c| c.stable_id() == conn.stable_id())
        {
            *current = None;
        }
    }

    /// Held while dialing so that concurrent callers share one dial.
    pub(crate) async fn dial_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.dialing.lock().await
    }

    fn close(&self, reason: &[u8]) {
        if let Some(conn) = lock(&self.current).take() {
            conn.close(quinn::VarInt::from_u32(0), reason);
        }
    }
}

/// Address book and connections.
#[derive(Default)]
pub(crate) struct Pool {
    addrs: RwLock<HashMap<NodeId, SocketAddr>>,
    slots: Mutex<HashMap<Dest, Arc<Slot>>>,
}

impl Pool {
    /// Records (or changes) the address of `node`.
    pub(crate) fn add_peer(&self, node: NodeId, addr: SocketAddr) {
        let previous = write(&self.addrs).insert(node, addr);
        if previous.is_some_and(|p| p != addr) {
            self.drop_slot(Dest::Node(node), b"peer address changed");
        }
    }

    /// Forgets `node` and closes its pooled connection.
    pub(crate) fn remove_peer(&self, node: NodeId) {
        write(&self.addrs).remove(&node);
        self.drop_slot(Dest::Node(node), b"peer removed");
    }

    pub(crate) fn addr(&self, node: NodeId) -> Option<SocketAddr> {
        self.addrs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&node)
            .copied()
    }

    /// The slot of `dest`, created on first use.
    pub(crate) fn slot(&self, dest: Dest) -> Arc<Slot> {
        lock(&self.slots).entry(dest).or_default().clone()
    }

    /// Closes every pooled connection (shutdown).
    pub(crate) fn close_all(&self) {
        let slots: Vec<_> = lock(&self.slots).drain().map(|(_, s)| s).collect();
        for slot in slots {
            slot.close(b"shutdown");
        }
    }

    fn drop_slot(&self, dest: Dest, reason: &[u8]) {
        if let Some(slot) = lock(&self.slots).remove(&dest) {
            slot.close(reason);
        }
    }
}

// Every critical section here is a single map or option operation, so a
// panicking holder cannot leave the data inconsistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_book() {
        let pool = Pool::default();
        let node = NodeId::new(1);
        let addr = SocketAddr::from(([127, 0, 0, 1], 9));
        assert_eq!(pool.addr(node), None);
        pool.add_peer(node, addr);
        assert_eq!(pool.addr(node), Some(addr));
        let slot = pool.slot(Dest::Node(node));
        assert!(Arc::ptr_eq(&slot, &pool.slot(Dest::Node(node))));
        // A new address gives a new slot.
        pool.add_peer(node, SocketAddr::from(([127, 0, 0, 1], 10)));
        assert!(!Arc::ptr_eq(&slot, &pool.slot(Dest::Node(node))));
        pool.remove_peer(node);
        assert_eq!(pool.addr(node), None);
        assert!(slot.live().is_none());
    }
}

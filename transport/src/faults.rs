//! Fault injection for in-process tests: drop, delay or cut the UDP
//! datagrams between chosen pairs of nodes, and heal.
//!
//! [`NetFaults`] is a shared rule table; an endpoint built with
//! `EndpointBuilder::faults` sends through a `FaultySocket` that consults
//! it for every outgoing datagram. Everything above the socket is the real
//! QUIC stack, so a partition looks to the endpoints exactly like a broken
//! network: retransmissions, idle timeouts, reconnects.
//!
//! Invariants: rules are directed (`from` → `to`) and apply to datagrams
//! the `from` node sends to the address registered for `to`; traffic to or
//! from an address no node registered (for example a CLI client) is never
//! touched. Random drops draw from one seeded generator, so a failing test
//! can be replayed from its printed seed (modulo thread scheduling).
//! This module does not fake QUIC; it only loses or delays datagrams.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};

use crate::id::NodeId;

/// What happens to the datagrams of one directed link.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum LinkFault {
    /// Every datagram is lost (a partition or a dead link).
    Cut,
    /// Each datagram is lost with this probability (0.0 to 1.0).
    Drop {
        /// Loss probability.
        probability: f64,
    },
    /// Every datagram arrives this much later.
    Delay(Duration),
}

/// Shared table of link faults between nodes; cheap to clone.
///
/// ```
/// use shoal_transport::{LinkFault, NetFaults, NodeId};
/// let faults = NetFaults::new(7);
/// let (a, b) = (NodeId::new(1), NodeId::new(2));
/// faults.partition(a, b);
/// assert_eq!(faults.link(a, b), Some(LinkFault::Cut));
/// faults.heal(a, b);
/// assert_eq!(faults.link(b, a), None);
/// ```
#[derive(Clone)]
pub struct NetFaults {
    state: Arc<Mutex<State>>,
    /// Fast path: false while no rule exists.
    active: Arc<AtomicBool>,
}

struct State {
    seed: u64,
    rng: u64,
    nodes: HashMap<SocketAddr, NodeId>,
    links: HashMap<(NodeId, NodeId), LinkFault>,
}

/// What to do with one datagram.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Verdict {
    Pass,
    Lose,
    Delay(Duration),
}

impl NetFaults {
    /// An empty table whose random drops derive from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                seed,
                rng: seed,
                nodes: HashMap::new(),
                links: HashMap::new(),
            })),
            active: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The seed given to [`new`](Self::new) (print it in tests).
    pub fn seed(&self) -> u64 {
        self.lock().seed
    }

    /// Sets the fault of the directed link `from` → `to`.
    pub fn set(&self, from: NodeId, to: NodeId, fault: LinkFault) {
        let mut state = self.lock();
        state.links.insert((from, to), fault);
        self.active.store(true, Ordering::Release);
    }

    /// The fault of the directed link `from` → `to`, if any.
    pub fn link(&self, from: NodeId, to: NodeId) -> Option<LinkFault> {
        self.lock().links.get(&(from, to)).copied()
    }

    /// Cuts both directions between `a` and `b`.
    pub fn partition(&self, a: NodeId, b: NodeId) {
        self.set(a, b, LinkFault::Cut);
        self.set(b, a, LinkFault::Cut);
    }

    /// Cuts `node` off from every other registered node, both directions.
    pub fn isolate(&self, node: NodeId) {
        let others: Vec<NodeId> = self
            .lock()
            .nodes
            .values()
            .copied()
            .filter(|other| *other != node)
            .collect();
        for other in others {
            self.partition(node, other);
        }
    }

    /// Removes the faults of both directions between `a` and `b`.
    pub fn heal(&self, a: NodeId, b: NodeId) {
        let mut state = self.lock();
        state.links.remove(&(a, b));
        state.links.remove(&(b, a));
        self.active
            .store(!state.links.is_empty(), Ordering::Release);
    }

    /// Removes every fault.
    pub fn heal_all(&self) {
        let mut state = self.lock();
        state.links.clear();
        self.active.store(false, Ordering::Release);
    }

    /// Records that `node` receives at `addr`.
    pub(crate) fn register(&self, addr: SocketAddr, node: NodeId) {
        self.lock().nodes.insert(addr, node);
    }

    /// Forgets `addr` (its endpoint shut down).
    pub(crate) fn unregister(&self, addr: SocketAddr) {
        self.lock().nodes.remove(&addr);
    }

    fn verdict(&self, from: NodeId, destination: SocketAddr) -> Verdict {
        if !self.active.load(Ordering::Acquire) {
            return Verdict::Pass;
        }
        let mut state = self.lock();
        let to = match state.nodes.get(&destination) {
            Some(to) => *to,
            None => {
                // An endpoint bound to the unspecified address receives on
                // every local address of its port.
                let found = state.nodes.iter().find(|(addr, _)| {
                    addr.ip().is_unspecified() && addr.port() == destination.port()
                });
                match found {
                    Some((_, to)) => *to,
                    None => return Verdict::Pass,
                }
            }
        };
        match state.links.get(&(from, to)).copied() {
            None => Verdict::Pass,
            Some(LinkFault::Cut) => Verdict::Lose,
            Some(LinkFault::Delay(delay)) => Verdict::Delay(delay),
            Some(LinkFault::Drop { probability }) => {
                if state.next_unit() < probability {
                    Verdict::Lose
                } else {
                    Verdict::Pass
                }
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The table stays consistent even if a holder panicked: every
        // update is a single map operation.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Default for NetFaults {
    fn default() -> Self {
        Self::new(0)
    }
}

impl fmt::Debug for NetFaults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("NetFaults")
            .field("seed", &state.seed)
            .field("links", &state.links)
            .finish_non_exhaustive()
    }
}

impl State {
    /// splitmix64, mapped to [0, 1).
    fn next_unit(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A UDP socket that applies [`NetFaults`] to what node `node` sends.
#[derive(Debug)]
pub(crate) struct FaultySocket {
    inner: Arc<dyn AsyncUdpSocket>,
    node: NodeId,
    faults: NetFaults,
}

impl FaultySocket {
    pub(crate) fn new(inner: Arc<dyn AsyncUdpSocket>, node: NodeId, faults: NetFaults) -> Self {
        Self {
            inner,
            node,
            faults,
        }
    }
}

impl AsyncUdpSocket for FaultySocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        match self.faults.verdict(self.node, transmit.destination) {
            Verdict::Pass => self.inner.try_send(transmit),
            // A lost datagram was "sent" as far as QUIC can tell.
            Verdict::Lose => Ok(()),
            Verdict::Delay(delay) => {
                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                    return Ok(());
                };
                let inner = self.inner.clone();
                let (destination, ecn, segment_size, src_ip) = (
                    transmit.destination,
                    transmit.ecn,
                    transmit.segment_size,
                    transmit.src_ip,
                );
                let contents = transmit.contents.to_vec();
                runtime.spawn(async move {
                    tokio::time::sleep(delay).await;
                    let transmit = Transmit {
                        destination,
                        ecn,
                        contents: &contents,
                        segment_size,
                        src_ip,
                    };
                    // A full socket buffer loses the datagram, as UDP would.
                    let _ = inner.try_send(&transmit);
                });
                Ok(())
            }
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn verdicts_follow_directed_rules() {
        let faults = NetFaults::new(1);
        let (a, b, c) = (NodeId::new(1), NodeId::new(2), NodeId::new(3));
        faults.register(addr(1), a);
        faults.register(addr(2), b);
        faults.register(SocketAddr::from(([0, 0, 0, 0], 3)), c);
        assert_eq!(faults.verdict(a, addr(2)), Verdict::Pass);

        faults.set(a, b, LinkFault::Cut);
        assert_eq!(faults.verdict(a, addr(2)), Verdict::Lose);
        assert_eq!(faults.verdict(b, addr(1)), Verdict::Pass);

        faults.set(a, c, LinkFault::Delay(Duration::from_millis(5)));
        assert_eq!(
            faults.verdict(a, addr(3)),
            Verdict::Delay(Duration::from_millis(5))
        );
        // Unknown destinations are never touched.
        assert_eq!(faults.verdict(a, addr(9)), Verdict::Pass);

        faults.isolate(b);
        assert_eq!(faults.verdict(b, addr(1)), Verdict::Lose);
        assert_eq!(faults.verdict(c, addr(2)), Verdict::Lose);
        faults.heal_all();
        assert_eq!(faults.verdict(a, addr(2)), Verdict::Pass);
    }

    #[test]
    fn random_drops_are_reproducible_and_roughly_calibrated() {
        let run = |seed| {
            let faults = NetFaults::new(seed);
            let (a, b) = (NodeId::new(1), NodeId::new(2));
            faults.register(addr(2), b);
            faults.set(a, b, LinkFault::Drop { probability: 0.25 });
            (0..4000)
                .map(|_| faults.verdict(a, addr(2)) == Verdict::Lose)
                .collect::<Vec<_>>()
        };
        let first = run(42);
        assert_eq!(first, run(42));
        let lost = first.iter().filter(|l| **l).count();
        assert!((800..1200).contains(&lost), "lost {lost} of 4000");
    }
}

//! Identities: [`NodeId`], [`Peer`] and the message route [`Kind`].
//!
//! A peer's identity is never claimed by the peer: it is read from the DNS
//! subject alternative name of the certificate it presented, after that
//! certificate was verified against the cluster CA. The naming scheme is
//!
//! * node:   `node-<id>.<cluster>.shoal.internal` (plus the shared name
//!   `<cluster>.shoal.internal`, used to dial "any node" by address),
//! * client: `client-<name>.<cluster>.shoal.internal`.
//!
//! Invariant: `Peer::from_dns_names` accepts only names of the given
//! cluster, and only when exactly one identity name is present.
//! This module does no I/O and no certificate verification.

use std::fmt;

/// Domain under which every Shoal certificate name lives.
pub(crate) const DOMAIN: &str = "shoal.internal";

/// Longest cluster name (one DNS label).
const CLUSTER_NAME_BYTES_MAX: usize = 63;
/// Longest client name: `client-` plus the name must fit one DNS label.
const CLIENT_NAME_BYTES_MAX: usize = 63 - "client-".len();

/// Identifier of a Shoal node, unique within a cluster.
///
/// ```
/// use shoal_transport::NodeId;
/// let id = NodeId::new(42);
/// assert_eq!(id.get(), 42);
/// assert_eq!(id.to_string(), "node-42");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(u64);

impl NodeId {
    /// Wraps a raw node number.
    pub const fn new(id: u64) -> Self {
        Self(id)
    }

    /// The raw node number.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl From<u64> for NodeId {
    fn from(id: u64) -> Self {
        Self(id)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node-{}", self.0)
    }
}

/// Route discriminator of a message: which handler on the receiving side
/// gets it. The transport never interprets it; upper layers define their
/// own constants (for example one per Raft RPC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Kind(pub u32);

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kind {}", self.0)
    }
}

/// Who is on the other end of a connection, as proven by its certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Peer {
    /// A cluster node.
    Node(NodeId),
    /// A client such as the `shoal` CLI, by its certificate name.
    Client(String),
}

impl Peer {
    /// The node id if this peer is a node.
    pub fn node_id(&self) -> Option<NodeId> {
        match self {
            Peer::Node(id) => Some(*id),
            Peer::Client(_) => None,
        }
    }

    /// The DNS name that encodes this identity in a certificate of `cluster`.
    pub(crate) fn dns_name(&self, cluster: &str) -> String {
        match self {
            Peer::Node(id) => node_dns_name(*id, cluster),
            Peer::Client(name) => format!("client-{name}.{cluster}.{DOMAIN}"),
        }
    }

    /// Reads the identity from a certificate's DNS names.
    ///
    /// Names outside `<cluster>.shoal.internal` and the shared cluster name
    /// are ignored. Errors when no identity name, or more than one, is found.
    pub(crate) fn from_dns_names<'a>(
        names: impl IntoIterator<Item = &'a str>,
        cluster: &str,
    ) -> Result<Peer, String> {
        let suffix = format!(".{cluster}.{DOMAIN}");
        let mut found: Option<Peer> = None;
        for name in names {
            let Some(label) = name.strip_suffix(suffix.as_str()) else {
                continue;
            };
            let peer = if let Some(number) = label.strip_prefix("node-") {
                // Canonical decimal only: "node-01" would give two names
                // for one node.
                match number.parse::<u64>() {
                    Ok(id) if id.to_string() == number => Peer::Node(NodeId(id)),
                    _ => return Err(format!("malformed node name {name:?}")),
                }
            } else if let Some(client) = label.strip_prefix("client-") {
                validate_client_name(client)?;
                Peer::Client(client.to_owned())
            } else {
                continue;
            };
            if found.is_some() {
                return Err("certificate carries more than one identity name".to_owned());
            }
            found = Some(peer);
        }
        found.ok_or_else(|| format!("certificate has no identity name for cluster {cluster:?}"))
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Node(id) => id.fmt(f),
            Peer::Client(name) => write!(f, "client-{name}"),
        }
    }
}

/// DNS name of node `id` in `cluster`; the TLS server name used to dial it.
pub(crate) fn node_dns_name(id: NodeId, cluster: &str) -> String {
    format!("node-{}.{cluster}.{DOMAIN}", id.0)
}

/// DNS name shared by every node of `cluster`; dialing it accepts any node.
pub(crate) fn cluster_dns_name(cluster: &str) -> String {
    format!("{cluster}.{DOMAIN}")
}

/// Checks that `label` is a lowercase DNS label of at most `max` bytes.
fn validate_label(what: &str, label: &str, max: usize) -> Result<(), String> {
    let valid_chars = label
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if label.is_empty()
        || label.len() > max
        || !valid_chars
        || label.starts_with('-')
        || label.ends_with('-')
    {
        return Err(format!(
            "{what} {label:?} must be 1 to {max} bytes of a-z, 0-9 and '-', not starting or ending with '-'"
        ));
    }
    Ok(())
}

/// Validates a cluster name (one DNS label).
pub(crate) fn validate_cluster_name(cluster: &str) -> Result<(), String> {
    validate_label("cluster name", cluster, CLUSTER_NAME_BYTES_MAX)
}

/// Validates a client name (fits a DNS label after `client-`).
pub(crate) fn validate_client_name(name: &str) -> Result<(), String> {
    validate_label("client name", name, CLIENT_NAME_BYTES_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_name_round_trips() {
        let name = node_dns_name(NodeId(42), "prod");
        assert_eq!(name, "node-42.prod.shoal.internal");
        let peer = Peer::from_dns_names([name.as_str(), "prod.shoal.internal"], "prod");
        assert_eq!(peer, Ok(Peer::Node(NodeId(42))));
    }

    #[test]
    fn client_name_round_trips() {
        let peer = Peer::Client("ops".into());
        let name = peer.dns_name("prod");
        assert_eq!(name, "client-ops.prod.shoal.internal");
        assert_eq!(Peer::from_dns_names([name.as_str()], "prod"), Ok(peer));
    }

    #[test]
    fn other_cluster_is_not_an_identity() {
        let name = node_dns_name(NodeId(1), "other");
        assert!(Peer::from_dns_names([name.as_str()], "prod").is_err());
    }

    #[test]
    fn malformed_and_ambiguous_names_are_refused() {
        for names in [
            vec!["node-01.c.shoal.internal"],
            vec!["node-x.c.shoal.internal"],
            vec!["node-18446744073709551616.c.shoal.internal"],
            vec!["client-UP.c.shoal.internal"],
            vec!["node-1.c.shoal.internal", "node-2.c.shoal.internal"],
            vec![],
        ] {
            assert!(
                Peer::from_dns_names(names.clone(), "c").is_err(),
                "{names:?}"
            );
        }
    }

    #[test]
    fn labels_are_validated() {
        assert!(validate_cluster_name("prod-1").is_ok());
        assert!(validate_cluster_name("").is_err());
        assert!(validate_cluster_name("-a").is_err());
        assert!(validate_cluster_name("a.b").is_err());
        assert!(validate_cluster_name(&"a".repeat(64)).is_err());
        assert!(validate_client_name(&"a".repeat(56)).is_ok());
        assert!(validate_client_name(&"a".repeat(57)).is_err());
    }
}

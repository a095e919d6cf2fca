//! Serving a [`Node`] over `shoal-transport` (QUIC + mutual TLS), and the
//! [`Client`] that calls it from another process — the `shoal` CLI, or any
//! program holding a client certificate of the cluster's CA.
//!
//! Two request kinds, both unary, payloads in protobuf (the messages of
//! `server::proto`; fields are only ever added):
//! - [`CALL`]: `CallRequest { entity_type, entity_id, handler, params }` —
//!   a call by name with MessagePack parameters ([`Node::call_raw`]); the
//!   reply is the handler's MessagePack answer; a failure is an application
//!   error whose message is the [`EntityError`]'s.
//! - [`STATUS`]: an empty request; the reply is a `StatusReply` (on a
//!   clustered node also the members, leader, term and last applied index
//!   from [`Node::cluster_status`]).
//!
//! Clients see only public handlers, as with [`Node::client`].

mod proto;

use std::net::SocketAddr;

use bytes::Bytes;
use prost::Message as _;
use shoal_transport::{Endpoint, Identity, Kind, Peer, RemoteError, Router};

use crate::Node;
use crate::entity::codec;
use crate::entity::{Callable, Entity, EntityError};

pub use proto::{CallRequest, Member, StatusReply};

/// A call to an entity handler by name.
pub const CALL: Kind = Kind(0x0200);
/// The node's status.
pub const STATUS: Kind = Kind(0x0201);

/// Why a remote call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The transport failed (connection, TLS refusal, timeout, …).
    #[error("transport: {0}")]
    Transport(#[from] shoal_transport::Error),
    /// The node answered with an error.
    #[error("{0}")]
    Remote(String),
    /// The answer could not be decoded.
    #[error("cannot decode the answer: {0}")]
    Decode(String),
    /// The parameters could not be encoded.
    #[error("cannot encode the parameters: {0}")]
    Encode(String),
}

/// A [`Node`] served over QUIC + mutual TLS.
#[derive(Debug)]
pub struct Server {
    endpoint: Endpoint,
}

impl Server {
    /// Serves `node` at `listen` with the node certificate `identity`.
    pub fn start(
        node: Node,
        identity: Identity,
        listen: SocketAddr,
    ) -> Result<Server, shoal_transport::Error> {
        let node_id = match identity.peer() {
            Peer::Node(id) => *id,
            other => {
                return Err(shoal_transport::Error::Config(format!(
                    "a node needs a node certificate, not one for {other}"
                )));
            }
        };
        let cluster = identity.cluster().to_owned();
        let calls = node.clone();
        let router = Router::new()
            .unary(CALL, move |request| {
                let node = calls.clone();
                async move { call(&node, request.payload).await }
            })
            .unary(STATUS, move |_request| {
                let reply = status(&node, node_id.get(), &cluster).encode_to_vec();
                async move { Ok::<_, RemoteError>(Bytes::from(reply)) }
            });
        let endpoint = Endpoint::builder(identity).router(router).bind(listen)?;
        Ok(Server { endpoint })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint.local_addr()
    }

    /// Stops accepting and closes every connection.
    pub async fn shutdown(&self) {
        self.endpoint.shutdown().await;
    }
}

pub(crate) async fn call(node: &Node, payload: Bytes) -> Result<Bytes, RemoteError> {
    let request = CallRequest::decode(payload)
        .map_err(|e| RemoteError::application(format!("malformed call request: {e}")))?;
    node.call_raw(
        &request.entity_type,
        &request.entity_id,
        &request.handler,
        request.params,
    )
    .await
    .map_err(|e: EntityError| RemoteError::application(e.to_string()))
}

pub(crate) fn status(node: &Node, node_id: u64, cluster: &str) -> StatusReply {
    let mut reply = StatusReply {
        node_id,
        cluster: cluster.to_owned(),
        entity_types: node.entity_types().into_iter().map(str::to_owned).collect(),
        active_entities: node.active_entities() as u64,
        shards_per_group: node.config().shards_per_group(),
        data_file: node
            .data_file()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        singletons: node.singletons(),
        ..StatusReply::default()
    };
    if let Some(status) = node.cluster_status() {
        reply.clustered = true;
        reply.leader = status.leader;
        reply.term = status.term;
        reply.last_applied = status.last_applied;
        reply.generation = status.generation;
        reply.members = status
            .members
            .into_iter()
            .map(|m| Member {
                id: m.id,
                addr: m.addr,
                voter: m.voter,
                state: m.state.to_string(),
                shards: m.shards as u64,
            })
            .collect();
    }
    reply
}

/// Calls a served node from another process.
#[derive(Debug, Clone)]
pub struct Client {
    endpoint: Endpoint,
    node: SocketAddr,
}

impl Client {
    /// A client with certificate `identity` (a client or node certificate
    /// of the cluster's CA) talking to the node at `node`.
    pub fn new(identity: Identity, node: SocketAddr) -> Result<Client, ClientError> {
        let bind = if node.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
        };
        let endpoint = Endpoint::builder(identity).bind(bind)?;
        Ok(Client { endpoint, node })
    }

    /// Calls `handler` of entity `entity_id` of type `entity_type` with
    /// MessagePack `params`; answers the MessagePack reply.
    pub async fn call_raw(
        &self,
        entity_type: &str,
        entity_id: &str,
        handler: &str,
        params: Bytes,
    ) -> Result<Bytes, ClientError> {
        let request = CallRequest {
            entity_type: entity_type.to_owned(),
            entity_id: entity_id.to_owned(),
            handler: handler.to_owned(),
            params,
        };
        self.endpoint
            .request(self.node, CALL, Bytes::from(request.encode_to_vec()))
            .await
            .map_err(|e| match e {
                shoal_transport::Error::Remote(remote) => ClientError::Remote(remote.message),
                other => ClientError::Transport(other),
            })
    }

    /// A typed call, like [`crate::entity::EntityClient::call`] but remote.
    pub async fn call<E, H, K>(
        &self,
        entity_id: &str,
        handler: H,
        params: H::Params,
    ) -> Result<H::Output, ClientError>
    where
        E: Entity,
        H: Callable<E, K>,
    {
        let _ = handler;
        let params =
            codec::encode(&params, "parameters").map_err(|e| ClientError::Encode(e.to_string()))?;
        let reply = self.call_raw(E::NAME, entity_id, H::NAME, params).await?;
        codec::decode(&reply, "reply").map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// The node's status.
    pub async fn status(&self) -> Result<StatusReply, ClientError> {
        let reply = self
            .endpoint
            .request(self.node, STATUS, Bytes::new())
            .await?;
        StatusReply::decode(reply).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Closes the connection.
    pub async fn shutdown(&self) {
        self.endpoint.shutdown().await;
    }
}

//! The cluster's request handlers on a node's transport router:
//! forwarded entity operations (served only by the shard's owner),
//! proposals for the leader, and join / leave requests.
//!
//! Only peers with a *node* certificate of the cluster are served: a CLI
//! client certificate is refused, so nothing but a member can propose a
//! write or move a membership.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use shoal_storage::{DeferredValue, RequestId, Timestamp, WriteBatch};
use shoal_transport::{Peer, RemoteError, Request, Router};

use super::core::{Core, kind, to_wire};
use super::proto::{ForwardReply, ForwardRequest, JoinRequest, LeaveRequest, op};
use crate::entity::EntityError;
use crate::node::WeakNode;
use crate::sync::lock;

/// An entity operation, as run locally on the shard's owner or forwarded
/// to it.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    /// A call of a public handler.
    Call {
        handler: String,
        params: Bytes,
        request: Option<RequestId>,
    },
    /// A persisted send (its request id is fixed by the sender).
    Send {
        handler: String,
        params: Bytes,
        request: RequestId,
        at: Option<Timestamp>,
    },
    /// Resolving a deferred.
    Resolve { name: String, value: DeferredValue },
    /// Waiting at most `wait` for a persisted message's outcome.
    Outcome { request: RequestId, wait: Duration },
}

impl Op {
    /// The request forwarding this op on entity `entity_type`/`entity_id`.
    pub(crate) fn to_request(&self, entity_type: &str, entity_id: &str) -> ForwardRequest {
        let mut request = ForwardRequest {
            entity_type: entity_type.to_owned(),
            entity_id: entity_id.to_owned(),
            ..ForwardRequest::default()
        };
        let id = |request: &Option<RequestId>| {
            request.map_or_else(Bytes::new, |r| Bytes::copy_from_slice(&r.to_bytes()))
        };
        match self {
            Op::Call {
                handler,
                params,
                request: id_,
            } => {
                request.op = op::CALL;
                request.handler = handler.clone();
                request.params = params.clone();
                request.request_id = id(id_);
            }
            Op::Send {
                handler,
                params,
                request: id_,
                at,
            } => {
                request.op = op::SEND;
                request.handler = handler.clone();
                request.params = params.clone();
                request.request_id = id(&Some(*id_));
                request.at_ms = at.map(Timestamp::as_unix_ms);
            }
            Op::Resolve { name, value } => {
                request.op = op::RESOLVE;
                request.handler = name.clone();
                match value {
                    DeferredValue::Success(bytes) => request.params = bytes.clone(),
                    DeferredValue::Failure(failure) => {
                        request.deferred_failure = Some(failure.clone());
                    }
                    // A kind of value this build cannot forward.
                    other => request.deferred_failure = Some(format!("{other:?}")),
                }
            }
            Op::Outcome { request: id_, wait } => {
                request.op = op::OUTCOME;
                request.request_id = id(&Some(*id_));
                request.wait_ms = u32::try_from(wait.as_millis()).unwrap_or(u32::MAX);
            }
        }
        request
    }

    /// The op a forwarded request carries; an error names what is wrong.
    pub(crate) fn from_request(request: &ForwardRequest) -> Result<Op, String> {
        let id = || -> Result<Option<RequestId>, String> {
            match request.request_id.len() {
                0 => Ok(None),
                16 => {
                    let mut bytes = [0u8; 16];
                    bytes.copy_from_slice(&request.request_id);
                    Ok(Some(RequestId::from_bytes(bytes)))
                }
                n => Err(format!("a request id of {n} bytes, expected 16")),
            }
        };
        Ok(match request.op {
            op::CALL => Op::Call {
                handler: request.handler.clone(),
                params: request.params.clone(),
                request: id()?,
            },
            op::SEND => Op::Send {
                handler: request.handler.clone(),
                params: request.params.clone(),
                request: id()?.ok_or("a persisted send without a request id")?,
                at: request.at_ms.map(Timestamp::from_unix_ms),
            },
            op::RESOLVE => Op::Resolve {
                name: request.handler.clone(),
                value: match &request.deferred_failure {
                    Some(failure) => DeferredValue::Failure(failure.clone()),
                    None => DeferredValue::Success(request.params.clone()),
                },
            },
            op::OUTCOME => Op::Outcome {
                request: id()?.ok_or("an outcome wait without a request id")?,
                wait: Duration::from_millis(u64::from(request.wait_ms)),
            },
            other => return Err(format!("unknown forwarded operation {other}")),
        })
    }
}

/// What the handlers serve, set once the node has started (until then
/// they answer that the node is starting, which callers retry).
#[derive(Default)]
pub(crate) struct Slot {
    served: Mutex<Option<(Arc<Core>, WeakNode)>>,
}

impl Slot {
    pub(crate) fn set(&self, core: Arc<Core>, node: WeakNode) {
        *lock(&self.served) = Some((core, node));
    }

    /// Stops serving (at shutdown).
    pub(crate) fn clear(&self) {
        lock(&self.served).take();
    }

    fn get(&self) -> Result<(Arc<Core>, crate::Node), RemoteError> {
        let served = lock(&self.served);
        let (core, node) = served
            .as_ref()
            .ok_or_else(|| RemoteError::application("not serving"))?;
        let node = node
            .upgrade()
            .ok_or_else(|| RemoteError::application("stopped"))?;
        Ok((core.clone(), node))
    }
}

/// The id of the member node that sent `request`; a client is refused.
fn member_only(request: &Request) -> Result<u64, RemoteError> {
    match request.peer {
        Peer::Node(id) => Ok(id.get()),
        ref other => Err(RemoteError::application(format!(
            "{other} is not a member of the cluster"
        ))),
    }
}

/// Adds the cluster's routes to `router`.
pub(crate) fn register(router: Router, slot: Arc<Slot>) -> Router {
    let forward = slot.clone();
    let propose = slot.clone();
    let join = slot.clone();
    let calls = slot.clone();
    let status = slot.clone();
    let leave = slot;
    router
        .unary(crate::server::CALL, move |request| {
            let slot = calls.clone();
            async move {
                let (_, node) = slot.get()?;
                crate::server::call(&node, request.payload).await
            }
        })
        .unary(crate::server::STATUS, move |_request| {
            let slot = status.clone();
            async move {
                let (core, node) = slot.get()?;
                let cluster = core
                    .endpoint()
                    .map(|e| e.cluster().to_owned())
                    .unwrap_or_default();
                let reply = crate::server::status(&node, core.me, &cluster);
                Ok(Bytes::from(reply.encode_to_vec()))
            }
        })
        .unary(kind::FORWARD, move |request| {
            let slot = forward.clone();
            async move {
                member_only(&request)?;
                let reply = match slot.get() {
                    Ok((_, node)) => serve_forward(&node, request.payload).await,
                    // Not serving yet (or any more): the caller reroutes.
                    Err(_) => reply_error(&EntityError::ShuttingDown),
                };
                Ok(Bytes::from(reply.encode_to_vec()))
            }
        })
        .unary(kind::PROPOSE, move |request| {
            let slot = propose.clone();
            async move {
                let from = member_only(&request)?;
                let (core, _node) = slot.get()?;
                let batch = WriteBatch::decode(request.payload)
                    .map_err(|e| RemoteError::application(format!("malformed batch: {e}")))?;
                Ok(Bytes::from(
                    core.propose_here(from, batch).await?.encode_to_vec(),
                ))
            }
        })
        .unary(kind::JOIN, move |request| {
            let slot = join.clone();
            async move {
                member_only(&request)?;
                let (core, _node) = slot.get()?;
                let join = JoinRequest::decode(request.payload)
                    .map_err(|e| RemoteError::application(format!("malformed join: {e}")))?;
                Ok(Bytes::from(
                    core.join_here(join.node_id, join.addr)
                        .await
                        .encode_to_vec(),
                ))
            }
        })
        .unary(kind::LEAVE, move |request| {
            let slot = leave.clone();
            async move {
                member_only(&request)?;
                let (core, _node) = slot.get()?;
                let leave = LeaveRequest::decode(request.payload)
                    .map_err(|e| RemoteError::application(format!("malformed leave: {e}")))?;
                Ok(Bytes::from(
                    core.leave_here(leave.node_id).await.encode_to_vec(),
                ))
            }
        })
}

fn reply_error(error: &EntityError) -> ForwardReply {
    ForwardReply {
        error: Some(to_wire(error)),
        ..ForwardReply::default()
    }
}

async fn serve_forward(node: &crate::Node, payload: Bytes) -> ForwardReply {
    let request = match ForwardRequest::decode(payload) {
        Ok(request) => request,
        Err(e) => {
            return reply_error(&EntityError::Decode {
                what: "forwarded request".into(),
                reason: e.to_string(),
            });
        }
    };
    let op = match Op::from_request(&request) {
        Ok(op) => op,
        Err(reason) => {
            return reply_error(&EntityError::Decode {
                what: "forwarded request".into(),
                reason,
            });
        }
    };
    match node
        .run_local(&request.entity_type, &request.entity_id, op)
        .await
    {
        Ok(Some(ok)) => ForwardReply {
            ok,
            ..ForwardReply::default()
        },
        Ok(None) => ForwardReply {
            pending: true,
            ..ForwardReply::default()
        },
        Err(error) => reply_error(&error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_round_trip_and_garbage_is_refused() {
        let request = Some(RequestId::new(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef));
        let ops = [
            Op::Call {
                handler: "add".into(),
                params: Bytes::from_static(b"\x01"),
                request,
            },
            Op::Send {
                handler: "add".into(),
                params: Bytes::from_static(b"\x02"),
                request: RequestId::new(7),
                at: Some(Timestamp::from_unix_ms(42)),
            },
            Op::Resolve {
                name: "approval".into(),
                value: DeferredValue::Failure("no".into()),
            },
            Op::Outcome {
                request: RequestId::new(9),
                wait: Duration::from_millis(1500),
            },
        ];
        for op in ops {
            let wire = op.to_request("Order", "o-1").encode_to_vec();
            let back = ForwardRequest::decode(wire.as_slice()).expect("decodes");
            assert_eq!(back.entity_type, "Order");
            let again = Op::from_request(&back).expect("valid");
            assert_eq!(format!("{again:?}"), format!("{op:?}"));
        }
        let mut bad = Op::Outcome {
            request: RequestId::new(1),
            wait: Duration::ZERO,
        }
        .to_request("Order", "o-1");
        bad.request_id = Bytes::from_static(b"short");
        assert!(Op::from_request(&bad).is_err());
        bad.request_id = Bytes::new();
        assert!(Op::from_request(&bad).is_err());
        bad.op = 99;
        assert!(Op::from_request(&bad).is_err());
        assert!(ForwardRequest::decode(&[0x12_u8, 0x7f, 0x00][..]).is_err());
    }
}

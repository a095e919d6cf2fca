//! Built-in entity types, so a user can try a node without writing code:
//! a durable key-value entity ([`Kv`], one entity per key) and a counter
//! ([`Counter`]). The `shoal` binary registers both; a library user can
//! with [`crate::NodeBuilder::with_builtins`].

use serde::{Deserialize, Serialize};

use crate::entity::{Activity, ActivityContext, Entity, Handlers, Rpc, RpcContext, Visibility};

/// A durable key-value pair: the entity id is the key.
#[derive(Debug, Clone, Copy, Default)]
pub struct Kv;

/// The state of one [`Kv`] entity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvState {
    /// The value, if set.
    pub value: Option<String>,
}

impl Entity for Kv {
    const NAME: &'static str = "shoal.Kv";
    type State = KvState;
    fn handlers(h: &mut Handlers<Self>) {
        h.rpc(KvGet).activity(KvSet).activity(KvDel);
    }
}

/// `get`: the value, if set.
#[derive(Debug, Clone, Copy)]
pub struct KvGet;
impl Rpc<Kv> for KvGet {
    const NAME: &'static str = "get";
    type Params = ();
    type Output = Option<String>;
    async fn run(&self, ctx: &RpcContext<'_, Kv>, (): ()) -> Option<String> {
        ctx.state().value.clone()
    }
}

/// `set`: stores the value; answers the previous one.
#[derive(Debug, Clone, Copy)]
pub struct KvSet;
impl Activity<Kv> for KvSet {
    const NAME: &'static str = "set";
    const VISIBILITY: Visibility = Visibility::Public;
    type Params = String;
    type Output = Option<String>;
    type Error = String;
    async fn run(
        &self,
        ctx: &mut ActivityContext<'_, Kv>,
        value: String,
    ) -> Result<Option<String>, String> {
        Ok(ctx.state_mut().value.replace(value))
    }
}

/// `del`: removes the value; answers whether there was one.
#[derive(Debug, Clone, Copy)]
pub struct KvDel;
impl Activity<Kv> for KvDel {
    const NAME: &'static str = "del";
    const VISIBILITY: Visibility = Visibility::Public;
    type Params = ();
    type Output = bool;
    type Error = String;
    async fn run(&self, ctx: &mut ActivityContext<'_, Kv>, (): ()) -> Result<bool, String> {
        Ok(ctx.state_mut().value.take().is_some())
    }
}

/// A durable counter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counter;

/// The state of one [`Counter`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterState {
    /// The current value.
    pub value: i64,
}

impl Entity for Counter {
    const NAME: &'static str = "shoal.Counter";
    type State = CounterState;
    fn handlers(h: &mut Handlers<Self>) {
        h.rpc(CounterGet).activity(CounterAdd);
    }
}

/// `get`: the current value.
#[derive(Debug, Clone, Copy)]
pub struct CounterGet;
impl Rpc<Counter> for CounterGet {
    const NAME: &'static str = "get";
    type Params = ();
    type Output = i64;
    async fn run(&self, ctx: &RpcContext<'_, Counter>, (): ()) -> i64 {
        ctx.state().value
    }
}

/// `add`: adds (wrapping is refused); answers the new value.
#[derive(Debug, Clone, Copy)]
pub struct CounterAdd;
impl Activity<Counter> for CounterAdd {
    const NAME: &'static str = "add";
    const VISIBILITY: Visibility = Visibility::Public;
    type Params = i64;
    type Output = i64;
    type Error = String;
    async fn run(&self, ctx: &mut ActivityContext<'_, Counter>, by: i64) -> Result<i64, String> {
        let state = ctx.state_mut();
        state.value = state
            .value
            .checked_add(by)
            .ok_or_else(|| format!("{} + {by} overflows", state.value))?;
        Ok(state.value)
    }
}

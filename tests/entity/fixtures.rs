//! Entity types the tests share.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};
use shoal::entity::{
    Activity, ActivityContext, Entity, Handlers, Method, Rpc, RpcContext, Visibility,
};
use tokio::sync::Semaphore;

/// A counter with every kind of handler, plus hooks for the tests: a count
/// of activity bodies run, and a gate that `Wait` blocks on.
#[derive(Clone)]
pub struct Counter {
    pub runs: Arc<AtomicUsize>,
    pub gate: Arc<Semaphore>,
}

impl Counter {
    pub fn new() -> Self {
        Counter {
            runs: Arc::new(AtomicUsize::new(0)),
            gate: Arc::new(Semaphore::new(0)),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Count {
    pub value: i64,
    pub history: Vec<i64>,
}

impl Entity for Counter {
    const NAME: &'static str = "Counter";
    type State = Count;
    fn handlers(h: &mut Handlers<Self>) {
        h.rpc(Get)
            .rpc(GetDoubled)
            .activity(Add)
            .activity(AddThenFail)
            .activity(AddThenPanic)
            .activity(Reset)
            .activity(Wait)
            .activity(Pay)
            .method(Double);
    }
}

pub struct Get;
impl Rpc<Counter> for Get {
    const NAME: &'static str = "get";
    type Params = ();
    type Output = i64;
    async fn run(&self, ctx: &RpcContext<'_, Counter>, (): ()) -> i64 {
        ctx.state().value
    }
}

/// Uses the internal `Double` method.
pub struct GetDoubled;
impl Rpc<Counter> for GetDoubled {
    const NAME: &'static str = "get_doubled";
    type Params = ();
    type Output = i64;
    async fn run(&self, ctx: &RpcContext<'_, Counter>, (): ()) -> i64 {
        ctx.method(&Double, ctx.state().value).await
    }
}

pub struct Double;
impl Method<Counter> for Double {
    const NAME: &'static str = "double";
    type Params = i64;
    type Output = i64;
    async fn run(&self, _ctx: &RpcContext<'_, Counter>, v: i64) -> i64 {
        v * 2
    }
}

pub struct Add;
impl Activity<Counter> for Add {
    const NAME: &'static str = "add";
    const VISIBILITY: Visibility = Visibility::Public;
    type Params = i64;
    type Output = i64;
    type Error = String;
    async fn run(&self, ctx: &mut ActivityContext<'_, Counter>, by: i64) -> Result<i64, String> {
        ctx.entity().runs.fetch_add(1, Ordering::SeqCst);
        let state = ctx.state_mut();
        state.value += by;
        state.history.push(by);
        Ok(state.value)
    }
}

/// Changes the state, then fails: nothing may stick.
pub struct AddThenFail;
impl Activity<Counter> for AddThenFail {
    const NAME: &'static str = "add_then_fail";
    const VISIBILITY: Visibility = Visibility::Public;
    type Params = i64;
    type Output = i64;
    type Error = String;
    async fn run(&self, ctx: &mut ActivityContext<'_, Counter>, by: i64) -> Result<i64, String> {
        ctx.state_mut().value += by;
        ctx.state_mut().history.push(by);
        Err(format!("refused {by}"))
    }
}

/// Changes the state, then panics: nothing may stick.
pub struct AddThenPanic;
impl Activity<Counter> for AddThenPanic {
    const NAME: &'static str = "add_then_panic";
    const VISIBILITY: Visibility = Visibility::Public;
    type Params = i64;
    type Output = i64;
    type Error = String;
    async fn run(&self, ctx: &mut ActivityContext<'_, Counter>, by: i64) -> Result<i64, String> {
        ctx.state_mut().value += by;
        panic!("add_then_panic({by})");
    }
}

/// Private (the default for activities): clients may not call it.
pub struct Reset;
impl Activity<Counter> for Reset {
    const NAME: &'static str = "reset";
    type Params = ();
    type Output = ();
    type Error = String;
    async fn run(&self, ctx: &mut ActivityContext<'_, Counter>, (): ()) -> Result<(), String> {
        ctx.state_mut().value = 0;
        Ok(())
    }
}

/// Blocks until the test adds a permit to the gate.
pub struct Wait;
impl Activity<Counter> for Wait {
    const NAME: &'static str = "wait";
    const VISIBILITY: Visibility = Visibility::Public;
    type Params = ();
    type Output = i64;
    type Error = String;
    async fn run(&self, ctx: &mut ActivityContext<'_, Counter>, (): ()) -> Result<i64, String> {
        let permit = ctx
            .entity()
            .gate
            .acquire()
            .await
            .map_err(|e| e.to_string())?;
        permit.forget();
        ctx.state_mut().value += 1;
        Ok(ctx.state().value)
    }
}

/// Adds `amount` once per payment id: the handler's own idempotency key.
pub struct Pay;
impl Activity<Counter> for Pay {
    const NAME: &'static str = "pay";
    const VISIBILITY: Visibility = Visibility::Public;
    type Params = (String, i64);
    type Output = i64;
    type Error = String;
    fn idempotency_key(&self, (payment, _): &(String, i64)) -> Option<String> {
        Some(payment.clone())
    }
    async fn run(
        &self,
        ctx: &mut ActivityContext<'_, Counter>,
        (_, amount): (String, i64),
    ) -> Result<i64, String> {
        ctx.entity().runs.fetch_add(1, Ordering::SeqCst);
        ctx.state_mut().value += amount;
        Ok(ctx.state().value)
    }
}

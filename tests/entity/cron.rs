//! Cron jobs: durable schedules, exactly one run per fire time, also across
//! a restart.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal::Node;
use shoal::cron::CronJob;
use shoal::entity::{Activity, ActivityContext, Entity, Handlers, Rpc, RpcContext, Visibility};

use crate::within;

pub(crate) struct Ticks;

#[derive(Default, Serialize, Deserialize)]
pub(crate) struct TickLog {
    fired: Vec<u64>,
}

impl Entity for Ticks {
    const NAME: &'static str = "Ticks";
    type State = TickLog;
    fn handlers(h: &mut Handlers<Self>) {
        h.rpc(Fired).activity(Fire);
    }
}

pub(crate) struct Fired;
impl Rpc<Ticks> for Fired {
    const NAME: &'static str = "fired";
    type Params = ();
    type Output = Vec<u64>;
    async fn run(&self, ctx: &RpcContext<'_, Ticks>, (): ()) -> Vec<u64> {
        ctx.state().fired.clone()
    }
}

struct Fire;
impl Activity<Ticks> for Fire {
    const NAME: &'static str = "fire";
    const VISIBILITY: Visibility = Visibility::Public;
    type Params = u64;
    type Output = ();
    type Error = String;
    async fn run(&self, ctx: &mut ActivityContext<'_, Ticks>, at_ms: u64) -> Result<(), String> {
        ctx.state_mut().fired.push(at_ms);
        Ok(())
    }
}

pub(crate) fn every_second() -> CronJob {
    CronJob::builder("every-second", "* * * * * *")
        .unwrap()
        .send::<Ticks, _, _>("t", Fire, |fire_ms| fire_ms)
}

async fn start(dir: &std::path::Path) -> Node {
    within(
        "start",
        Node::builder()
            .data_dir(dir)
            .register(Ticks)
            .cron(every_second())
            .start(),
    )
    .await
    .unwrap()
}

async fn fired_at_least(node: &Node, n: usize) -> Vec<u64> {
    let client = node.client::<Ticks>("t");
    within("fires", async {
        loop {
            let fired = client.call(Fired, ()).await.unwrap();
            if fired.len() >= n {
                return fired;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

#[tokio::test]
async fn a_cron_job_fires_once_per_fire_time_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    assert!(node.singleton_running("cron:every-second"));
    let first = fired_at_least(&node, 2).await;
    node.shutdown().await.unwrap();

    tracing::info!("--- restarted: the schedule goes on from its stored cursor");
    let node = start(dir.path()).await;
    let all = fired_at_least(&node, first.len() + 2).await;
    node.shutdown().await.unwrap();
    assert!(
        all.iter().all(|ms| ms % 1000 == 0),
        "fire times are whole seconds: {all:?}"
    );
    let mut sorted = all.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), all.len(), "a fire time ran twice: {all:?}");
}

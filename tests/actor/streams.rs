//! `add_stream`: items are handled in order, `finished` is called once, and a
//! slow actor backpressures the stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use shoal::actor::{Actor, ActorSystem, Context, Handler, Message, StreamHandler};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::within;

struct Summer {
    source: Option<ReceiverStream<u64>>,
    items: Vec<u64>,
    finished: Arc<AtomicUsize>,
}
impl Actor for Summer {
    async fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(stream) = self.source.take() {
            ctx.add_stream(stream);
        }
    }
}
impl StreamHandler<u64> for Summer {
    async fn handle(&mut self, item: u64, _ctx: &mut Context<Self>) {
        self.items.push(item);
    }
    async fn finished(&mut self, _ctx: &mut Context<Self>) {
        self.finished.fetch_add(1, Ordering::SeqCst);
    }
}
struct Items;
impl Message for Items {
    type Result = Vec<u64>;
}
impl Handler<Items> for Summer {
    async fn handle(&mut self, _: Items, _ctx: &mut Context<Self>) -> Vec<u64> {
        self.items.clone()
    }
}

#[tokio::test]
async fn a_stream_is_consumed_in_order_and_finished_is_called() {
    let system = ActorSystem::new();
    let (tx, rx) = mpsc::channel(16);
    let finished = Arc::new(AtomicUsize::new(0));
    // A mailbox much smaller than the stream: the pump waits for room.
    let addr = system.spawn_with_capacity(
        Summer {
            source: Some(ReceiverStream::new(rx)),
            items: Vec::new(),
            finished: finished.clone(),
        },
        4,
    );
    for i in 0..1_000 {
        within("stream send", tx.send(i)).await.unwrap();
    }
    drop(tx);
    within("finished", async {
        while finished.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    })
    .await;
    let items = addr.send(Items).await.unwrap();
    assert_eq!(items, (0..1_000).collect::<Vec<_>>());
    assert_eq!(finished.load(Ordering::SeqCst), 1);
}

/// Lines from a stream that a test closes by stopping the actor.
struct Forever {
    source: Option<ReceiverStream<u64>>,
    finished: Arc<AtomicBool>,
}
impl Actor for Forever {
    async fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(stream) = self.source.take() {
            ctx.add_stream(stream);
        }
    }
}
impl StreamHandler<u64> for Forever {
    async fn handle(&mut self, _: u64, _ctx: &mut Context<Self>) {}
    async fn finished(&mut self, _ctx: &mut Context<Self>) {
        self.finished.store(true, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_stream_keeps_its_actor_alive_and_ends_with_it() {
    let system = ActorSystem::new();
    let (tx, rx) = mpsc::channel(16);
    let finished = Arc::new(AtomicBool::new(false));
    let addr = system.spawn(Forever {
        source: Some(ReceiverStream::new(rx)),
        finished: finished.clone(),
    });
    let id = addr.id();
    drop(addr);
    // No address is left, but the stream still reaches the actor.
    tx.send(1).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(
        system.actor_count(),
        1,
        "{id} must stay alive while its stream is open"
    );
    within("shutdown", system.shutdown()).await;
    // Cancelled by the stop, not finished.
    assert!(!finished.load(Ordering::SeqCst));
    assert!(tx.is_closed(), "the stream was dropped with the actor");
}

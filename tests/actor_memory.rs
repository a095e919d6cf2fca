//! Stopped actors give their memory back: spawn 100k actors, let each handle
//! a message, stop them all, and compare the heap bytes in use (counted by a
//! wrapping global allocator) with the baseline.
//!
//! Its own test binary, with one test, so no other test allocates meanwhile.

#![allow(unsafe_code)] // The counting allocator below.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use shoal::actor::{Actor, ActorSystem, Context, Handler, Message};

struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every method forwards to `System` unchanged and only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: forwarded with the caller's arguments.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

struct Cell(u64);
impl Actor for Cell {}
struct Touch;
impl Message for Touch {
    type Result = u64;
}
impl Handler<Touch> for Cell {
    async fn handle(&mut self, _: Touch, _ctx: &mut Context<Self>) -> u64 {
        self.0 += 1;
        self.0
    }
}

const ACTORS: usize = 100_000;

async fn spawn_touch_and_drop(system: &ActorSystem, n: usize) -> isize {
    let addrs: Vec<_> = (0..n).map(|_| system.spawn(Cell(0))).collect();
    for chunk in addrs.chunks(1_000) {
        for addr in chunk {
            addr.do_send(Touch).await.expect("send");
        }
        // One reply per chunk: the chunk's mailboxes have been in use.
        assert_eq!(chunk[chunk.len() - 1].send(Touch).await.expect("send"), 2);
    }
    let peak = LIVE_BYTES.load(Ordering::Relaxed);
    drop(addrs);
    let drained = async {
        while system.actor_count() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), drained)
        .await
        .expect("every actor stops once its addresses are dropped");
    peak
}

#[test]
fn stopped_actors_give_their_memory_back() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let system = ActorSystem::new();
        // Warm up the runtime's own lazily grown structures.
        spawn_touch_and_drop(&system, 10_000).await;
        let baseline = LIVE_BYTES.load(Ordering::Relaxed);
        let peak = spawn_touch_and_drop(&system, ACTORS).await;
        let after = LIVE_BYTES.load(Ordering::Relaxed);
        let per_actor = (peak - baseline) / ACTORS as isize;
        let retained = after - baseline;
        eprintln!(
            "baseline {baseline} B, peak {peak} B ({per_actor} B per actor), after stop {after} B (retained {retained} B)"
        );
        assert!(per_actor > 100, "the measurement must see the actors ({per_actor} B each)");
        assert!(
            retained < 1 << 20,
            "stopped actors must free their memory: {retained} B still held"
        );
    });
}

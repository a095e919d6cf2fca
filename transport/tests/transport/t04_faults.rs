//! Fault injection over real QUIC: partition, heal, delay, loss.

use std::time::{Duration, Instant};

use bytes::Bytes;
use shoal_transport::{Ca, Error, LinkFault, NetFaults, NodeId};
use tracing::info;

use crate::{ECHO, bounded, node};

#[tokio::test]
async fn partition_times_out_and_heal_restores_service() {
    bounded(async {
        let faults = NetFaults::new(0x5eed);
        info!(seed = faults.seed(), "--- start");
        let ca = Ca::generate("test").unwrap();
        let (a, b, c) = (NodeId::new(1), NodeId::new(2), NodeId::new(3));
        let node_a = node(&ca, 1, Some(&faults));
        let node_b = node(&ca, 2, Some(&faults));
        let node_c = node(&ca, 3, Some(&faults));
        for n in [&node_a, &node_b, &node_c] {
            n.endpoint.add_peer(a, node_a.endpoint.local_addr());
            n.endpoint.add_peer(b, node_b.endpoint.local_addr());
            n.endpoint.add_peer(c, node_c.endpoint.local_addr());
        }
        let call = |from: &crate::Node, to: NodeId| {
            let endpoint = from.endpoint.clone();
            async move {
                endpoint
                    .request_with_timeout(
                        to,
                        ECHO,
                        Bytes::from_static(b"x"),
                        Duration::from_millis(300),
                    )
                    .await
            }
        };
        call(&node_a, b).await.unwrap();
        call(&node_b, a).await.unwrap();

        info!("--- partition a <-> b: calls across time out, others still work");
        faults.partition(a, b);
        assert!(matches!(call(&node_a, b).await, Err(Error::Timeout(_))));
        assert!(matches!(call(&node_b, a).await, Err(Error::Timeout(_))));
        call(&node_a, c).await.unwrap();
        call(&node_c, b).await.unwrap();

        info!("--- heal: the same endpoints talk again");
        faults.heal(a, b);
        let mut healed = false;
        for _ in 0..20 {
            if call(&node_a, b).await.is_ok() && call(&node_b, a).await.is_ok() {
                healed = true;
                break;
            }
        }
        assert!(healed, "no recovery after heal");

        info!("--- a long partition kills the connection; heal reconnects");
        faults.isolate(a);
        tokio::time::sleep(Duration::from_millis(3500)).await; // > idle timeout
        let error = call(&node_a, b).await.unwrap_err();
        assert!(error.is_retryable(), "{error:?}");
        faults.heal_all();
        let mut healed = false;
        for _ in 0..20 {
            match node_a.endpoint.request(b, ECHO, Bytes::new()).await {
                Ok(_) => {
                    healed = true;
                    break;
                }
                Err(e) => assert!(e.is_retryable(), "{e:?}"),
            }
        }
        assert!(healed, "no reconnection after heal");

        for n in [&node_a, &node_b, &node_c] {
            n.endpoint.shutdown().await;
        }
    })
    .await;
}

#[tokio::test]
async fn delay_and_loss_slow_but_do_not_break_calls() {
    bounded(async {
        let faults = NetFaults::new(7);
        info!(seed = faults.seed(), "--- start");
        let ca = Ca::generate("test").unwrap();
        let (a, b) = (NodeId::new(1), NodeId::new(2));
        let node_a = node(&ca, 1, Some(&faults));
        let node_b = node(&ca, 2, Some(&faults));
        node_a.endpoint.add_peer(b, node_b.endpoint.local_addr());
        node_a
            .endpoint
            .request(b, ECHO, Bytes::new())
            .await
            .unwrap();

        info!("--- 50 ms each way");
        faults.set(a, b, LinkFault::Delay(Duration::from_millis(50)));
        faults.set(b, a, LinkFault::Delay(Duration::from_millis(50)));
        let started = Instant::now();
        node_a
            .endpoint
            .request(b, ECHO, Bytes::new())
            .await
            .unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(100),
            "{:?}",
            started.elapsed()
        );

        info!("--- 20 % loss: QUIC retransmits");
        faults.set(a, b, LinkFault::Drop { probability: 0.2 });
        faults.set(b, a, LinkFault::Drop { probability: 0.2 });
        for i in 0..20u8 {
            let reply = node_a
                .endpoint
                .request(b, ECHO, Bytes::from(vec![i]))
                .await
                .unwrap();
            assert_eq!(&reply[..], &[i]);
        }

        faults.heal_all();
        node_a.endpoint.shutdown().await;
        node_b.endpoint.shutdown().await;
    })
    .await;
}

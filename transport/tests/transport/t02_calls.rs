//! Request/reply, one-way, streamed replies, concurrency, limits and
//! remote failures between two healthy endpoints.

use std::time::Duration;

use bytes::Bytes;
use shoal_transport::{Ca, Error, ErrorCode, Kind, NodeId};
use tracing::info;

use crate::{BIG, COUNT, ECHO, FAIL, NOTE, SLOW, bounded, collect, node};

#[tokio::test]
async fn every_call_shape_works() {
    bounded(async {
        let ca = Ca::generate("test").unwrap();
        let server = node(&ca, 1, None);
        let caller = node(&ca, 2, None);
        let to = NodeId::new(1);
        caller.endpoint.add_peer(to, server.endpoint.local_addr());

        info!("--- unary");
        let reply = caller
            .endpoint
            .request(to, ECHO, Bytes::from_static(b"ping"))
            .await
            .unwrap();
        assert_eq!(&reply[..], b"ping");

        info!("--- empty and maximum-size payloads");
        assert!(
            caller
                .endpoint
                .request(to, ECHO, Bytes::new())
                .await
                .unwrap()
                .is_empty()
        );
        let max = caller.endpoint.config().message_bytes_max();
        let big = Bytes::from(vec![7u8; max]);
        assert_eq!(
            caller
                .endpoint
                .request(to, ECHO, big.clone())
                .await
                .unwrap(),
            big
        );

        info!("--- one-way");
        caller
            .endpoint
            .send_one_way(to, NOTE, Bytes::from_static(b"n1"))
            .await
            .unwrap();
        for _ in 0..100 {
            if !server.notes.lock().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            server.notes.lock().unwrap().as_slice(),
            &[Bytes::from_static(b"n1")]
        );

        info!("--- streamed reply");
        let items: Vec<_> = collect(&caller.endpoint, to, 5).await;
        let items: Vec<Bytes> = items.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            items,
            (0..5u8).map(|i| Bytes::from(vec![i])).collect::<Vec<_>>()
        );
        assert!(collect(&caller.endpoint, to, 0).await.is_empty());

        info!("--- a large streamed transfer is paced by flow control");
        let mut chunks = caller
            .endpoint
            .request_stream(to, crate::CHUNKS, Bytes::from(vec![200u8]))
            .await
            .unwrap();
        let (mut count, mut total) = (0, 0);
        while let Some(chunk) = futures::StreamExt::next(&mut chunks).await {
            let chunk = chunk.unwrap();
            assert!(chunk.iter().all(|b| *b == 0x42));
            count += 1;
            total += chunk.len();
        }
        assert_eq!((count, total), (200, 200 * 64 * 1024));

        caller.endpoint.shutdown().await;
        server.endpoint.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn remote_failures_come_back_as_errors() {
    bounded(async {
        let ca = Ca::generate("test").unwrap();
        let server = node(&ca, 1, None);
        let caller = node(&ca, 2, None);
        let to = server.endpoint.local_addr();

        info!("--- application error with details");
        let error = caller.endpoint.request(to, FAIL, Bytes::new()).await.unwrap_err();
        let Error::Remote(remote) = error else { panic!("{error:?}") };
        assert_eq!(remote.code, ErrorCode::Application);
        assert_eq!(remote.message, "refused on purpose");
        assert_eq!(&remote.details[..], b"why");

        info!("--- unknown kind, and a kind called with the wrong shape");
        for (kind, shape) in [(Kind(99), "unary"), (COUNT, "unary")] {
            let error = caller.endpoint.request(to, kind, Bytes::new()).await.unwrap_err();
            assert!(
                matches!(&error, Error::Remote(r) if r.code == ErrorCode::UnknownKind),
                "{shape}: {error:?}"
            );
        }
        let items = caller.endpoint.request_stream(to, ECHO, Bytes::new()).await.unwrap();
        let items: Vec<_> = futures::StreamExt::collect(items).await;
        assert!(matches!(&items[..], [Err(Error::Remote(r))] if r.code == ErrorCode::UnknownKind));

        info!("--- stream failing before and after items");
        let items = collect(&caller.endpoint, to, 255).await;
        assert!(matches!(&items[..], [Err(Error::Remote(r))] if r.message == "no stream for you"));
        let items = collect(&caller.endpoint, to, 254).await;
        assert_eq!(items.len(), 255);
        assert!(items[..254].iter().all(Result::is_ok));
        assert!(matches!(&items[254], Err(Error::Remote(r)) if r.message == "broke midway"));

        info!("--- the server refuses to send an oversize reply");
        let error = caller.endpoint.request(to, BIG, Bytes::new()).await.unwrap_err();
        assert!(
            matches!(&error, Error::Remote(r) if r.code == ErrorCode::Internal && r.message.contains("exceeds")),
            "{error:?}"
        );

        info!("--- an oversize request is refused locally; the connection survives");
        let max = caller.endpoint.config().message_bytes_max();
        let error = caller
            .endpoint
            .request(to, ECHO, Bytes::from(vec![0u8; max + 1]))
            .await
            .unwrap_err();
        assert!(matches!(error, Error::MessageTooLarge { len, max: m } if len == max + 1 && m == max));
        let error = caller
            .endpoint
            .send_one_way(to, NOTE, Bytes::from(vec![0u8; max + 1]))
            .await
            .unwrap_err();
        assert!(matches!(error, Error::MessageTooLarge { .. }));
        assert_eq!(&caller.endpoint.request(to, ECHO, Bytes::from_static(b"ok")).await.unwrap()[..], b"ok");

        info!("--- per-request timeout");
        let error = caller
            .endpoint
            .request_with_timeout(to, SLOW, Bytes::new(), Duration::from_millis(20))
            .await
            .unwrap_err();
        assert!(matches!(error, Error::Timeout(_)) && error.is_retryable());

        caller.endpoint.shutdown().await;
        server.endpoint.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_requests_share_one_connection() {
    bounded(async {
        let ca = Ca::generate("test").unwrap();
        let server = node(&ca, 1, None);
        let caller = node(&ca, 2, None);
        let to = server.endpoint.local_addr();
        // 2000 slow requests at once: more than fit in the stream limit
        // sequentially in the time allowed, so they must overlap.
        let calls = (0..2000u32).map(|i| {
            let endpoint = caller.endpoint.clone();
            async move {
                let payload = Bytes::from(i.to_be_bytes().to_vec());
                let kind = if i % 10 == 0 { SLOW } else { ECHO };
                (
                    endpoint.request(to, kind, payload.clone()).await.unwrap(),
                    payload,
                )
            }
        });
        for (reply, payload) in futures::future::join_all(calls).await {
            assert_eq!(reply, payload);
        }
        caller.endpoint.shutdown().await;
        server.endpoint.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn connections_are_reused_and_reestablished() {
    bounded(async {
        let ca = Ca::generate("test").unwrap();
        let server = node(&ca, 1, None);
        let caller = node(&ca, 2, None);
        let to = NodeId::new(1);
        caller.endpoint.add_peer(to, server.endpoint.local_addr());
        for _ in 0..5 {
            caller
                .endpoint
                .request(to, ECHO, Bytes::new())
                .await
                .unwrap();
        }
        assert!(crate::logged(&[
            "connected",
            &server.endpoint.local_addr().to_string()
        ]));

        info!("--- the server restarts on a new port; the caller learns it and reconnects");
        server.endpoint.shutdown().await;
        let error = caller
            .endpoint
            .request(to, ECHO, Bytes::new())
            .await
            .unwrap_err();
        assert!(error.is_retryable(), "{error:?}");
        let restarted = node(&ca, 1, None);
        caller
            .endpoint
            .add_peer(to, restarted.endpoint.local_addr());
        let reply = caller
            .endpoint
            .request(to, ECHO, Bytes::from_static(b"back"))
            .await
            .unwrap();
        assert_eq!(&reply[..], b"back");

        caller.endpoint.shutdown().await;
        restarted.endpoint.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_inbound_budget_serializes_requests_but_fails_none() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    bounded(async {
        let ca = Ca::generate("test").unwrap();
        let base = crate::test_config();
        // Room for exactly one maximum-size request at a time.
        let config = shoal_transport::Config::builder()
            .message_bytes_max(base.message_bytes_max())
            .inbound_bytes_max(base.frame_bytes_max() + 4)
            .build()
            .unwrap();
        let (active, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let router = {
            let (active, peak) = (active.clone(), peak.clone());
            shoal_transport::Router::new().unary(ECHO, move |_req| {
                let (active, peak) = (active.clone(), peak.clone());
                async move {
                    let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    active.fetch_sub(1, Ordering::SeqCst);
                    Ok(Bytes::from_static(b"done"))
                }
            })
        };
        let identity = ca
            .issue_node(NodeId::new(1), shoal_transport::Validity::days(1))
            .unwrap();
        let server = shoal_transport::Endpoint::builder(identity)
            .config(config)
            .router(router)
            .bind(crate::localhost())
            .unwrap();
        let caller = node(&ca, 2, None);
        let to = server.local_addr();
        let payload = Bytes::from(vec![1u8; base.message_bytes_max()]);
        let calls = (0..16).map(|_| caller.endpoint.request(to, ECHO, payload.clone()));
        for reply in futures::future::join_all(calls).await {
            assert_eq!(&reply.unwrap()[..], b"done");
        }
        assert_eq!(
            peak.load(Ordering::SeqCst),
            1,
            "budget did not bound concurrency"
        );
        caller.endpoint.shutdown().await;
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn callers_waiting_on_a_failed_dial_share_its_failure() {
    bounded(async {
        let ca = Ca::generate("test").unwrap();
        let caller = node(&ca, 2, None);
        // Nobody listens there: each dial costs the 2 s connect timeout.
        let silent = std::net::UdpSocket::bind(crate::localhost()).unwrap();
        let to = silent.local_addr().unwrap();
        let started = std::time::Instant::now();
        let calls = (0..8).map(|_| {
            caller
                .endpoint
                .request_with_timeout(to, ECHO, Bytes::new(), Duration::from_secs(10))
        });
        for result in futures::future::join_all(calls).await {
            let error = result.unwrap_err();
            assert!(
                matches!(error, Error::Connect { .. }) && error.is_retryable(),
                "{error:?}"
            );
        }
        // One connect timeout for all eight, not eight in a row.
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
        caller.endpoint.shutdown().await;
    })
    .await;
}

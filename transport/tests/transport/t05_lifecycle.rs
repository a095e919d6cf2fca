//! Endpoint lifecycle: shutdown with calls in flight, use after shutdown,
//! configuration errors, development bootstrap.

use std::time::Duration;

use bytes::Bytes;
use shoal_transport::{Ca, Endpoint, Error, NetFaults, NodeId, Router, Validity, dev_bootstrap};
use tracing::info;

use crate::{ECHO, SLOW, bounded, localhost, node};

#[tokio::test]
async fn shutdown_ends_everything_and_callers_see_retryable_errors() {
    bounded(async {
        let ca = Ca::generate("test").unwrap();
        let server = node(&ca, 1, None);
        let caller = node(&ca, 2, None);
        let to = server.endpoint.local_addr();
        caller
            .endpoint
            .request(to, ECHO, Bytes::new())
            .await
            .unwrap();

        info!("--- shut the server down with slow calls in flight");
        let in_flight: Vec<_> = (0..10)
            .map(|_| {
                let endpoint = caller.endpoint.clone();
                tokio::spawn(async move { endpoint.request(to, SLOW, Bytes::new()).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = std::time::Instant::now();
        server.endpoint.shutdown().await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        for call in in_flight {
            let error = call.await.unwrap().unwrap_err();
            assert!(error.is_retryable(), "{error:?}");
        }

        info!("--- a shut-down endpoint refuses to call");
        caller.endpoint.shutdown().await;
        caller.endpoint.shutdown().await; // idempotent
        let error = caller
            .endpoint
            .request(to, ECHO, Bytes::new())
            .await
            .unwrap_err();
        assert!(matches!(error, Error::Shutdown), "{error:?}");
    })
    .await;
}

#[tokio::test]
async fn dropping_the_last_handle_stops_serving() {
    bounded(async {
        let ca = Ca::generate("test").unwrap();
        let server = node(&ca, 1, None);
        let addr = server.endpoint.local_addr();
        let caller = node(&ca, 2, None);
        caller
            .endpoint
            .request(addr, ECHO, Bytes::new())
            .await
            .unwrap();
        drop(server);
        let error = caller
            .endpoint
            .request_with_timeout(addr, ECHO, Bytes::new(), Duration::from_secs(3))
            .await
            .unwrap_err();
        assert!(error.is_retryable(), "{error:?}");
        caller.endpoint.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn builder_rejects_bad_combinations() {
    bounded(async {
        let ca = Ca::generate("test").unwrap();
        let cli = ca.issue_client("cli", Validity::days(1)).unwrap();
        let serving_client = Endpoint::builder(cli.clone())
            .router(Router::new())
            .bind(localhost());
        assert!(matches!(serving_client, Err(Error::Config(_))));
        let faulty_client = Endpoint::builder(cli)
            .faults(NetFaults::new(1))
            .bind(localhost());
        assert!(matches!(faulty_client, Err(Error::Config(_))));
    })
    .await;
}

#[test]
fn bind_outside_a_runtime_is_an_error() {
    let ca = Ca::generate("test").unwrap();
    let identity = ca.issue_node(NodeId::new(1), Validity::days(1)).unwrap();
    let result = Endpoint::builder(identity).bind(localhost());
    assert!(matches!(result, Err(Error::Config(_))));
}

#[tokio::test]
async fn development_bootstrap_gives_working_nodes_and_says_so() {
    bounded(async {
        let dir_1 = tempfile::tempdir().unwrap();
        let dir_2 = tempfile::tempdir().unwrap();
        let first = dev_bootstrap(dir_1.path(), "dev", NodeId::new(1)).unwrap();
        crate::wait_logged(&["DEVELOPMENT TLS MODE", "NOT FOR PRODUCTION"]).await;
        // Second node: share the CA as the documentation says.
        std::fs::create_dir_all(dir_2.path().join("tls")).unwrap();
        for file in ["ca.pem", "ca.key"] {
            std::fs::copy(
                dir_1.path().join("tls").join(file),
                dir_2.path().join("tls").join(file),
            )
            .unwrap();
        }
        let second = dev_bootstrap(dir_2.path(), "dev", NodeId::new(2)).unwrap();
        let server = crate::node_with(first, crate::test_config(), None);
        let caller = crate::node_with(second, crate::test_config(), None);
        caller
            .endpoint
            .add_peer(NodeId::new(1), server.endpoint.local_addr());
        let who = caller
            .endpoint
            .request(NodeId::new(1), crate::WHO, Bytes::new())
            .await
            .unwrap();
        assert_eq!(&who[..], b"node-2");
        caller.endpoint.shutdown().await;
        server.endpoint.shutdown().await;
    })
    .await;
}

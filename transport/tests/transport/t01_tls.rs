//! Mutual TLS: who may talk, who is refused, and what identity the server
//! sees.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use shoal_transport::{ALPN, Ca, Error, Identity, NodeId, Peer, Validity};
use tracing::info;

use crate::{WHO, bounded, client, localhost, node, wait_logged};

/// Dials `server` with a hand-made rustls configuration and tries one
/// request; returns whether the server answered.
async fn raw_attempt(server: SocketAddr, tls: rustls::ClientConfig, server_name: &str) -> bool {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let config = quinn::ClientConfig::new(Arc::new(crypto));
    let endpoint = quinn::Endpoint::client(localhost()).unwrap();
    let attempt = async {
        let conn = endpoint
            .connect_with(config, server, server_name)
            .unwrap()
            .await
            .ok()?;
        // In TLS 1.3 the client may finish its handshake before the server
        // has judged its certificate: use the connection to find out.
        let (mut send, mut recv) = conn.open_bi().await.ok()?;
        send.write_all(&[0, 0, 0, 0]).await.ok()?;
        send.finish().ok()?;
        recv.read_to_end(1 << 16).await.ok()
    };
    let answered = tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .ok()
        .flatten()
        .is_some();
    endpoint.close(0u32.into(), b"");
    answered
}

fn roots(ca: &Ca) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    let ca_pem = ca.cert_pem();
    let cert = rustls::pki_types::pem::PemObject::from_pem_slice(ca_pem.as_bytes()).unwrap();
    roots.add(cert).unwrap();
    roots
}

fn builder() -> rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier> {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
}

/// A client configuration trusting `trust` and presenting `identity`.
fn tls_presenting(trust: &Ca, identity: &Identity, alpn: &[u8]) -> rustls::ClientConfig {
    use rustls::pki_types::pem::PemObject;
    let chain = rustls::pki_types::CertificateDer::pem_slice_iter(identity.cert_pem().as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key =
        rustls::pki_types::PrivateKeyDer::from_pem_slice(identity.key_pem().as_bytes()).unwrap();
    let mut config = builder()
        .with_root_certificates(roots(trust))
        .with_client_auth_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![alpn.to_vec()];
    config
}

#[tokio::test]
async fn same_ca_talks_and_server_sees_the_right_identity() {
    bounded(async {
        let ca = Ca::generate("test").unwrap();
        let server = node(&ca, 1, None);
        let other = node(&ca, 2, None);
        other
            .endpoint
            .add_peer(NodeId::new(1), server.endpoint.local_addr());

        info!("--- node 2 calls node 1 by id");
        assert_eq!(
            other.endpoint.connect(NodeId::new(1)).await.unwrap(),
            Peer::Node(NodeId::new(1))
        );
        let who = other
            .endpoint
            .request(NodeId::new(1), WHO, Bytes::new())
            .await
            .unwrap();
        assert_eq!(&who[..], b"node-2");

        info!("--- a CLI client dials by address");
        let cli = client(ca.issue_client("ops", Validity::days(1)).unwrap());
        let addr = server.endpoint.local_addr();
        assert_eq!(cli.connect(addr).await.unwrap(), Peer::Node(NodeId::new(1)));
        let who = cli.request(addr, WHO, Bytes::new()).await.unwrap();
        assert_eq!(&who[..], b"client-ops");

        cli.shutdown().await;
        other.endpoint.shutdown().await;
        server.endpoint.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn another_ca_is_refused_in_both_directions() {
    bounded(async {
        // Same cluster name on purpose: trust comes from the CA, not the name.
        let ca = Ca::generate("test").unwrap();
        let rogue = Ca::generate("test").unwrap();
        let server = node(&ca, 1, None);
        let addr = server.endpoint.local_addr();

        info!("--- the server refuses a client certificate from another CA");
        let impostor = rogue.issue_node(NodeId::new(2), Validity::days(1)).unwrap();
        assert!(
            !raw_attempt(
                addr,
                tls_presenting(&ca, &impostor, ALPN),
                "test.shoal.internal"
            )
            .await
        );
        wait_logged(&[
            "refused connection",
            "invalid peer certificate",
            "remote=127.0.0.1:",
        ])
        .await;

        info!("--- a client refuses a server certificate from another CA");
        let rogue_server = node(&rogue, 3, None);
        let honest = node(&ca, 4, None);
        honest
            .endpoint
            .add_peer(NodeId::new(3), rogue_server.endpoint.local_addr());
        let error = honest
            .endpoint
            .request(NodeId::new(3), WHO, Bytes::new())
            .await
            .unwrap_err();
        assert!(matches!(error, Error::Refused { .. }), "{error:?}");
        assert!(!error.is_retryable());
        wait_logged(&["outgoing connection refused", "invalid peer certificate"]).await;

        info!("--- the endpoint still serves good clients");
        let good = node(&ca, 5, None);
        let who = good
            .endpoint
            .request(addr, WHO, Bytes::new())
            .await
            .unwrap();
        assert_eq!(&who[..], b"node-5");

        for endpoint in [
            &good.endpoint,
            &honest.endpoint,
            &rogue_server.endpoint,
            &server.endpoint,
        ] {
            endpoint.shutdown().await;
        }
    })
    .await;
}

#[tokio::test]
async fn expired_certificates_are_refused() {
    bounded(async {
        let ca = Ca::generate("test").unwrap();
        let server = node(&ca, 1, None);
        let addr = server.endpoint.local_addr();
        let past = Validity::between(
            SystemTime::now() - Duration::from_secs(2 * 86_400),
            SystemTime::now() - Duration::from_secs(86_400),
        );

        info!("--- an expired client certificate");
        let expired = ca.issue_node(NodeId::new(2), past).unwrap();
        let stale = client(expired.clone());
        let error = stale.request(addr, WHO, Bytes::new()).await.unwrap_err();
        assert!(!error.is_retryable(), "{error:?}");
        assert!(matches!(error, Error::Refused { .. }), "{error:?}");
        wait_logged(&["refused connection", "certificate expired"]).await;

        info!("--- an expired server certificate");
        let expired_server = crate::node_with(expired, crate::test_config(), None);
        let fresh = client(ca.issue_client("fresh", Validity::days(1)).unwrap());
        let error = fresh
            .request(expired_server.endpoint.local_addr(), WHO, Bytes::new())
            .await
            .unwrap_err();
        assert!(matches!(error, Error::Refused { .. }), "{error:?}");

        for endpoint in [&stale, &fresh, &expired_server.endpoint, &server.endpoint] {
            endpoint.shutdown().await;
        }
    })
    .await;
}

#[tokio::test]
async fn missing_client_certificate_and_wrong_alpn_are_refused() {
    bounded(async {
        let ca = Ca::generate("test").unwrap();
        let server = node(&ca, 1, None);
        let addr = server.endpoint.local_addr();
        let name = "test.shoal.internal";

        info!("--- control: a correct raw client is served");
        let good = ca.issue_client("raw", Validity::days(1)).unwrap();
        assert!(raw_attempt(addr, tls_presenting(&ca, &good, ALPN), name).await);

        info!("--- no client certificate");
        let mut anonymous = builder()
            .with_root_certificates(roots(&ca))
            .with_no_client_auth();
        anonymous.alpn_protocols = vec![ALPN.to_vec()];
        assert!(!raw_attempt(addr, anonymous, name).await);
        wait_logged(&["refused connection", "peer sent no certificates"]).await;

        info!("--- wrong ALPN");
        assert!(!raw_attempt(addr, tls_presenting(&ca, &good, b"http/1.1"), name).await);
        wait_logged(&["refused connection", "doesn't support any known protocol"]).await;

        info!("--- still serving");
        assert!(raw_attempt(addr, tls_presenting(&ca, &good, ALPN), name).await);
        server.endpoint.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_node_must_prove_the_id_it_was_dialed_as() {
    bounded(async {
        let ca = Ca::generate("test").unwrap();
        let server = node(&ca, 1, None);
        let caller = node(&ca, 2, None);
        // Node 7's address points at node 1.
        caller
            .endpoint
            .add_peer(NodeId::new(7), server.endpoint.local_addr());
        let error = caller
            .endpoint
            .request(NodeId::new(7), WHO, Bytes::new())
            .await
            .unwrap_err();
        assert!(matches!(error, Error::Refused { .. }), "{error:?}");
        let error = caller
            .endpoint
            .request(NodeId::new(8), WHO, Bytes::new())
            .await
            .unwrap_err();
        assert!(
            matches!(error, Error::UnknownNode(id) if id == NodeId::new(8)),
            "{error:?}"
        );
        caller.endpoint.shutdown().await;
        server.endpoint.shutdown().await;
    })
    .await;
}

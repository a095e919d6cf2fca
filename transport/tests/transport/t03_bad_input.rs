//! Bad input from an authenticated peer: garbage, truncated frames,
//! oversize lengths, unknown and unexpected frames. Each fails its own
//! stream; the same connection and other clients keep being served.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use shoal_transport::frame::{decode_frame, encode_frame};
use shoal_transport::proto::{self, envelope::Body};
use shoal_transport::{ALPN, Ca, ErrorCode, NodeId, Validity};
use tracing::info;

use crate::{ECHO, bounded, localhost, node};

/// Sends `bytes` on a new bidirectional stream and returns the decoded
/// answer frame, if any.
async fn exchange(conn: &quinn::Connection, bytes: &[u8]) -> Option<proto::Envelope> {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    // The server may stop the stream before taking everything: ignore.
    let _ = send.write_all(bytes).await;
    let _ = send.finish();
    let answer = tokio::time::timeout(Duration::from_secs(5), recv.read_to_end(1 << 20))
        .await
        .expect("server did not answer in time")
        .ok()?;
    let mut buf = bytes::BytesMut::from(&answer[..]);
    decode_frame(&mut buf, 1 << 20).ok().flatten()
}

fn failure_code(answer: Option<proto::Envelope>) -> Option<ErrorCode> {
    match answer?.body? {
        Body::Failure(f) => {
            let code = f.code as u32;
            [
                ErrorCode::MalformedFrame,
                ErrorCode::FrameTooLarge,
                ErrorCode::UnknownFrame,
                ErrorCode::UnexpectedFrame,
                ErrorCode::Truncated,
                ErrorCode::UnknownKind,
            ]
            .into_iter()
            .find(|c| c.as_u32() == code)
        }
        _ => None,
    }
}

fn frame(body: Body) -> Bytes {
    encode_frame(&proto::Envelope { body: Some(body) }, 1 << 20).unwrap()
}

fn echo_frame(payload: &'static [u8]) -> Bytes {
    frame(Body::Request(proto::Request {
        kind: ECHO.0,
        payload: Bytes::from_static(payload),
    }))
}

async fn assert_echo_works(conn: &quinn::Connection) {
    let answer = exchange(conn, &echo_frame(b"still here")).await;
    assert!(
        matches!(answer.and_then(|e| e.body), Some(Body::Reply(r)) if &r.payload[..] == b"still here"),
        "connection no longer served"
    );
}

#[tokio::test]
async fn bad_frames_fail_only_their_stream() {
    bounded(async {
        let ca = Ca::generate("test").unwrap();
        let server = node(&ca, 1, None);
        let addr = server.endpoint.local_addr();

        let identity = ca.issue_client("fuzzer", Validity::days(1)).unwrap();
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(
            identity.client_tls_config(ALPN).unwrap(),
        )
        .unwrap();
        let raw = quinn::Endpoint::client(localhost()).unwrap();
        let conn = raw
            .connect_with(
                quinn::ClientConfig::new(Arc::new(crypto)),
                addr,
                "test.shoal.internal",
            )
            .unwrap()
            .await
            .unwrap();
        assert_echo_works(&conn).await;

        let frame_bytes_max = server.endpoint.config().frame_bytes_max() as u32;
        let unknown_field = proto::Failure {
            code: 0,
            message: String::new(),
            details: Bytes::new(),
        };
        // An envelope whose only field is number 99, unknown to this version.
        let mut future_envelope = vec![0, 0, 0, 0];
        prost::encoding::message::encode(99, &unknown_field, &mut future_envelope);
        let len = (future_envelope.len() - 4) as u32;
        future_envelope[..4].copy_from_slice(&len.to_be_bytes());

        let mut truncated = echo_frame(b"cut short").to_vec();
        truncated.truncate(truncated.len() - 3);

        let cases: Vec<(&str, Vec<u8>, ErrorCode)> = vec![
            (
                "garbage",
                vec![0, 0, 0, 5, 0xff, 0xfe, 0xfd, 0xfc, 0xfb],
                ErrorCode::MalformedFrame,
            ),
            (
                "random bytes",
                b"GET / HTTP/1.1\r\n\r\n".to_vec(),
                ErrorCode::FrameTooLarge,
            ),
            ("truncated frame", truncated, ErrorCode::Truncated),
            ("truncated prefix", vec![0, 0], ErrorCode::Truncated),
            ("empty stream", vec![], ErrorCode::Truncated),
            (
                "oversize length",
                (frame_bytes_max + 1).to_be_bytes().to_vec(),
                ErrorCode::FrameTooLarge,
            ),
            ("no body", vec![0, 0, 0, 0], ErrorCode::UnknownFrame),
            (
                "unknown body field",
                future_envelope,
                ErrorCode::UnknownFrame,
            ),
            (
                "reply as a request",
                frame(Body::Reply(proto::Reply {
                    payload: Bytes::new(),
                }))
                .to_vec(),
                ErrorCode::UnexpectedFrame,
            ),
            (
                "one-way on a bidirectional stream",
                frame(Body::OneWay(proto::Request {
                    kind: ECHO.0,
                    payload: Bytes::new(),
                }))
                .to_vec(),
                ErrorCode::UnexpectedFrame,
            ),
            (
                "unknown kind",
                frame(Body::Request(proto::Request {
                    kind: 12345,
                    payload: Bytes::new(),
                }))
                .to_vec(),
                ErrorCode::UnknownKind,
            ),
        ];
        for (name, bytes, expected) in cases {
            info!("--- {name}");
            let answer = exchange(&conn, &bytes).await;
            assert_eq!(failure_code(answer), Some(expected), "{name}");
            assert_echo_works(&conn).await;
        }

        info!("--- oversize length followed by a flood: stopped, not buffered");
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(&(frame_bytes_max + 1).to_be_bytes())
            .await
            .unwrap();
        let flood = vec![0u8; 256 * 1024];
        let mut stopped = false;
        for _ in 0..64 {
            if send.write_all(&flood).await.is_err() {
                stopped = true;
                break;
            }
        }
        assert!(stopped, "server kept accepting an oversize frame");
        let answer = recv.read_to_end(1 << 16).await.unwrap();
        let mut buf = bytes::BytesMut::from(&answer[..]);
        let failure = decode_frame(&mut buf, 1 << 16).unwrap();
        assert_eq!(failure_code(failure), Some(ErrorCode::FrameTooLarge));
        assert_echo_works(&conn).await;

        info!("--- garbage on unidirectional streams is dropped");
        for bytes in [
            vec![1u8, 2, 3],
            echo_frame(b"request on a uni stream").to_vec(),
            frame(Body::OneWay(proto::Request {
                kind: 777,
                payload: Bytes::new(),
            }))
            .to_vec(),
        ] {
            let mut send = conn.open_uni().await.unwrap();
            let _ = send.write_all(&bytes).await;
            let _ = send.finish();
        }
        assert_echo_works(&conn).await;

        info!("--- a well-behaved client is served throughout");
        let other = node(&ca, 2, None);
        other.endpoint.add_peer(NodeId::new(1), addr);
        let reply = other
            .endpoint
            .request(NodeId::new(1), ECHO, Bytes::from_static(b"ok"))
            .await
            .unwrap();
        assert_eq!(&reply[..], b"ok");

        raw.close(0u32.into(), b"");
        other.endpoint.shutdown().await;
        server.endpoint.shutdown().await;
    })
    .await;
}

//! Clear errors for bad calls and bad data, and the node keeps serving.

use bytes::Bytes;
use shoal::entity::{EntityError, Visibility};
use shoal::{Node, NodeError};

use crate::fixtures::{Add, Counter, Get};

async fn node() -> Node {
    Node::builder()
        .register(Counter::new())
        .start()
        .await
        .unwrap()
}

fn encode<T: serde::Serialize>(v: &T) -> Bytes {
    Bytes::from(rmp_serde::to_vec_named(v).unwrap())
}

#[tokio::test]
async fn unknown_types_and_handlers() {
    let node = node().await;
    let err = node
        .call_raw("Nope", "x", "get", encode(&()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, EntityError::UnknownEntityType(ref t) if t == "Nope"),
        "{err}"
    );

    let err = node
        .call_raw("Counter", "x", "explode", encode(&()))
        .await
        .unwrap_err();
    assert!(matches!(err, EntityError::UnknownHandler { .. }), "{err}");
    assert!(err.to_string().contains("explode"));

    // A typed client of a type that was never registered.
    struct Unregistered;
    impl shoal::entity::Entity for Unregistered {
        const NAME: &'static str = "Unregistered";
        type State = ();
        fn handlers(_: &mut shoal::entity::Handlers<Self>) {}
    }
    struct Nothing;
    impl shoal::entity::Rpc<Unregistered> for Nothing {
        const NAME: &'static str = "nothing";
        type Params = ();
        type Output = ();
        async fn run(&self, _: &shoal::entity::RpcContext<'_, Unregistered>, (): ()) {}
    }
    let err = node
        .client::<Unregistered>("x")
        .call(Nothing, ())
        .await
        .unwrap_err();
    assert!(matches!(err, EntityError::UnknownEntityType(_)), "{err}");
    // No entity was activated by any of this.
    assert_eq!(node.active_entities(), 0);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn private_activities_and_methods_are_not_callable_by_clients() {
    let node = node().await;
    for handler in ["reset", "double"] {
        let err = node
            .call_raw("Counter", "x", handler, encode(&()))
            .await
            .unwrap_err();
        match err {
            EntityError::NotCallable { visibility, .. } => {
                assert_eq!(visibility, Visibility::Private)
            }
            other => panic!("{handler}: expected NotCallable, got {other}"),
        }
    }
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn undecodable_parameters_are_refused_and_the_entity_keeps_serving() {
    let node = node().await;
    let c = node.client::<Counter>("x");
    assert_eq!(c.call(Add, 4).await.unwrap(), Ok(4));
    for garbage in [&b""[..], b"\xc1", b"\xa5hello", &[0xff; 64]] {
        let err = node
            .call_raw("Counter", "x", "add", Bytes::copy_from_slice(garbage))
            .await
            .unwrap_err();
        assert!(matches!(err, EntityError::Decode { .. }), "{err}");
    }
    // Typed correctly through the raw path, it works.
    let reply = node
        .call_raw("Counter", "x", "add", encode(&1_i64))
        .await
        .unwrap();
    let reply: Result<i64, String> = rmp_serde::from_slice(&reply).unwrap();
    assert_eq!(reply, Ok(5));
    assert_eq!(c.call(Get, ()).await.unwrap(), 5);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn invalid_entity_ids_are_refused() {
    let node = node().await;
    let err = node.client::<Counter>("").call(Get, ()).await.unwrap_err();
    assert!(matches!(err, EntityError::InvalidEntityId(_)), "{err}");
    let err = node
        .client::<Counter>("x".repeat(10_000))
        .call(Get, ())
        .await
        .unwrap_err();
    assert!(matches!(err, EntityError::InvalidEntityId(_)), "{err}");
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_corrupt_data_file_is_a_clear_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(shoal::DATA_FILE_NAME);
    std::fs::write(
        &path,
        b"this is not a redb file, just some text that got here",
    )
    .unwrap();
    let err = Node::builder()
        .data_dir(dir.path())
        .register(Counter::new())
        .start()
        .await
        .unwrap_err();
    assert!(matches!(err, NodeError::Storage(_)), "{err}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn duplicate_registrations_are_refused() {
    let err = Node::builder()
        .register(Counter::new())
        .register(Counter::new())
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(err, NodeError::DuplicateEntityType("Counter")),
        "{err}"
    );
}

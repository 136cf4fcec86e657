//! Lifecycle events of control-plane changes against the real embedded store: each change appends
//! its event (with the actor around the call) before it returns, and failed changes append nothing.

use std::io::Write as _;
use std::sync::Arc;

use wisp_control::lifecycle::{EventType, LifecycleEvent, lifecycle_topic, with_actor};
use wisp_control::{
    ControlOptions, ControlPlane, CreateFunction, RuntimeCatalog, UpdateConfiguration,
};
use wisp_store::{EmbeddedOptions, EmbeddedStore, Log};
use wisp_types::*;

fn bootstrap_zip() -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().unix_permissions(0o755);
    writer.start_file("bootstrap", options).unwrap();
    writer.write_all(b"#!/bin/sh\n").unwrap();
    writer.finish().unwrap().into_inner()
}

async fn read_events(store: &Arc<EmbeddedStore>, account: &AccountId) -> Vec<LifecycleEvent> {
    store
        .read(&lifecycle_topic(&account.0), 1, 1000)
        .await
        .unwrap()
        .iter()
        .map(|record| LifecycleEvent::decode(&record.payload).unwrap())
        .collect()
}

#[tokio::test]
async fn changes_append_their_events_before_returning() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(EmbeddedOptions::new(dir.path().join("store")))
        .await
        .unwrap();
    let control = ControlPlane::new(
        store.clone(),
        store.clone(),
        Arc::new(RuntimeCatalog::default()),
        ControlOptions::default(),
    );
    control.record_lifecycle_to(store.clone());
    let account = AccountId("123456789012".into());

    let created = with_actor(
        "AKIATEST".into(),
        control.create_function(
            &account,
            CreateFunction {
                name: "f".into(),
                runtime: "provided.al2023".into(),
                zip: bootstrap_zip(),
                ..Default::default()
            },
        ),
    )
    .await
    .unwrap();
    control
        .update_function_configuration(
            &account,
            "f",
            UpdateConfiguration {
                timeout: Some(0),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    control
        .update_function_configuration(
            &account,
            "f",
            UpdateConfiguration {
                timeout: Some(9),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    control.delete_function(&account, "f", None).await.unwrap();

    let events = read_events(&store, &account).await;
    let kinds: Vec<_> = events.iter().map(|event| event.kind).collect();
    assert_eq!(
        kinds,
        [
            EventType::FunctionCreated,
            EventType::FunctionConfigurationUpdated,
            EventType::FunctionDeleted
        ]
    );
    assert!(
        events
            .iter()
            .all(|event| event.resource == created.function_arn)
    );
    assert_eq!(events[0].actor, "AKIATEST");
    assert_eq!(events[1].actor, "wisp");
    assert_eq!(events[0].before, None);
    assert_eq!(events[1].before.as_ref().unwrap()["Timeout"], 3);
    assert_eq!(events[1].after.as_ref().unwrap()["Timeout"], 9);
    assert_eq!(events[2].after, None);
    assert!(
        read_events(&store, &AccountId("210987654321".into()))
            .await
            .is_empty()
    );
}

//! Receipt keys and switches in the control plane, against the real embedded store: the first
//! start makes a key and later starts keep it, rotation keeps old public keys published, only the
//! root account rotates, and the switches reach the cached resolution.

use std::io::Write as _;
use std::sync::Arc;

use wisp_control::receipts::ReceiptsConfig;
use wisp_control::{ControlOptions, ControlPlane, CreateFunction, RuntimeCatalog};
use wisp_store::{EmbeddedOptions, EmbeddedStore};
use wisp_types::receipt::{ReceiptBody, decode_public_key};
use wisp_types::*;

async fn control_plane(dir: &std::path::Path) -> ControlPlane {
    let store = EmbeddedStore::open(EmbeddedOptions::new(dir.join("store")))
        .await
        .unwrap();
    ControlPlane::new(
        store.clone(),
        store,
        Arc::new(RuntimeCatalog::default()),
        ControlOptions::default(),
    )
}

fn root() -> AccountId {
    AccountId("111111111111".into())
}

fn other() -> AccountId {
    AccountId("222222222222".into())
}

fn function(name: &str) -> CreateFunction {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().unix_permissions(0o755);
    writer.start_file("bootstrap", options).unwrap();
    writer.write_all(b"#!/bin/sh\n").unwrap();
    CreateFunction {
        name: name.into(),
        runtime: "provided.al2023".into(),
        zip: writer.finish().unwrap().into_inner(),
        ..Default::default()
    }
}

fn body() -> ReceiptBody {
    ReceiptBody {
        account: root().0,
        function_arn: "arn:aws:lambda:us-east-1:111111111111:function:f".into(),
        version: "$LATEST".into(),
        code_sha256: "00".repeat(32),
        request_id: "r".into(),
        status: "succeeded".into(),
        input_sha256: "11".repeat(32),
        output_sha256: "22".repeat(32),
        started_ms: 1,
        ended_ms: 2,
    }
}

#[tokio::test]
async fn keys_survive_restarts_and_rotation_keeps_old_public_keys_published() {
    let dir = tempfile::tempdir().unwrap();
    let (first_id, old_receipt) = {
        let control = control_plane(dir.path()).await;
        assert!(control.receipt_key().is_none());
        let first_id = control.open_receipt_keys(&root()).await.unwrap();
        let key = control.receipt_key().unwrap();
        assert_eq!(key.key_id, first_id);
        (first_id, body().sign(&key.key).unwrap())
    };
    let control = control_plane(dir.path()).await;
    assert_eq!(control.open_receipt_keys(&root()).await.unwrap(), first_id);

    let refused = control.rotate_receipt_key(&other()).await.unwrap_err();
    assert_eq!(refused.code, ErrorCode::AccessDenied);
    assert!(
        refused.message.contains("222222222222"),
        "{}",
        refused.message
    );

    let rotated = control.rotate_receipt_key(&root()).await.unwrap();
    assert_ne!(rotated.key_id, first_id);
    assert_eq!(control.receipt_key().unwrap().key_id, rotated.key_id);
    let keys = control.receipt_public_keys().await.unwrap();
    assert_eq!(keys.len(), 2);
    let old = keys.iter().find(|key| key.key_id == first_id).unwrap();
    assert!(old.retired.is_some());
    assert!(
        keys.iter()
            .any(|key| key.key_id == rotated.key_id && key.retired.is_none())
    );
    // The receipt signed before the rotation still verifies with the published old key.
    old_receipt
        .verify_with(&decode_public_key(&old.key_id, &old.public_key).unwrap())
        .unwrap();

    // After a restart the rotated key signs.
    drop(control);
    let control = control_plane(dir.path()).await;
    assert_eq!(
        control.open_receipt_keys(&root()).await.unwrap(),
        rotated.key_id
    );
}

#[tokio::test]
async fn switches_reach_the_cached_resolution_and_stay_in_their_account() {
    let dir = tempfile::tempdir().unwrap();
    let control = control_plane(dir.path()).await;
    control
        .create_function(&root(), function("f"))
        .await
        .unwrap();
    control
        .create_function(&other(), function("f"))
        .await
        .unwrap();
    let reference = FunctionRef::parse("f").unwrap();
    let on = ReceiptsConfig { enabled: true };
    let off = ReceiptsConfig { enabled: false };

    assert!(
        !control
            .resolve(&root(), &reference, None)
            .await
            .unwrap()
            .receipts
    );
    control
        .put_function_receipts(&root(), "f", on)
        .await
        .unwrap();
    assert!(
        control
            .resolve(&root(), &reference, None)
            .await
            .unwrap()
            .receipts
    );
    assert!(
        !control
            .resolve(&other(), &reference, None)
            .await
            .unwrap()
            .receipts
    );
    assert_eq!(control.function_receipts(&other(), "f").await.unwrap(), off);

    control
        .put_function_receipts(&root(), "f", off)
        .await
        .unwrap();
    assert!(
        !control
            .resolve(&root(), &reference, None)
            .await
            .unwrap()
            .receipts
    );
    control.put_account_receipts(&other(), on).await.unwrap();
    assert!(
        control
            .resolve(&other(), &reference, None)
            .await
            .unwrap()
            .receipts
    );
    assert!(
        !control
            .resolve(&root(), &reference, None)
            .await
            .unwrap()
            .receipts
    );
    assert_eq!(control.account_receipts(&root()).await.unwrap(), off);

    // A function made again after a delete starts with receipts off.
    control
        .put_function_receipts(&root(), "f", on)
        .await
        .unwrap();
    control.delete_function(&root(), "f", None).await.unwrap();
    control
        .create_function(&root(), function("f"))
        .await
        .unwrap();
    assert_eq!(control.function_receipts(&root(), "f").await.unwrap(), off);

    let missing = control
        .put_function_receipts(&root(), "nothere", on)
        .await
        .unwrap_err();
    assert_eq!(missing.code, ErrorCode::ResourceNotFound);
}

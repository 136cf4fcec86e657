//! The control plane against the real embedded store: Lambda's rules for functions, versions and
//! aliases, and the resolution the invoke path relies on.

use std::io::Write as _;
use std::sync::Arc;

use wisp_control::{
    AliasInput, ControlOptions, ControlPlane, CreateFunction, RuntimeCatalog, UpdateConfiguration,
};
use wisp_store::{EmbeddedOptions, EmbeddedStore};
use wisp_types::*;

fn zip_of(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, bytes, mode) in files {
        let options = zip::write::SimpleFileOptions::default().unix_permissions(*mode);
        writer.start_file(*name, options).unwrap();
        writer.write_all(bytes).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

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

fn account() -> AccountId {
    AccountId("123456789012".into())
}

fn provided(name: &str, body: &[u8]) -> CreateFunction {
    CreateFunction {
        name: name.into(),
        runtime: "provided.al2023".into(),
        zip: zip_of(&[("bootstrap", body, 0o755)]),
        ..Default::default()
    }
}

#[tokio::test]
async fn published_versions_are_immutable_and_numbers_are_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    let control = control_plane(dir.path()).await;
    control
        .create_function(&account(), provided("f", b"#!/bin/sh\n"))
        .await
        .unwrap();

    let first = control
        .publish_version(&account(), "f", None, None)
        .await
        .unwrap();
    assert_eq!(first.version, "1");
    // Nothing changed since version 1: publishing again returns it, as Lambda does.
    let again = control
        .publish_version(&account(), "f", None, None)
        .await
        .unwrap();
    assert_eq!(again.version, "1");

    control
        .update_function_code(
            &account(),
            "f",
            zip_of(&[("bootstrap", b"#!/bin/sh\necho 2\n", 0o755)]),
            false,
            None,
        )
        .await
        .unwrap();
    let second = control
        .publish_version(&account(), "f", None, None)
        .await
        .unwrap();
    assert_eq!(second.version, "2");
    assert_ne!(first.code_sha256, second.code_sha256);

    // Version 1 still has its own code and configuration.
    let (version_one, _) = control
        .get_function(&account(), "f", Some(&Qualifier::Version(1)))
        .await
        .unwrap();
    assert_eq!(version_one.config.code_sha256, first.code_sha256);

    control
        .delete_function(&account(), "f", Some(&Qualifier::Version(2)))
        .await
        .unwrap();
    control
        .update_function_configuration(
            &account(),
            "f",
            UpdateConfiguration {
                timeout: Some(9),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let third = control
        .publish_version(&account(), "f", None, None)
        .await
        .unwrap();
    assert_eq!(
        third.version, "3",
        "a deleted version's number is not given out again"
    );
}

#[tokio::test]
async fn weighted_alias_resolves_to_both_versions_and_follows_changes() {
    let dir = tempfile::tempdir().unwrap();
    let control = control_plane(dir.path()).await;
    control
        .create_function(&account(), provided("g", b"one"))
        .await
        .unwrap();
    control
        .publish_version(&account(), "g", None, None)
        .await
        .unwrap();
    control
        .update_function_code(
            &account(),
            "g",
            zip_of(&[("bootstrap", b"two", 0o755)]),
            true,
            None,
        )
        .await
        .unwrap();

    let routing = AliasRoutingConfiguration {
        additional_version_weights: [("2".to_string(), 0.25)].into(),
    };
    control
        .create_alias(
            &account(),
            "g",
            "live",
            AliasInput {
                function_version: Some("1".into()),
                routing: Some(routing),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let reference = FunctionRef::parse("g:live").unwrap();
    let resolved = control.resolve(&account(), &reference, None).await.unwrap();
    assert_eq!(resolved.pick(0.1).config.version, "2");
    assert_eq!(resolved.pick(0.5).config.version, "1");
    assert!(resolved.invoked_arn.ends_with(":function:g:live"));

    // Moving the alias is seen by the next resolution (the cache is dropped on change).
    control
        .update_alias(
            &account(),
            "g",
            "live",
            AliasInput {
                function_version: Some("2".into()),
                routing: Some(AliasRoutingConfiguration::default()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let resolved = control.resolve(&account(), &reference, None).await.unwrap();
    assert_eq!(resolved.pick(0.1).config.version, "2");
    assert!(resolved.additional.is_none());
}

#[tokio::test]
async fn lambda_rules_are_enforced_with_lambda_error_codes() {
    let dir = tempfile::tempdir().unwrap();
    let control = control_plane(dir.path()).await;
    control
        .create_function(&account(), provided("h", b"x"))
        .await
        .unwrap();
    let cases: Vec<(&str, ErrorCode, Result<FunctionConfiguration, ApiError>)> = vec![
        (
            "duplicate",
            ErrorCode::ResourceConflict,
            control
                .create_function(&account(), provided("h", b"x"))
                .await,
        ),
        (
            "bad name",
            ErrorCode::InvalidParameterValue,
            control
                .create_function(&account(), provided("a b", b"x"))
                .await,
        ),
        (
            "not executable",
            ErrorCode::InvalidParameterValue,
            control
                .create_function(
                    &account(),
                    CreateFunction {
                        zip: zip_of(&[("bootstrap", b"x", 0o644)]),
                        ..provided("n", b"x")
                    },
                )
                .await,
        ),
        (
            "unknown runtime",
            ErrorCode::InvalidParameterValue,
            control
                .create_function(
                    &account(),
                    CreateFunction {
                        runtime: "cobol85".into(),
                        ..provided("r", b"x")
                    },
                )
                .await,
        ),
        (
            "memory",
            ErrorCode::InvalidParameterValue,
            control
                .update_function_configuration(
                    &account(),
                    "h",
                    UpdateConfiguration {
                        memory_size: Some(64),
                        ..Default::default()
                    },
                )
                .await,
        ),
        (
            "stale revision",
            ErrorCode::PreconditionFailed,
            control
                .update_function_configuration(
                    &account(),
                    "h",
                    UpdateConfiguration {
                        revision_id: Some("stale".into()),
                        ..Default::default()
                    },
                )
                .await,
        ),
        (
            "missing function",
            ErrorCode::ResourceNotFound,
            control
                .publish_version(&account(), "nope", None, None)
                .await,
        ),
    ];
    for (what, code, result) in cases {
        match result {
            Err(error) => assert_eq!(error.code, code, "{what}: {error}"),
            Ok(_) => panic!("{what}: accepted"),
        }
    }
    // An alias pins its version: the version cannot be deleted under it.
    control
        .publish_version(&account(), "h", None, None)
        .await
        .unwrap();
    control
        .create_alias(
            &account(),
            "h",
            "prod",
            AliasInput {
                function_version: Some("1".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let error = control
        .delete_function(&account(), "h", Some(&Qualifier::Version(1)))
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::ResourceConflict);
}

#[tokio::test]
async fn functions_survive_reopening_the_store() {
    let dir = tempfile::tempdir().unwrap();
    {
        let control = control_plane(dir.path()).await;
        control
            .create_function(&account(), provided("kept", b"x"))
            .await
            .unwrap();
        control
            .publish_version(&account(), "kept", None, None)
            .await
            .unwrap();
    }
    let control = control_plane(dir.path()).await;
    let (versions, _) = control
        .list_versions(&account(), "kept", None, 50)
        .await
        .unwrap();
    let numbers: Vec<_> = versions
        .iter()
        .map(|config| config.version.as_str())
        .collect();
    assert_eq!(numbers, ["$LATEST", "1"]);
}

fn layer(name: &str, text: &str) -> wisp_control::layers::PublishLayer {
    wisp_control::layers::PublishLayer {
        name: name.into(),
        zip: zip_of(&[("python/shared.py", text.as_bytes(), 0o644)]),
        ..Default::default()
    }
}

#[tokio::test]
async fn layers_are_versioned_checked_and_kept_by_published_versions() {
    let dir = tempfile::tempdir().unwrap();
    let control = control_plane(dir.path()).await;
    let first = control
        .publish_layer_version(&account(), layer("lib", "A = 1"))
        .await
        .unwrap();
    let second = control
        .publish_layer_version(&account(), layer("lib", "A = 2"))
        .await
        .unwrap();
    assert_eq!((first.version, second.version), (1, 2));
    assert_eq!(
        second.layer_version_arn,
        "arn:aws:lambda:us-east-1:123456789012:layer:lib:2"
    );
    control
        .delete_layer_version(&account(), "lib", 2)
        .await
        .unwrap();
    let third = control
        .publish_layer_version(&account(), layer("lib", "A = 3"))
        .await
        .unwrap();
    assert_eq!(third.version, 3, "numbers are never reused");

    let missing = "arn:aws:lambda:us-east-1:123456789012:layer:lib:2".to_string();
    let error = control
        .create_function(
            &account(),
            CreateFunction {
                layers: vec![missing.clone()],
                ..provided("refused", b"x")
            },
        )
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::InvalidParameterValue);
    assert!(error.message.contains(&missing), "{}", error.message);
    let six: Vec<String> = (0..6)
        .map(|i| format!("arn:aws:lambda:us-east-1:123456789012:layer:l{i}:1"))
        .collect();
    let error = control
        .create_function(
            &account(),
            CreateFunction {
                layers: six,
                ..provided("too-many", b"x")
            },
        )
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::InvalidParameterValue);

    let config = control
        .create_function(
            &account(),
            CreateFunction {
                layers: vec![first.layer_version_arn.clone()],
                ..provided("f", b"#!/bin/sh\n")
            },
        )
        .await
        .unwrap();
    assert_eq!(config.layers[0].arn, first.layer_version_arn);
    control
        .publish_version(&account(), "f", None, None)
        .await
        .unwrap();
    control
        .update_function_configuration(
            &account(),
            "f",
            UpdateConfiguration {
                layers: Some(vec![third.layer_version_arn.clone()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let (latest, _) = control.get_function(&account(), "f", None).await.unwrap();
    assert_eq!(latest.layer_digests, vec![third.digest.clone()]);
    let (published, _) = control
        .get_function(&account(), "f", Some(&Qualifier::Version(1)))
        .await
        .unwrap();
    assert_eq!(published.layer_digests, vec![first.digest.clone()]);
    assert_eq!(published.config.layers[0].arn, first.layer_version_arn);
}

#[tokio::test]
async fn code_and_layers_together_must_fit_the_unzipped_limit() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(EmbeddedOptions::new(dir.path().join("store")))
        .await
        .unwrap();
    let control = ControlPlane::new(
        store.clone(),
        store,
        Arc::new(RuntimeCatalog::default()),
        ControlOptions {
            max_unzipped_bytes: 1000,
            ..Default::default()
        },
    );
    let big = |name: &str| wisp_control::layers::PublishLayer {
        name: name.into(),
        zip: zip_of(&[("data", &[b'x'; 600], 0o644)]),
        ..Default::default()
    };
    let first = control
        .publish_layer_version(&account(), big("a"))
        .await
        .unwrap();
    let second = control
        .publish_layer_version(&account(), big("b"))
        .await
        .unwrap();
    control
        .create_function(
            &account(),
            CreateFunction {
                layers: vec![first.layer_version_arn.clone()],
                ..provided("f", b"#!/bin/sh\n")
            },
        )
        .await
        .unwrap();
    let error = control
        .update_function_configuration(
            &account(),
            "f",
            UpdateConfiguration {
                layers: Some(vec![first.layer_version_arn, second.layer_version_arn]),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::InvalidParameterValue);
    assert!(
        error.message.contains("the limit is 1000"),
        "{}",
        error.message
    );
    let error = control
        .update_function_code(
            &account(),
            "f",
            zip_of(&[("bootstrap", &[b'#'; 500], 0o755)]),
            false,
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::InvalidParameterValue);
}

const ORDERS_PROTO: &str = r#"
    syntax = "proto3";
    package orders.v1;
    message PlaceRequest { string customer_id = 1; }
    message PlaceReply { int64 total = 1; }
    message CancelRequest { string order_id = 1; }
    message CancelReply { bool cancelled = 1; }
    service Orders {
      rpc Place(PlaceRequest) returns (PlaceReply);
      rpc Cancel(CancelRequest) returns (CancelReply);
    }
"#;

fn orders_message(name: &str) -> TypeSpec {
    TypeSpec::Protobuf(ProtobufType {
        files: [(
            "orders/v1/orders.proto".to_string(),
            ORDERS_PROTO.to_string(),
        )]
        .into(),
        message: format!("orders.v1.{name}"),
        encoding: ProtobufEncoding::Json,
    })
}

fn grpc_route(name: &str, method: &str, input: &str, output: &str) -> Route {
    serde_json::from_value(serde_json::json!({
        "Name": name,
        "Match": {"GrpcMethod": format!("orders.v1.Orders/{method}")},
        "Handler": format!("app.{name}"),
        "Signature": {"Input": orders_message(input), "Output": orders_message(output)},
    }))
    .unwrap()
}

#[tokio::test]
async fn routes_bind_grpc_methods_and_the_index_follows_them() {
    let dir = tempfile::tempdir().unwrap();
    let control = control_plane(dir.path()).await;
    for name in ["orders", "placer"] {
        control
            .create_function(&account(), provided(name, b"#!/bin/sh\n"))
            .await
            .unwrap();
    }
    let (place, cancel) = ("orders.v1.Orders/Place", "orders.v1.Orders/Cancel");
    let both = vec![
        grpc_route("place", "Place", "PlaceRequest", "PlaceReply"),
        grpc_route("cancel", "Cancel", "CancelRequest", "CancelReply"),
    ];
    control
        .put_routes(&account(), "orders", both.clone(), None)
        .await
        .unwrap();
    for method in [place, cancel] {
        assert_eq!(
            control.grpc_index(&account(), method).await.unwrap(),
            Some("orders".to_string())
        );
        assert!(
            control
                .grpc_bound(&account(), "orders", method)
                .await
                .unwrap()
                .is_some()
        );
    }
    assert_eq!(control.grpc_bindings(&account()).await.unwrap().len(), 2);

    // Another function cannot take a method a route serves, by its signature or by a route.
    let signature = Signature {
        input: Some(orders_message("PlaceRequest")),
        output: Some(orders_message("PlaceReply")),
        grpc_method: Some(place.to_string()),
    };
    let taken = control
        .put_signature(&account(), "placer", signature.clone(), None)
        .await
        .unwrap_err();
    assert_eq!(taken.code, ErrorCode::ResourceConflict);
    assert!(
        taken.message.contains("function orders"),
        "{}",
        taken.message
    );
    let taken = control
        .put_routes(&account(), "placer", both[..1].to_vec(), None)
        .await
        .unwrap_err();
    assert_eq!(taken.code, ErrorCode::ResourceConflict);

    // Nor can the function bind one method twice, by its signature and a route.
    let twice = control
        .put_signature(&account(), "orders", signature.clone(), None)
        .await
        .unwrap_err();
    assert_eq!(twice.code, ErrorCode::ResourceConflict);
    assert!(
        twice.message.contains("route \"place\""),
        "{}",
        twice.message
    );

    // Dropping a route frees its method, which another function may then take.
    control
        .put_routes(&account(), "orders", both[1..].to_vec(), None)
        .await
        .unwrap();
    assert_eq!(control.grpc_index(&account(), place).await.unwrap(), None);
    assert!(
        control
            .grpc_bound(&account(), "orders", place)
            .await
            .unwrap()
            .is_none()
    );
    control
        .put_signature(&account(), "placer", signature, None)
        .await
        .unwrap();
    assert_eq!(
        control.grpc_index(&account(), place).await.unwrap(),
        Some("placer".to_string())
    );
    assert_eq!(
        control.grpc_index(&account(), cancel).await.unwrap(),
        Some("orders".to_string())
    );
}

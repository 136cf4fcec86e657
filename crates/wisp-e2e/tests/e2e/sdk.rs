//! The Lambda API through aws-sdk-rust, with the Rust `lambda_runtime` function `rust-echo`.

use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{FunctionCode, LogType, Runtime};
use base64::Engine as _;
use serde_json::json;

use crate::support::{ROLE, TestServer, create_rust_echo, json_payload, rust_echo_zip};

#[tokio::test]
async fn invoke_echoes_the_event() {
    let wisp = TestServer::start();
    let client = wisp.client().await;
    create_rust_echo(&client, "echo").await;

    let event = json!({"hello": "wisp", "n": 42});
    let output = client
        .invoke()
        .function_name("echo")
        .payload(Blob::new(event.to_string()))
        .send()
        .await
        .expect("invoke");

    assert_eq!(output.status_code(), 200);
    assert_eq!(output.function_error(), None);
    assert_eq!(output.executed_version(), Some("$LATEST"));
    let payload = json_payload(&output);
    assert_eq!(payload["echo"], event, "{payload}");
    assert_eq!(payload["function"], "echo", "{payload}");
    assert!(
        payload["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "{payload}"
    );
}

#[tokio::test]
async fn function_error_sets_function_error_and_error_type() {
    let wisp = TestServer::start();
    let client = wisp.client().await;
    create_rust_echo(&client, "failing").await;

    let output = client
        .invoke()
        .function_name("failing")
        .payload(Blob::new(json!({"fail": "x"}).to_string()))
        .send()
        .await
        .expect("a function error is a successful invoke");

    assert_eq!(output.status_code(), 200);
    assert_eq!(output.function_error(), Some("Unhandled"));
    let payload = json_payload(&output);
    assert_eq!(payload["errorType"], "EchoFailure", "{payload}");
    assert_eq!(payload["errorMessage"], "x", "{payload}");
}

#[tokio::test]
async fn log_type_tail_returns_the_report_line() {
    let wisp = TestServer::start();
    let client = wisp.client().await;
    create_rust_echo(&client, "logged").await;

    let output = client
        .invoke()
        .function_name("logged")
        .payload(Blob::new("{}"))
        .log_type(LogType::Tail)
        .send()
        .await
        .expect("invoke");

    let encoded = output.log_result().expect("LogResult with LogType Tail");
    let log = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("LogResult is base64");
    let log = String::from_utf8_lossy(&log);
    assert!(log.contains("REPORT RequestId:"), "log tail: {log}");
}

#[tokio::test]
async fn alias_invoke_reports_the_published_version() {
    let wisp = TestServer::start();
    let client = wisp.client().await;
    create_rust_echo(&client, "versioned").await;

    let published = client
        .publish_version()
        .function_name("versioned")
        .send()
        .await
        .expect("publish_version");
    assert_eq!(published.version(), Some("1"));
    let alias = client
        .create_alias()
        .function_name("versioned")
        .name("live")
        .function_version("1")
        .send()
        .await
        .expect("create_alias");
    assert_eq!(alias.function_version(), Some("1"));

    let output = client
        .invoke()
        .function_name("versioned")
        .qualifier("live")
        .payload(Blob::new(json!({"via": "alias"}).to_string()))
        .send()
        .await
        .expect("invoke alias");
    assert_eq!(output.executed_version(), Some("1"));
    assert_eq!(json_payload(&output)["echo"], json!({"via": "alias"}));
}

#[tokio::test]
async fn get_function_and_list_functions_describe_the_function() {
    let wisp = TestServer::start();
    let client = wisp.client().await;
    create_rust_echo(&client, "described").await;

    let function = client
        .get_function()
        .function_name("described")
        .send()
        .await
        .expect("get_function");
    let configuration = function.configuration().expect("Configuration");
    assert_eq!(configuration.function_name(), Some("described"));
    assert_eq!(configuration.runtime(), Some(&Runtime::Providedal2023));
    assert_eq!(configuration.handler(), Some("bootstrap"));
    assert_eq!(configuration.memory_size(), Some(128));
    assert_eq!(configuration.timeout(), Some(10));
    assert_eq!(configuration.version(), Some("$LATEST"));
    assert!(
        configuration
            .function_arn()
            .is_some_and(|arn| arn.starts_with("arn:aws:lambda:us-east-1:")
                && arn.ends_with(":function:described")),
        "{configuration:?}"
    );
    assert!(
        configuration
            .code_sha256()
            .is_some_and(|sha| !sha.is_empty()),
        "{configuration:?}"
    );
    assert!(function.code().is_some(), "{function:?}");

    let listed = client
        .list_functions()
        .send()
        .await
        .expect("list_functions");
    let names: Vec<&str> = listed
        .functions()
        .iter()
        .filter_map(|function| function.function_name())
        .collect();
    assert_eq!(names, ["described"]);
}

#[tokio::test]
async fn unknown_function_is_resource_not_found() {
    let wisp = TestServer::start();
    let client = wisp.client().await;

    let error = client
        .get_function()
        .function_name("no-such-function")
        .send()
        .await
        .expect_err("unknown function");
    let status = error
        .raw_response()
        .map(|response| response.status().as_u16());
    let error = error.into_service_error();
    assert!(error.is_resource_not_found_exception(), "{error:?}");
    assert_eq!(status, Some(404));
}

#[tokio::test]
async fn invalid_memory_size_is_invalid_parameter_value() {
    let wisp = TestServer::start();
    let client = wisp.client().await;

    let error = client
        .create_function()
        .function_name("too-small")
        .runtime(Runtime::Providedal2023)
        .role(ROLE)
        .handler("bootstrap")
        .memory_size(64)
        .code(
            FunctionCode::builder()
                .zip_file(Blob::new(rust_echo_zip()))
                .build(),
        )
        .send()
        .await
        .expect_err("64 MB is below Lambda's minimum");
    let status = error
        .raw_response()
        .map(|response| response.status().as_u16());
    let error = error.into_service_error();
    assert!(error.is_invalid_parameter_value_exception(), "{error:?}");
    assert_eq!(status, Some(400));
}

#[tokio::test]
async fn payload_over_6_mb_is_request_too_large() {
    let wisp = TestServer::start();
    let client = wisp.client().await;
    create_rust_echo(&client, "large").await;

    let payload = json!({ "data": "x".repeat(6 * 1024 * 1024) }).to_string();
    let error = client
        .invoke()
        .function_name("large")
        .payload(Blob::new(payload))
        .send()
        .await
        .expect_err("payload over 6 MB");
    let status = error
        .raw_response()
        .map(|response| response.status().as_u16());
    let error = error.into_service_error();
    assert!(error.is_request_too_large_exception(), "{error:?}");
    assert_eq!(status, Some(413));
}

#[tokio::test]
async fn wrong_secret_key_is_rejected_with_403() {
    let wisp = TestServer::start();
    let credentials = std::fs::read_to_string(wisp.data_dir.join("credentials"))
        .expect("the server writes <data>/credentials");
    let access_key_id = credentials
        .lines()
        .find_map(|line| {
            let (key, value) = line.split_once('=')?;
            (key.trim() == "aws_access_key_id").then(|| value.trim().to_owned())
        })
        .expect("aws_access_key_id in the credentials file");
    let client = wisp
        .server
        .client_with_keys(&access_key_id, "wrong-secret-wrong-secret-wrong-secret00");

    let error = client
        .list_functions()
        .send()
        .await
        .expect_err("a wrong secret key must be rejected");
    let status = error
        .raw_response()
        .map(|response| response.status().as_u16());
    assert_eq!(status, Some(403), "{error:?}");
}

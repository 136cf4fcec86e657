//! Async invocations through aws-sdk-rust: an `Event` invoke is accepted with 202, and event invoke
//! configurations round-trip and are validated as Lambda does.

use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{DestinationConfig, InvocationType, OnFailure, Runtime};

use crate::support::{TestServer, create_function, zip_files};

const HANDLER_PY: &str = "def handler(event, context):\n    return event\n";

#[tokio::test]
async fn event_invokes_are_accepted_and_event_invoke_configs_round_trip() {
    let wisp = TestServer::start();
    let client = wisp.client().await;
    for name in ["events", "events-sink"] {
        let zip = zip_files(&[("handler.py", 0o644, HANDLER_PY.as_bytes())]);
        create_function(&client, name, Runtime::Python312, "handler.handler", zip).await;
    }

    let accepted = client
        .invoke()
        .function_name("events")
        .invocation_type(InvocationType::Event)
        .payload(Blob::new(r#"{"from":"rust"}"#))
        .send()
        .await
        .expect("event invoke");
    assert_eq!(accepted.status_code(), 202);
    assert!(
        accepted
            .payload()
            .is_none_or(|payload| payload.as_ref().is_empty())
    );

    let too_large = client
        .invoke()
        .function_name("events")
        .invocation_type(InvocationType::Event)
        .payload(Blob::new(format!("\"{}\"", "x".repeat(1024 * 1024))))
        .send()
        .await
        .expect_err("an event over 1 MB is refused");
    assert!(
        too_large
            .as_service_error()
            .is_some_and(|error| error.is_request_too_large_exception()),
        "{too_large:?}"
    );

    let sink_arn = client
        .get_function()
        .function_name("events-sink")
        .send()
        .await
        .expect("get sink")
        .configuration()
        .and_then(|configuration| configuration.function_arn())
        .expect("sink arn")
        .to_string();
    let put = client
        .put_function_event_invoke_config()
        .function_name("events")
        .maximum_retry_attempts(1)
        .maximum_event_age_in_seconds(300)
        .destination_config(
            DestinationConfig::builder()
                .on_failure(OnFailure::builder().destination(&sink_arn).build())
                .build(),
        )
        .send()
        .await
        .expect("put event invoke config");
    assert_eq!(put.maximum_retry_attempts(), Some(1));
    let got = client
        .get_function_event_invoke_config()
        .function_name("events")
        .send()
        .await
        .expect("get event invoke config");
    assert_eq!(got.maximum_event_age_in_seconds(), Some(300));
    assert_eq!(
        got.destination_config()
            .and_then(|config| config.on_failure())
            .and_then(|failure| failure.destination()),
        Some(sink_arn.as_str())
    );

    let refused = client
        .put_function_event_invoke_config()
        .function_name("events")
        .maximum_retry_attempts(3)
        .send()
        .await
        .expect_err("three retries are more than Lambda allows");
    assert!(
        refused
            .as_service_error()
            .is_some_and(|error| error.is_invalid_parameter_value_exception()),
        "{refused:?}"
    );
}

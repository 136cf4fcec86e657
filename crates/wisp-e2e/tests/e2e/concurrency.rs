//! Reserved concurrency: invokes beyond it are throttled with AWS's 429.

use std::time::Duration;

use aws_sdk_lambda::primitives::Blob;
use serde_json::json;

use crate::support::{TestServer, create_rust_echo};

#[tokio::test]
async fn reserved_concurrency_one_throttles_a_second_concurrent_invoke() {
    let wisp = TestServer::start();
    let client = wisp.client().await;
    create_rust_echo(&client, "single").await;
    client
        .put_function_concurrency()
        .function_name("single")
        .reserved_concurrent_executions(1)
        .send()
        .await
        .expect("put_function_concurrency");
    // Warm one instance, so the slow invoke below does not spend its time on a cold start.
    client
        .invoke()
        .function_name("single")
        .payload(Blob::new("{}"))
        .send()
        .await
        .expect("warm-up invoke");

    let slow = || {
        client
            .invoke()
            .function_name("single")
            .payload(Blob::new(json!({"sleep_ms": 1500}).to_string()))
            .send()
    };
    let (first, second) = tokio::join!(slow(), async {
        // Start second, while the first is surely running.
        tokio::time::sleep(Duration::from_millis(300)).await;
        slow().await
    });

    let mut succeeded = 0;
    let mut throttled = 0;
    for outcome in [first, second] {
        match outcome {
            Ok(output) => {
                assert_eq!(output.function_error(), None, "{output:?}");
                succeeded += 1;
            }
            Err(error) => {
                let status = error
                    .raw_response()
                    .map(|response| response.status().as_u16());
                let error = error.into_service_error();
                assert!(error.is_too_many_requests_exception(), "{error:?}");
                assert_eq!(status, Some(429), "{error:?}");
                throttled += 1;
            }
        }
    }
    assert_eq!((succeeded, throttled), (1, 1));
}

//! A Python function, its code written by the test, through aws-sdk-rust.

use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::Runtime;
use serde_json::json;

use crate::support::{TestServer, create_function, json_payload, zip_files};

const HANDLER_PY: &str = r#"
def handler(event, context):
    return {"python": True, "echo": event, "function": context.function_name}
"#;

#[tokio::test]
async fn python_function_echoes_through_the_sdk() {
    let wisp = TestServer::start();
    let client = wisp.client().await;
    let zip = zip_files(&[("handler.py", 0o644, HANDLER_PY.as_bytes())]);
    create_function(&client, "py", Runtime::Python312, "handler.handler", zip).await;

    let event = json!({"from": "rust", "list": [1, 2, 3]});
    let output = client
        .invoke()
        .function_name("py")
        .payload(Blob::new(event.to_string()))
        .send()
        .await
        .expect("invoke");

    assert_eq!(output.status_code(), 200);
    assert_eq!(output.function_error(), None);
    let payload = json_payload(&output);
    assert_eq!(
        payload,
        json!({"python": true, "echo": event, "function": "py"})
    );
}

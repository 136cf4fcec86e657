//! State survives a crash: `kill -9` the server, start it again on the same data directory.

use aws_sdk_lambda::primitives::Blob;
use serde_json::json;

use crate::support::{TestServer, create_rust_echo, json_payload};

#[tokio::test]
async fn kill_9_and_restart_keeps_functions_versions_and_aliases() {
    let mut wisp = TestServer::start();
    let client = wisp.client().await;
    create_rust_echo(&client, "durable").await;
    client
        .publish_version()
        .function_name("durable")
        .send()
        .await
        .expect("publish_version");
    client
        .create_alias()
        .function_name("durable")
        .name("prod")
        .function_version("1")
        .send()
        .await
        .expect("create_alias");

    let _crashed = wisp.crash_and_restart();
    let client = wisp.client().await;

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
    assert_eq!(names, ["durable"]);

    let versions = client
        .list_versions_by_function()
        .function_name("durable")
        .send()
        .await
        .expect("list_versions_by_function");
    let versions: Vec<&str> = versions
        .versions()
        .iter()
        .filter_map(|version| version.version())
        .collect();
    assert_eq!(versions, ["$LATEST", "1"]);

    let alias = client
        .get_alias()
        .function_name("durable")
        .name("prod")
        .send()
        .await
        .expect("get_alias");
    assert_eq!(alias.function_version(), Some("1"));

    let output = client
        .invoke()
        .function_name("durable:prod")
        .payload(Blob::new(json!({"after": "restart"}).to_string()))
        .send()
        .await
        .expect("invoke durable:prod");
    assert_eq!(output.function_error(), None);
    assert_eq!(output.executed_version(), Some("1"));
    assert_eq!(json_payload(&output)["echo"], json!({"after": "restart"}));
}

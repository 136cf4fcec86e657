//! `wisp events tail`: prints the account's lifecycle events (`GET /wisp/v1/events`), optionally only
//! some types, and with `--follow` keeps printing new ones as they are appended.

use reqwest::Method;
use serde_json::Value;

use crate::client::Client;

/// Prints the last `limit` events (of the given types, all when empty), then follows when asked.
pub async fn tail(
    client: &Client,
    follow: bool,
    types: &[String],
    limit: u64,
    json_output: bool,
) -> anyhow::Result<()> {
    // The server filters by type (and names the types when one is unknown).
    let filter = if types.is_empty() {
        String::new()
    } else {
        format!("&type={}", crate::client::segment(&types.join(",")))
    };
    let mut next: Option<u64> = None;
    loop {
        let path = match next {
            None => format!("/wisp/v1/events?limit={limit}{filter}"),
            Some(from) => format!("/wisp/v1/events?from={from}&limit=1000&wait=20{filter}"),
        };
        let page = client.call(Method::GET, &path, None).await?.json()?;
        for event in page["Events"].as_array().cloned().unwrap_or_default() {
            if json_output {
                println!("{event}");
            } else {
                println!("{}", line(&event));
            }
        }
        if !follow {
            return Ok(());
        }
        next = page["NextOffset"].as_u64();
    }
}

/// One event as a line: time, type, resource, actor, and the reason when there is one.
fn line(event: &Value) -> String {
    let field = |name: &str| event[name].as_str().unwrap_or("-").to_string();
    let mut text = format!(
        "{}  {:<30} {}  by {}",
        field("Time"),
        field("Type"),
        field("Resource"),
        field("Actor")
    );
    if let Some(reason) = event["Reason"].as_str() {
        text.push_str(&format!("  ({reason})"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_names_the_type_resource_actor_and_reason() {
        let event = serde_json::json!({
            "Time": "2026-12-04T20:31:07.123Z",
            "Type": "InstanceStopped",
            "Resource": "arn:aws:lambda:us-east-1:1:function:f:$LATEST",
            "Actor": "wisp",
            "Reason": "idle",
        });
        let text = line(&event);
        assert!(text.starts_with("2026-12-04T20:31:07.123Z  InstanceStopped "));
        assert!(text.ends_with("by wisp  (idle)"), "{text}");
    }
}

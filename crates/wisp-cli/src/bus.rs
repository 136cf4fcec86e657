//! `wisp topic …`, `wisp rule …` and `wisp admission …`: the event bus and admission hooks through
//! `/wisp/v1/topics` and `/wisp/v1/admission` (see `docs/EVENTS.md`).
//!
//! Publishing is `wisp topic publish TOPIC JSON`, because `wisp publish FUNCTION` already publishes
//! a function version.

use anyhow::Context as _;
use reqwest::Method;
use serde_json::{Value, json};

use crate::client::{Client, segment};

#[derive(clap::Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create { topic: String },
    /// List the account's topics (wisp.lifecycle is built in).
    Ls,
    /// Delete a topic with its rules and events.
    Rm { topic: String },
    /// Publish one event (a JSON object) or a batch (a JSON array of objects).
    Publish {
        topic: String,
        /// The event as JSON text; `-` reads it from standard input.
        json: String,
    },
    /// Print a topic's most recent events.
    Events {
        topic: String,
        #[arg(long, default_value_t = 20)]
        limit: u64,
    },
    /// Print deliveries of a topic's events that failed for good (target gone, event refused).
    Dlq { topic: String },
}

#[derive(clap::Subcommand)]
pub enum RuleCommand {
    /// Create or replace a rule: events of TOPIC matching PATTERN go to each target function.
    Put {
        topic: String,
        rule: String,
        /// An EventBridge-style pattern, e.g. '{"Type": ["FunctionCodeUpdated"]}'.
        #[arg(long)]
        pattern: String,
        /// A function name, name:qualifier or function ARN; repeat for up to 5 targets.
        #[arg(long = "target", required = true)]
        targets: Vec<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// List a topic's rules.
    Ls { topic: String },
    /// Delete a rule.
    Rm { topic: String, rule: String },
}

#[derive(clap::Subcommand)]
pub enum AdmissionCommand {
    /// Name the functions that must approve control-plane changes (replaces the configuration).
    Set {
        /// Hook functions, asked in this order.
        #[arg(required = true)]
        functions: Vec<String>,
        /// Change types the hooks see (default: every admissible type); may be repeated.
        #[arg(long = "type", value_name = "TYPE")]
        types: Vec<String>,
        /// Seconds each hook may take before the change is refused.
        #[arg(long)]
        timeout: Option<u32>,
    },
    /// Show the admission configuration.
    Get,
    /// Remove the admission configuration (no more hooks).
    Rm,
}

fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

fn topic_path(topic: &str) -> String {
    format!("/wisp/v1/topics/{}", segment(topic))
}

pub async fn topic(
    client: &Client,
    command: TopicCommand,
    json_output: bool,
) -> anyhow::Result<()> {
    match command {
        TopicCommand::Create { topic } => {
            let reply = client
                .call(
                    Method::POST,
                    "/wisp/v1/topics",
                    Some(&json!({ "TopicName": topic })),
                )
                .await?
                .json()?;
            if json_output {
                print_json(&reply);
            } else {
                println!("created topic {topic}");
            }
        }
        TopicCommand::Ls => {
            let reply = client
                .call(Method::GET, "/wisp/v1/topics", None)
                .await?
                .json()?;
            if json_output {
                print_json(&reply);
            } else {
                for topic in reply["Topics"].as_array().cloned().unwrap_or_default() {
                    let built_in = if topic["BuiltIn"].as_bool() == Some(true) {
                        "  (built in)"
                    } else {
                        ""
                    };
                    println!("{}{built_in}", topic["TopicName"].as_str().unwrap_or("?"));
                }
            }
        }
        TopicCommand::Rm { topic } => {
            client
                .call(Method::DELETE, &topic_path(&topic), None)
                .await?;
            if !json_output {
                println!("deleted topic {topic}");
            }
        }
        TopicCommand::Publish { topic, json } => {
            let text = if json == "-" {
                std::io::read_to_string(std::io::stdin()).context("cannot read standard input")?
            } else {
                json
            };
            let event: Value = serde_json::from_str(&text)
                .context("the event is not JSON; give an object such as '{\"orderId\": 1}'")?;
            let reply = client
                .call(
                    Method::POST,
                    &format!("{}/events", topic_path(&topic)),
                    Some(&event),
                )
                .await?
                .json()?;
            if json_output {
                print_json(&reply);
            } else {
                for event in reply["Events"].as_array().cloned().unwrap_or_default() {
                    println!(
                        "{}  offset {}",
                        event["Id"].as_str().unwrap_or("?"),
                        event["Offset"]
                    );
                }
            }
        }
        TopicCommand::Events { topic, limit } => {
            let reply = client
                .call(
                    Method::GET,
                    &format!("{}/events?limit={limit}", topic_path(&topic)),
                    None,
                )
                .await?
                .json()?;
            for event in reply["Events"].as_array().cloned().unwrap_or_default() {
                println!("{event}");
            }
        }
        TopicCommand::Dlq { topic } => {
            let reply = client
                .call(Method::GET, &format!("{}/dlq", topic_path(&topic)), None)
                .await?
                .json()?;
            if json_output {
                print_json(&reply);
            } else {
                for letter in reply["DeadLetters"].as_array().cloned().unwrap_or_default() {
                    println!(
                        "offset {}  rule {}  → {}  {}: {}",
                        letter["Offset"],
                        letter["Rule"].as_str().unwrap_or("?"),
                        letter["Target"].as_str().unwrap_or("?"),
                        letter["Condition"].as_str().unwrap_or("?"),
                        letter["Reason"].as_str().unwrap_or("?"),
                    );
                }
            }
        }
    }
    Ok(())
}

pub async fn rule(client: &Client, command: RuleCommand, json_output: bool) -> anyhow::Result<()> {
    match command {
        RuleCommand::Put {
            topic,
            rule,
            pattern,
            targets,
            description,
        } => {
            let pattern: Value = serde_json::from_str(&pattern)
                .context("--pattern is not JSON; e.g. '{\"Type\": [\"FunctionCodeUpdated\"]}'")?;
            let mut body = json!({ "EventPattern": pattern, "Targets": targets });
            if let Some(description) = description {
                body["Description"] = description.into();
            }
            let reply = client
                .call(
                    Method::PUT,
                    &format!("{}/rules/{}", topic_path(&topic), segment(&rule)),
                    Some(&body),
                )
                .await?
                .json()?;
            if json_output {
                print_json(&reply);
            } else {
                println!(
                    "rule {rule} on {topic}: events from offset {} go to {}",
                    reply["FromOffset"],
                    targets.join(", ")
                );
            }
        }
        RuleCommand::Ls { topic } => {
            let reply = client
                .call(Method::GET, &format!("{}/rules", topic_path(&topic)), None)
                .await?
                .json()?;
            if json_output {
                print_json(&reply);
            } else {
                for rule in reply["Rules"].as_array().cloned().unwrap_or_default() {
                    let targets: Vec<&str> = rule["Targets"]
                        .as_array()
                        .map(|targets| {
                            targets
                                .iter()
                                .filter_map(|target| target["Arn"].as_str())
                                .collect()
                        })
                        .unwrap_or_default();
                    println!(
                        "{}  {}  → {}",
                        rule["RuleName"].as_str().unwrap_or("?"),
                        rule["EventPattern"],
                        targets.join(", ")
                    );
                }
            }
        }
        RuleCommand::Rm { topic, rule } => {
            client
                .call(
                    Method::DELETE,
                    &format!("{}/rules/{}", topic_path(&topic), segment(&rule)),
                    None,
                )
                .await?;
            if !json_output {
                println!("deleted rule {rule} of {topic}");
            }
        }
    }
    Ok(())
}

pub async fn admission(
    client: &Client,
    command: AdmissionCommand,
    json_output: bool,
) -> anyhow::Result<()> {
    match command {
        AdmissionCommand::Set {
            functions,
            types,
            timeout,
        } => {
            let hooks: Vec<Value> = functions
                .iter()
                .map(|function| json!({ "FunctionName": function, "Types": types }))
                .collect();
            let mut body = json!({ "Hooks": hooks });
            if let Some(timeout) = timeout {
                body["TimeoutSeconds"] = timeout.into();
            }
            let reply = client
                .call(Method::PUT, "/wisp/v1/admission", Some(&body))
                .await?
                .json()?;
            if json_output {
                print_json(&reply);
            } else {
                println!(
                    "changes now need the approval of {} (timeout {} s)",
                    functions.join(", "),
                    reply["TimeoutSeconds"]
                );
            }
        }
        AdmissionCommand::Get => {
            let reply = client
                .call(Method::GET, "/wisp/v1/admission", None)
                .await?
                .json()?;
            print_json(&reply);
        }
        AdmissionCommand::Rm => {
            client
                .call(Method::DELETE, "/wisp/v1/admission", None)
                .await?;
            if !json_output {
                println!("admission hooks removed");
            }
        }
    }
    Ok(())
}

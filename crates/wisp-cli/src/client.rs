//! A small HTTP client for the Wisp server that signs every request with SigV4, as the aws CLI does.
//!
//! The CLI talks to the server over its HTTP API only; this module never reaches into server internals.

use std::path::Path;

use anyhow::{Context as _, bail};
use reqwest::Method;
use serde_json::Value;
use wisp_types::sigv4;

pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

pub struct Client {
    http: reqwest::Client,
    endpoint: String,
    region: String,
    credentials: Credentials,
}

/// A response with its status, headers and body.
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: bytes::Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body)
            .context("the server answered with something that is not JSON")
    }

    /// Turns an AWS-shaped error into one readable line.
    pub fn error_line(&self) -> String {
        let kind = self
            .header("x-amzn-errortype")
            .unwrap_or("Error")
            .to_string();
        let message = serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|value| {
                value
                    .get("Message")
                    .or_else(|| value.get("message"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).into_owned());
        format!("{kind}: {message}")
    }
}

/// Reads credentials from the environment, or from `<data>/credentials` written by `wisp serve`.
pub fn load_credentials(data_dir: &Path) -> anyhow::Result<Credentials> {
    if let (Ok(access_key_id), Ok(secret_access_key)) = (
        std::env::var("AWS_ACCESS_KEY_ID"),
        std::env::var("AWS_SECRET_ACCESS_KEY"),
    ) {
        return Ok(Credentials {
            access_key_id,
            secret_access_key,
        });
    }
    let path = data_dir.join("credentials");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!("no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or point WISP_DATA at the server's data directory ({} is unreadable)", path.display())
    })?;
    let mut access_key_id = None;
    let mut secret_access_key = None;
    for line in text.lines() {
        if let Some((key, value)) = line.split_once('=') {
            match key.trim() {
                "aws_access_key_id" => access_key_id = Some(value.trim().to_string()),
                "aws_secret_access_key" => secret_access_key = Some(value.trim().to_string()),
                _ => {}
            }
        }
    }
    match (access_key_id, secret_access_key) {
        (Some(access_key_id), Some(secret_access_key)) => Ok(Credentials {
            access_key_id,
            secret_access_key,
        }),
        _ => bail!(
            "{} has no aws_access_key_id/aws_secret_access_key",
            path.display()
        ),
    }
}

impl Client {
    pub fn new(
        endpoint: String,
        region: String,
        credentials: Credentials,
    ) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(960))
            .build()?;
        Ok(Client {
            http,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            region,
            credentials,
        })
    }

    /// Sends a signed request; `path_and_query` must already be percent-encoded.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> anyhow::Result<Reply> {
        let response = self
            .send_streaming(method, path_and_query, headers, body)
            .await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .context("the server closed the connection mid-answer")?;
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    /// Sends a signed request and returns as soon as the answer's headers have arrived, so that
    /// its body can be read as it comes.
    pub async fn send_streaming(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> anyhow::Result<reqwest::Response> {
        let url = reqwest::Url::parse(&format!("{}{path_and_query}", self.endpoint))
            .context("invalid endpoint URL")?;
        let host = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_string(),
        };
        let now = chrono::Utc::now();
        let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
        let date = now.format("%Y%m%d").to_string();
        let payload_hash = sigv4::hex_sha256(&body);
        let mut signed: Vec<(String, String)> = vec![
            ("host".into(), host),
            ("x-amz-content-sha256".into(), payload_hash.clone()),
            ("x-amz-date".into(), amz_date.clone()),
        ];
        for (name, value) in headers {
            signed.push((name.to_lowercase(), value.clone()));
        }
        signed.sort();
        let parts = sigv4::CanonicalParts {
            method: method.as_str(),
            raw_path: url.path(),
            raw_query: url.query(),
            headers: signed
                .iter()
                .map(|(name, value)| (name.as_str(), vec![value.as_bytes()]))
                .collect(),
            payload_hash: &payload_hash,
        };
        let scope = sigv4::Scope {
            date: &date,
            region: &self.region,
            service: "lambda",
        };
        let signature = sigv4::signature(
            &parts,
            &scope,
            &amz_date,
            &self.credentials.secret_access_key,
        );
        let names: Vec<&str> = signed.iter().map(|(name, _)| name.as_str()).collect();
        let authorization = format!(
            "AWS4-HMAC-SHA256 Credential={}/{date}/{}/lambda/aws4_request, SignedHeaders={}, Signature={signature}",
            self.credentials.access_key_id,
            self.region,
            names.join(";")
        );
        let mut request = self
            .http
            .request(method, url.clone())
            .header("authorization", authorization);
        for (name, value) in &signed {
            if name != "host" {
                request = request.header(name.as_str(), value.as_str());
            }
        }
        request.body(body).send().await.with_context(|| {
            format!("cannot reach the wisp server at {}; hint: start it with `wisp serve` or set --endpoint", self.endpoint)
        })
    }

    /// Sends a request and fails with the server's error line on a non-2xx answer.
    pub async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Reply> {
        let body = body
            .map(|value| serde_json::to_vec(value).expect("json"))
            .unwrap_or_default();
        let headers = if body.is_empty() {
            vec![]
        } else {
            vec![("content-type", "application/json".to_string())]
        };
        let reply = self.send(method, path_and_query, &headers, body).await?;
        if !(200..300).contains(&reply.status) {
            bail!("{}", reply.error_line());
        }
        Ok(reply)
    }
}

/// Percent-encodes one path segment (function names, ARNs, aliases).
pub fn segment(text: &str) -> String {
    sigv4::uri_encode(text, false)
}

//! Layers: PublishLayerVersion, GetLayerVersion(ByArn), ListLayers, ListLayerVersions and
//! DeleteLayerVersion, and the check of a function's `Layers` list.
//!
//! A layer version is a zip stored in `Blobs` by sha256 (checked with the same safe inspection as
//! function code) plus an immutable record. Version numbers start at 1 and are never reused, even
//! after a delete, as on Lambda. A function keeps the digests of its layers in its
//! [`StoredVersion`], so deleting a layer version does not break functions that already use it.
//!
//! Keys: `layer/{account}/{name}` → [`StoredLayer`] (the numbering head),
//! `layerver/{account}/{name}/{version:020}` → [`LayerVersion`].

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use wisp_store::StoreError;
use wisp_types::*;

use crate::{ControlPlane, decode, encode, lambda_timestamp, store_error};

/// At most this many layers per function, as on Lambda.
pub const MAX_FUNCTION_LAYERS: usize = 5;

/// The numbering head of a layer: the highest version ever published.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredLayer {
    pub last_version: u64,
}

/// Where a layer version's zip is and what it is, as Lambda answers `Content`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LayerContent {
    pub location: String,
    /// base64 of the sha256 of the zip.
    pub code_sha256: String,
    pub code_size: u64,
}

/// One published layer version, as GetLayerVersion answers it (plus the blob digest, which is not sent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LayerVersion {
    pub content: LayerContent,
    pub layer_arn: String,
    pub layer_version_arn: String,
    pub description: String,
    pub created_date: String,
    pub version: u64,
    pub compatible_runtimes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license_info: Option<String>,
    pub compatible_architectures: Vec<String>,
    /// Hex sha256 of the zip: the name of its blob.
    #[serde(rename = "WispDigest")]
    pub digest: String,
}

/// PublishLayerVersion's input, after the wire format (base64) is decoded.
#[derive(Debug, Clone, Default)]
pub struct PublishLayer {
    pub name: String,
    pub zip: Vec<u8>,
    pub description: Option<String>,
    pub compatible_runtimes: Vec<String>,
    pub license_info: Option<String>,
}

/// A layer in ListLayers: its name and ARN with its newest version.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct LayerSummary {
    pub layer_name: String,
    pub layer_arn: String,
    pub latest_matching_version: serde_json::Value,
}

fn head_key(account: &AccountId, name: &str) -> String {
    format!("layer/{account}/{name}")
}

fn version_prefix(account: &AccountId, name: &str) -> String {
    format!("layerver/{account}/{name}/")
}

fn version_key(account: &AccountId, name: &str, version: u64) -> String {
    format!("layerver/{account}/{name}/{version:020}")
}

/// `arn:aws:lambda:{region}:{account}:layer:{name}`.
pub fn layer_arn(region: &str, account: &AccountId, name: &str) -> String {
    format!("arn:aws:lambda:{region}:{account}:layer:{name}")
}

/// Checks a layer name: 1 to 140 letters, digits, `-` and `_`.
pub fn validate_layer_name(name: &str) -> Result<(), ApiError> {
    let valid = !name.is_empty()
        && name.len() <= 140
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "layer name {name:?} must be 1 to 140 letters, digits, hyphens or underscores"
        )))
    }
}

/// A layer version ARN taken apart: (account, name, version).
pub fn parse_layer_version_arn(arn: &str) -> Result<(AccountId, String, u64), ApiError> {
    let bad = || {
        ApiError::invalid(format!(
            "{arn:?} is not a layer version ARN (arn:aws:lambda:REGION:ACCOUNT:layer:NAME:VERSION)"
        ))
    };
    let parts: Vec<&str> = arn.split(':').collect();
    if parts.len() != 8 || parts[0] != "arn" || parts[2] != "lambda" || parts[5] != "layer" {
        return Err(bad());
    }
    let account = AccountId::parse(parts[4]).map_err(|_| bad())?;
    validate_layer_name(parts[6])?;
    let version = parts[7]
        .parse::<u64>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(bad)?;
    Ok((account, parts[6].to_string(), version))
}

/// Accepts a layer name or a layer ARN without version in a path and returns the name.
pub fn path_layer_name(account: &AccountId, text: &str) -> Result<String, ApiError> {
    if let Some(rest) = text.strip_prefix("arn:") {
        let parts: Vec<&str> = rest.split(':').collect();
        if parts.len() != 6 || parts[1] != "lambda" || parts[4] != "layer" {
            return Err(ApiError::invalid(format!(
                "{text:?} is not a layer name or layer ARN"
            )));
        }
        if parts[3] != account.to_string() {
            return Err(ApiError::new(
                ErrorCode::AccessDenied,
                format!(
                    "account {account} may not access layers of account {}",
                    parts[3]
                ),
            ));
        }
        validate_layer_name(parts[5])?;
        return Ok(parts[5].to_string());
    }
    validate_layer_name(text)?;
    Ok(text.to_string())
}

fn layer_version_not_found(arn: &str) -> ApiError {
    ApiError::not_found(format!("layer version {arn} does not exist"))
}

impl ControlPlane {
    fn layer_arn(&self, account: &AccountId, name: &str) -> String {
        layer_arn(&self.options.region, account, name)
    }

    /// Publishes a new immutable version of a layer (created with its first version).
    pub async fn publish_layer_version(
        &self,
        account: &AccountId,
        input: PublishLayer,
    ) -> Result<LayerVersion, ApiError> {
        validate_layer_name(&input.name)?;
        if input.compatible_runtimes.len() > 15 {
            return Err(ApiError::invalid(format!(
                "CompatibleRuntimes lists {} runtimes; at most 15 are allowed",
                input.compatible_runtimes.len()
            )));
        }
        // Only the ids are checked: this is metadata for ListLayers, not a promise that this
        // machine has the interpreter.
        for runtime in &input.compatible_runtimes {
            crate::RuntimeCatalog::family(runtime)?;
        }
        if input.description.as_deref().is_some_and(|d| d.len() > 256) {
            return Err(ApiError::invalid(
                "layer Description is longer than 256 characters",
            ));
        }
        if input.license_info.as_deref().is_some_and(|l| l.len() > 512) {
            return Err(ApiError::invalid(
                "layer LicenseInfo is longer than 512 characters",
            ));
        }
        let zip = input.zip;
        if zip.is_empty() {
            return Err(ApiError::invalid(
                "Content.ZipFile is empty: upload a zip archive of the layer's files",
            ));
        }
        if zip.len() > MAX_ZIP_BYTES {
            return Err(ApiError::new(
                ErrorCode::RequestTooLarge,
                format!(
                    "layer archive is {} bytes; the limit is {MAX_ZIP_BYTES}",
                    zip.len()
                ),
            ));
        }
        let limits = wisp_sandbox::archive::ArchiveLimits {
            max_total_bytes: self.options.max_unzipped_bytes,
            ..Default::default()
        };
        wisp_sandbox::archive::inspect(&zip, &limits)
            .map_err(|error| ApiError::invalid(format!("layer archive refused: {error}")))?;
        let code_size = zip.len() as u64;
        let code_sha256 =
            base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&zip));
        let digest = self.blobs.put(zip).await.map_err(store_error)?.0;

        // Reserve the number first: a crash after this leaves a gap, never a reused number.
        let key = head_key(account, &input.name);
        let mut number = None;
        for _ in 0..16 {
            let current = self.kv.get(&key).await.map_err(store_error)?;
            let (mut head, expected) = match &current {
                Some(entry) => (
                    decode::<StoredLayer>(&key, &entry.value)?,
                    Some(entry.revision),
                ),
                None => (StoredLayer { last_version: 0 }, None),
            };
            head.last_version += 1;
            match self
                .kv
                .compare_and_set(&key, expected, encode(&head), None)
                .await
            {
                Ok(_) => {
                    number = Some(head.last_version);
                    break;
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(error) => return Err(store_error(error)),
            }
        }
        let number = number.ok_or_else(|| {
            ApiError::conflict(format!(
                "layer {} is being published by other requests; retry",
                input.name
            ))
        })?;
        let layer_arn = self.layer_arn(account, &input.name);
        let version = LayerVersion {
            content: LayerContent {
                location: format!("wisp://blobs/{digest}"),
                code_sha256,
                code_size,
            },
            layer_version_arn: format!("{layer_arn}:{number}"),
            layer_arn,
            description: input.description.unwrap_or_default(),
            created_date: lambda_timestamp(chrono::Utc::now()),
            version: number,
            compatible_runtimes: input.compatible_runtimes,
            license_info: input.license_info,
            compatible_architectures: Vec::new(),
            digest,
        };
        let version_key = version_key(account, &input.name, number);
        if self
            .kv
            .put_if_absent(&version_key, encode(&version), None)
            .await
            .map_err(store_error)?
            .is_none()
        {
            return Err(ApiError::internal(format!(
                "version {number} of layer {} already exists; layer versions are immutable",
                input.name
            )));
        }
        self.announce(
            account,
            crate::lifecycle::EventType::LayerVersionPublished,
            version.layer_version_arn.clone(),
            None,
            crate::lifecycle::snapshot(&version),
        )
        .await?;
        Ok(version)
    }

    /// One layer version (ResourceNotFoundException when it does not exist or was deleted).
    pub async fn get_layer_version(
        &self,
        account: &AccountId,
        name: &str,
        version: u64,
    ) -> Result<LayerVersion, ApiError> {
        validate_layer_name(name)?;
        let key = version_key(account, name, version);
        match self.kv.get(&key).await.map_err(store_error)? {
            Some(entry) => decode(&key, &entry.value),
            None => Err(layer_version_not_found(&format!(
                "{}:{version}",
                self.layer_arn(account, name)
            ))),
        }
    }

    /// GetLayerVersionByArn: the ARN must name a layer of the caller's account.
    pub async fn get_layer_version_by_arn(
        &self,
        account: &AccountId,
        arn: &str,
    ) -> Result<LayerVersion, ApiError> {
        let (owner, name, version) = parse_layer_version_arn(arn)?;
        if &owner != account {
            return Err(ApiError::new(
                ErrorCode::AccessDenied,
                format!("account {account} may not access layer {arn}"),
            ));
        }
        let found = self.get_layer_version(account, &name, version).await?;
        if found.layer_version_arn != arn {
            return Err(layer_version_not_found(arn));
        }
        Ok(found)
    }

    /// Every live version of a layer, newest first (as Lambda lists them).
    async fn layer_versions(
        &self,
        account: &AccountId,
        name: &str,
    ) -> Result<Vec<LayerVersion>, ApiError> {
        let mut versions = self
            .scan_all(&version_prefix(account, name))
            .await?
            .into_iter()
            .map(|(key, entry)| decode::<LayerVersion>(&key, &entry.value))
            .collect::<Result<Vec<_>, ApiError>>()?;
        versions.reverse();
        Ok(versions)
    }

    /// ListLayerVersions: newest first, optionally only those compatible with `runtime`;
    /// paginated with the marker being the last version number listed.
    pub async fn list_layer_versions(
        &self,
        account: &AccountId,
        name: &str,
        runtime: Option<&str>,
        marker: Option<&str>,
        max_items: usize,
    ) -> Result<(Vec<LayerVersion>, Option<String>), ApiError> {
        validate_layer_name(name)?;
        let marker = marker
            .map(|text| {
                text.parse::<u64>()
                    .map_err(|_| ApiError::invalid(format!("Marker {text:?} is not valid")))
            })
            .transpose()?;
        let mut versions: Vec<LayerVersion> = self
            .layer_versions(account, name)
            .await?
            .into_iter()
            .filter(|v| marker.is_none_or(|m| v.version < m))
            .filter(|v| runtime.is_none_or(|r| v.compatible_runtimes.iter().any(|c| c == r)))
            .collect();
        let next = if versions.len() > max_items {
            versions.truncate(max_items);
            versions.last().map(|v| v.version.to_string())
        } else {
            None
        };
        Ok((versions, next))
    }

    /// ListLayers: each layer with a live version, by name, with its newest (matching) version.
    pub async fn list_layers(
        &self,
        account: &AccountId,
        runtime: Option<&str>,
        marker: Option<&str>,
        max_items: usize,
    ) -> Result<(Vec<LayerSummary>, Option<String>), ApiError> {
        let prefix = format!("layer/{account}/");
        let start = marker.map(|name| format!("{prefix}{name}"));
        let mut layers = Vec::new();
        let mut after = start;
        loop {
            let page = self
                .kv
                .scan(&prefix, after.as_deref(), 100)
                .await
                .map_err(store_error)?;
            let done = page.len() < 100;
            for (key, _) in page {
                let name = key[prefix.len()..].to_string();
                after = Some(key);
                let newest = self
                    .layer_versions(account, &name)
                    .await?
                    .into_iter()
                    .find(|v| runtime.is_none_or(|r| v.compatible_runtimes.iter().any(|c| c == r)));
                if let Some(version) = newest {
                    let mut latest = serde_json::to_value(&version).map_err(|error| {
                        ApiError::internal(format!("cannot encode layer {name}: {error}"))
                    })?;
                    if let Some(object) = latest.as_object_mut() {
                        object.remove("Content");
                        object.remove("LayerArn");
                        object.remove("WispDigest");
                    }
                    layers.push(LayerSummary {
                        layer_arn: version.layer_arn.clone(),
                        layer_name: name,
                        latest_matching_version: latest,
                    });
                    if layers.len() > max_items {
                        layers.truncate(max_items);
                        let next = layers.last().map(|l| l.layer_name.clone());
                        return Ok((layers, next));
                    }
                }
            }
            if done {
                break;
            }
        }
        Ok((layers, None))
    }

    /// DeleteLayerVersion: removes the version (a no-op when it does not exist, as on Lambda).
    /// Functions that already use it keep its content.
    pub async fn delete_layer_version(
        &self,
        account: &AccountId,
        name: &str,
        version: u64,
    ) -> Result<(), ApiError> {
        validate_layer_name(name)?;
        let key = version_key(account, name, version);
        let before = self.kv.get(&key).await.map_err(store_error)?;
        if self.kv.delete(&key).await.map_err(store_error)? {
            self.announce(
                account,
                crate::lifecycle::EventType::LayerVersionDeleted,
                format!(
                    "{}:{version}",
                    layer_arn(&self.options.region, account, name)
                ),
                before.and_then(|entry| serde_json::from_slice(&entry.value).ok()),
                None,
            )
            .await?;
        }
        Ok(())
    }

    /// Refuses a function whose code and layers together unzip to more than the package limit, as
    /// Lambda counts them together. Reads the archives only when the function has layers.
    pub(crate) async fn check_unzipped_total(
        &self,
        code_digest: &str,
        layer_digests: &[String],
    ) -> Result<(), ApiError> {
        if layer_digests.is_empty() {
            return Ok(());
        }
        let limit = self.options.max_unzipped_bytes;
        let limits = wisp_sandbox::archive::ArchiveLimits {
            max_total_bytes: limit,
            ..Default::default()
        };
        let mut total = 0u64;
        for digest in std::iter::once(code_digest).chain(layer_digests.iter().map(String::as_str)) {
            let zip = self.code(digest).await?;
            let summary = wisp_sandbox::archive::inspect(&zip, &limits).map_err(|error| {
                ApiError::internal(format!("stored package {digest} cannot be read: {error}"))
            })?;
            total += summary.total_bytes;
        }
        if total > limit {
            return Err(ApiError::invalid(format!(
                "function code and layers unzip to {total} bytes together; the limit is {limit}"
            )));
        }
        Ok(())
    }

    /// Checks a function's `Layers` list: at most 5 existing layer versions of the caller's
    /// account, no layer twice. Returns what the configuration lists and the blobs' digests.
    pub async fn resolve_function_layers(
        &self,
        account: &AccountId,
        arns: &[String],
    ) -> Result<(Vec<FunctionLayer>, Vec<String>), ApiError> {
        if arns.len() > MAX_FUNCTION_LAYERS {
            return Err(ApiError::invalid(format!(
                "Layers lists {} layer versions; a function can use at most {MAX_FUNCTION_LAYERS}",
                arns.len()
            )));
        }
        let mut layers = Vec::new();
        let mut digests = Vec::new();
        let mut names: Vec<String> = Vec::new();
        for arn in arns {
            let (owner, name, _) = parse_layer_version_arn(arn)?;
            if names.contains(&name) {
                return Err(ApiError::invalid(format!(
                    "Layers names layer {name} twice; a function can use one version of each layer"
                )));
            }
            if &owner != account {
                return Err(ApiError::new(
                    ErrorCode::AccessDenied,
                    format!("account {account} may not use layer {arn}"),
                ));
            }
            let version = match self.get_layer_version_by_arn(account, arn).await {
                Ok(version) => version,
                Err(error) if error.code == ErrorCode::ResourceNotFound => {
                    return Err(ApiError::invalid(format!(
                        "layer version {arn} does not exist"
                    )));
                }
                Err(error) => return Err(error),
            };
            names.push(name);
            layers.push(FunctionLayer {
                arn: version.layer_version_arn,
                code_size: version.content.code_size,
            });
            digests.push(version.digest);
        }
        Ok((layers, digests))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_version_arns_are_parsed() {
        let (account, name, version) =
            parse_layer_version_arn("arn:aws:lambda:us-east-1:123456789012:layer:my-lib:3")
                .unwrap();
        assert_eq!(account.to_string(), "123456789012");
        assert_eq!(name, "my-lib");
        assert_eq!(version, 3);
        for bad in [
            "arn:aws:lambda:us-east-1:123456789012:layer:my-lib",
            "arn:aws:lambda:us-east-1:123456789012:layer:my-lib:0",
            "arn:aws:lambda:us-east-1:123456789012:function:f:1",
            "my-lib:1",
            "arn:aws:lambda:us-east-1:123456789012:layer:bad/name:1",
        ] {
            assert!(parse_layer_version_arn(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn layer_names_are_checked() {
        assert!(validate_layer_name("a_b-1").is_ok());
        assert!(validate_layer_name("").is_err());
        assert!(validate_layer_name(&"x".repeat(141)).is_err());
        assert!(validate_layer_name("a.b").is_err());
    }
}

//! Receipts in the control plane: the server's Ed25519 signing keys and whether a function or a
//! whole account gets a signed receipt for each completed invocation.
//!
//! Keys live under `keys/receipts/{key id}` (the private half included: it never leaves the server,
//! no API returns it); the first start makes one, and a rotation makes a new current key and marks
//! the old one retired, while its public half stays published so old receipts still verify.
//! Switches live under `rcpt/fn/{account}/{name}` and `rcpt/acct/{account}`; a resolution carries
//! the result (function or account on), so the invoke path reads neither.

use std::sync::{Arc, RwLock};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use wisp_types::receipt::{self, PublicKeyInfo, RECEIPT_ALGORITHM};
use wisp_types::{AccountId, ApiError, ErrorCode};

use crate::{ControlPlane, decode, encode, store_error};

const KEY_PREFIX: &str = "keys/receipts/";

fn key_key(key_id: &str) -> String {
    format!("{KEY_PREFIX}{key_id}")
}

fn function_switch_key(account: &AccountId, name: &str) -> String {
    format!("rcpt/fn/{account}/{name}")
}

fn account_switch_key(account: &AccountId) -> String {
    format!("rcpt/acct/{account}")
}

/// `{"Enabled": true}`: the body of the receipts switches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptsConfig {
    #[serde(rename = "Enabled")]
    pub enabled: bool,
}

/// A signing key as stored: the public fields, plus the secret.
#[derive(Serialize, Deserialize)]
struct StoredKey {
    #[serde(flatten)]
    public: PublicKeyInfo,
    /// Base64 of the 32-byte Ed25519 secret.
    secret: String,
}

/// The key that signs new receipts.
pub struct CurrentKey {
    pub key_id: String,
    pub key: receipt::SigningKey,
}

/// The control plane's receipt state: the current key (loaded at start) and the root account,
/// the only one allowed to rotate.
#[derive(Default)]
pub(crate) struct ReceiptKeys {
    current: RwLock<Option<Arc<CurrentKey>>>,
    root: RwLock<Option<AccountId>>,
    rotating: tokio::sync::Mutex<()>,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn new_key() -> (StoredKey, Arc<CurrentKey>) {
    let secret: [u8; 32] = rand::random();
    let key = receipt::signing_key(&secret);
    let public = key.verifying_key();
    let key_id = receipt::key_id(&public);
    let stored = StoredKey {
        public: PublicKeyInfo {
            key_id: key_id.clone(),
            algorithm: RECEIPT_ALGORITHM.to_string(),
            public_key: BASE64.encode(public.as_bytes()),
            created: now(),
            retired: None,
        },
        secret: BASE64.encode(secret),
    };
    (stored, Arc::new(CurrentKey { key_id, key }))
}

fn current_from(stored: &StoredKey) -> Result<Arc<CurrentKey>, ApiError> {
    let secret: [u8; 32] = BASE64
        .decode(&stored.secret)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| {
            ApiError::internal(format!(
                "stored receipt key {} has an unreadable secret",
                stored.public.key_id
            ))
        })?;
    Ok(Arc::new(CurrentKey {
        key_id: stored.public.key_id.clone(),
        key: receipt::signing_key(&secret),
    }))
}

impl ControlPlane {
    async fn stored_keys(&self) -> Result<Vec<StoredKey>, ApiError> {
        let mut keys = self
            .scan_all(KEY_PREFIX)
            .await?
            .into_iter()
            .map(|(key, entry)| decode::<StoredKey>(&key, &entry.value))
            .collect::<Result<Vec<_>, ApiError>>()?;
        keys.sort_by(|a, b| a.public.created.cmp(&b.public.created));
        Ok(keys)
    }

    /// Loads the current receipt key, making the first one if there is none; `root` is the account
    /// allowed to rotate keys. Called once at start, before the server answers.
    pub async fn open_receipt_keys(&self, root: &AccountId) -> Result<String, ApiError> {
        *self
            .receipt_keys
            .root
            .write()
            .unwrap_or_else(|poison| poison.into_inner()) = Some(root.clone());
        let keys = self.stored_keys().await?;
        // The newest key not retired signs; a crash in a rotation may leave two, and the newer wins.
        let current = match keys.iter().rev().find(|key| key.public.retired.is_none()) {
            Some(stored) => current_from(stored)?,
            None => {
                let (stored, current) = new_key();
                self.kv
                    .put(&key_key(&stored.public.key_id), encode(&stored), None)
                    .await
                    .map_err(store_error)?;
                current
            }
        };
        let key_id = current.key_id.clone();
        *self
            .receipt_keys
            .current
            .write()
            .unwrap_or_else(|poison| poison.into_inner()) = Some(current);
        Ok(key_id)
    }

    /// The key that signs receipts now; `None` before [`ControlPlane::open_receipt_keys`].
    pub fn receipt_key(&self) -> Option<Arc<CurrentKey>> {
        self.receipt_keys
            .current
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    /// Every public key ever used to sign receipts, oldest first, with when each was retired.
    pub async fn receipt_public_keys(&self) -> Result<Vec<PublicKeyInfo>, ApiError> {
        Ok(self
            .stored_keys()
            .await?
            .into_iter()
            .map(|stored| stored.public)
            .collect())
    }

    /// Makes a new current key and retires the old one (root account only). Receipts signed after
    /// this returns name the new key; the old public key stays published.
    pub async fn rotate_receipt_key(&self, caller: &AccountId) -> Result<PublicKeyInfo, ApiError> {
        let root = self
            .receipt_keys
            .root
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone();
        if root.as_ref() != Some(caller) {
            return Err(ApiError::new(
                ErrorCode::AccessDenied,
                format!(
                    "account {caller} may not rotate the receipt keys; only the root account may"
                ),
            ));
        }
        let _rotating = self.receipt_keys.rotating.lock().await;
        let (stored, current) = new_key();
        // The new key is stored before the old ones are retired: a crash in between leaves two
        // current keys, and the newer one wins at the next start.
        self.kv
            .put(&key_key(&stored.public.key_id), encode(&stored), None)
            .await
            .map_err(store_error)?;
        let retired_at = now();
        for mut old in self.stored_keys().await? {
            if old.public.key_id != stored.public.key_id && old.public.retired.is_none() {
                old.public.retired = Some(retired_at.clone());
                self.kv
                    .put(&key_key(&old.public.key_id), encode(&old), None)
                    .await
                    .map_err(store_error)?;
            }
        }
        *self
            .receipt_keys
            .current
            .write()
            .unwrap_or_else(|poison| poison.into_inner()) = Some(current);
        Ok(stored.public)
    }

    async fn switch(&self, key: &str) -> Result<ReceiptsConfig, ApiError> {
        match self.kv.get(key).await.map_err(store_error)? {
            Some(entry) => decode(key, &entry.value),
            None => Ok(ReceiptsConfig::default()),
        }
    }

    /// Whether one function's invocations get receipts (its own switch, not the account's).
    pub async fn function_receipts(
        &self,
        account: &AccountId,
        name: &str,
    ) -> Result<ReceiptsConfig, ApiError> {
        self.load_function(account, name).await?;
        self.switch(&function_switch_key(account, name)).await
    }

    /// Turns receipts on or off for one function.
    pub async fn put_function_receipts(
        &self,
        account: &AccountId,
        name: &str,
        config: ReceiptsConfig,
    ) -> Result<ReceiptsConfig, ApiError> {
        self.load_function(account, name).await?;
        let before = self.switch(&function_switch_key(account, name)).await?;
        self.kv
            .put(&function_switch_key(account, name), encode(&config), None)
            .await
            .map_err(store_error)?;
        self.forget(account, name);
        self.announce(
            account,
            crate::lifecycle::EventType::ReceiptsChanged,
            wisp_types::function_arn(&self.options.region, account, name),
            crate::lifecycle::snapshot(&before),
            crate::lifecycle::snapshot(&config),
        )
        .await?;
        Ok(config)
    }

    /// Forgets a deleted function's switch (a function made later with its name starts with it off).
    pub(crate) async fn delete_function_receipts(
        &self,
        account: &AccountId,
        name: &str,
    ) -> Result<(), ApiError> {
        self.kv
            .delete(&function_switch_key(account, name))
            .await
            .map_err(store_error)?;
        Ok(())
    }

    /// Whether every function of an account gets receipts.
    pub async fn account_receipts(&self, account: &AccountId) -> Result<ReceiptsConfig, ApiError> {
        self.switch(&account_switch_key(account)).await
    }

    /// Turns receipts on or off for every function of an account (a function's own switch can
    /// only add receipts, not take away the account's).
    pub async fn put_account_receipts(
        &self,
        account: &AccountId,
        config: ReceiptsConfig,
    ) -> Result<ReceiptsConfig, ApiError> {
        self.kv
            .put(&account_switch_key(account), encode(&config), None)
            .await
            .map_err(store_error)?;
        self.forget_account(account);
        Ok(config)
    }

    /// Whether an invocation of the function gets a receipt; read when a resolution is built.
    pub(crate) async fn receipts_enabled(
        &self,
        account: &AccountId,
        name: &str,
    ) -> Result<bool, ApiError> {
        Ok(self.switch(&account_switch_key(account)).await?.enabled
            || self
                .switch(&function_switch_key(account, name))
                .await?
                .enabled)
    }
}

//! Idempotency settings of a function (`/wisp/v1/functions/{name}/idempotency`), stored at
//! `idem/{account}/{function}`. They apply to every version of the function; the engine finds them in
//! the cached resolution, so the invoke path reads nothing to decide whether a call is idempotent.

use wisp_types::*;

use crate::{ControlPlane, decode, encode, lambda_timestamp, store_error};

pub(crate) fn idempotency_key(account: &AccountId, name: &str) -> String {
    format!("idem/{account}/{name}")
}

impl ControlPlane {
    /// Sets a function's idempotency settings (replacing earlier ones).
    pub async fn put_idempotency_config(
        &self,
        account: &AccountId,
        name: &str,
        mut config: IdempotencyConfig,
    ) -> Result<IdempotencyConfig, ApiError> {
        let _ = self.load_function(account, name).await?;
        config.validate()?;
        config.last_modified = lambda_timestamp(chrono::Utc::now());
        let before = self
            .kv
            .get(&idempotency_key(account, name))
            .await
            .map_err(store_error)?;
        self.kv
            .put(&idempotency_key(account, name), encode(&config), None)
            .await
            .map_err(store_error)?;
        self.forget(account, name);
        self.announce(
            account,
            crate::lifecycle::EventType::IdempotencyChanged,
            function_arn(&self.options.region, account, name),
            before.and_then(|entry| serde_json::from_slice(&entry.value).ok()),
            crate::lifecycle::snapshot(&config),
        )
        .await?;
        Ok(config)
    }

    pub async fn get_idempotency_config(
        &self,
        account: &AccountId,
        name: &str,
    ) -> Result<IdempotencyConfig, ApiError> {
        let _ = self.load_function(account, name).await?;
        self.stored_idempotency_config(account, name)
            .await?
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "function {name} is not idempotent; hint: PUT /wisp/v1/functions/{name}/idempotency with KeyJsonPath or KeyHeader"
                ))
            })
    }

    pub(crate) async fn stored_idempotency_config(
        &self,
        account: &AccountId,
        name: &str,
    ) -> Result<Option<IdempotencyConfig>, ApiError> {
        let key = idempotency_key(account, name);
        match self.kv.get(&key).await.map_err(store_error)? {
            Some(entry) => Ok(Some(decode(&key, &entry.value)?)),
            None => Ok(None),
        }
    }

    /// Turns idempotency off; outcomes already stored expire on their own.
    pub async fn delete_idempotency_config(
        &self,
        account: &AccountId,
        name: &str,
    ) -> Result<(), ApiError> {
        let _ = self.load_function(account, name).await?;
        let before = self
            .kv
            .get(&idempotency_key(account, name))
            .await
            .map_err(store_error)?;
        if !self
            .kv
            .delete(&idempotency_key(account, name))
            .await
            .map_err(store_error)?
        {
            return Err(ApiError::not_found(format!(
                "function {name} is not idempotent"
            )));
        }
        self.forget(account, name);
        self.announce(
            account,
            crate::lifecycle::EventType::IdempotencyChanged,
            function_arn(&self.options.region, account, name),
            before.and_then(|entry| serde_json::from_slice(&entry.value).ok()),
            None,
        )
        .await?;
        Ok(())
    }
}

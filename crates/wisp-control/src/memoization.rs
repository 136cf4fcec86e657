//! Pure functions (`/wisp/v1/functions/{name}/memoization`): a function declared pure has its successful
//! results cached by the engine. The declaration is stored at `pure/{account}/{function}` and travels in the
//! cached resolution, like the idempotency settings.

use wisp_types::*;

use crate::{ControlPlane, decode, encode, lambda_timestamp, store_error};

pub(crate) fn memoization_key(account: &AccountId, name: &str) -> String {
    format!("pure/{account}/{name}")
}

impl ControlPlane {
    /// Declares a function pure, with how long its results are kept.
    pub async fn put_memoization_config(
        &self,
        account: &AccountId,
        name: &str,
        mut config: MemoizationConfig,
    ) -> Result<MemoizationConfig, ApiError> {
        let _ = self.load_function(account, name).await?;
        config.validate()?;
        config.last_modified = lambda_timestamp(chrono::Utc::now());
        let before = self
            .kv
            .get(&memoization_key(account, name))
            .await
            .map_err(store_error)?;
        self.kv
            .put(&memoization_key(account, name), encode(&config), None)
            .await
            .map_err(store_error)?;
        self.forget(account, name);
        self.announce(
            account,
            crate::lifecycle::EventType::MemoizationChanged,
            function_arn(&self.options.region, account, name),
            before.and_then(|entry| serde_json::from_slice(&entry.value).ok()),
            crate::lifecycle::snapshot(&config),
        )
        .await?;
        Ok(config)
    }

    pub async fn get_memoization_config(
        &self,
        account: &AccountId,
        name: &str,
    ) -> Result<MemoizationConfig, ApiError> {
        let _ = self.load_function(account, name).await?;
        self.stored_memoization_config(account, name)
            .await?
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "function {name} is not declared pure; hint: PUT /wisp/v1/functions/{name}/memoization with TtlSeconds"
                ))
            })
    }

    pub(crate) async fn stored_memoization_config(
        &self,
        account: &AccountId,
        name: &str,
    ) -> Result<Option<MemoizationConfig>, ApiError> {
        let key = memoization_key(account, name);
        match self.kv.get(&key).await.map_err(store_error)? {
            Some(entry) => Ok(Some(decode(&key, &entry.value)?)),
            None => Ok(None),
        }
    }

    /// Stops caching; results already cached expire on their own and are no longer read.
    pub async fn delete_memoization_config(
        &self,
        account: &AccountId,
        name: &str,
    ) -> Result<(), ApiError> {
        let _ = self.load_function(account, name).await?;
        let before = self
            .kv
            .get(&memoization_key(account, name))
            .await
            .map_err(store_error)?;
        if !self
            .kv
            .delete(&memoization_key(account, name))
            .await
            .map_err(store_error)?
        {
            return Err(ApiError::not_found(format!(
                "function {name} is not declared pure"
            )));
        }
        self.forget(account, name);
        self.announce(
            account,
            crate::lifecycle::EventType::MemoizationChanged,
            function_arn(&self.options.region, account, name),
            before.and_then(|entry| serde_json::from_slice(&entry.value).ok()),
            None,
        )
        .await?;
        Ok(())
    }
}

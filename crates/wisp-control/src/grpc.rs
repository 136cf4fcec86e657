//! Which function serves which gRPC method: the index `grpc/{account}/{package.Service/Method}` →
//! function name, written when a signature with a `GrpcMethod`, or routes with `GrpcMethod` rules,
//! are set (`docs/GRPC.md`). A function serves its signature's method and one method per such route.
//!
//! The index is a hint: the gateway trusts an entry only when the function's current signature or
//! one of its `$LATEST` routes still binds the method ([`ControlPlane::grpc_bound`]), so a deleted
//! function or a changed signature never serves a stale method, and nothing has to clean the index up
//! on delete.

use std::sync::Arc;

use wisp_types::*;

use crate::{ControlPlane, Resolved};

fn grpc_key(account: &AccountId, method: &str) -> String {
    format!("grpc/{}/{method}", account.0)
}

fn store_error(error: impl std::fmt::Display) -> ApiError {
    ApiError::internal(format!("store unavailable: {error}"))
}

impl ControlPlane {
    /// The `$LATEST` resolution of `name` when its signature, or one of its routes, still binds
    /// `method` (no store read when the resolution is cached).
    pub async fn grpc_bound(
        &self,
        account: &AccountId,
        name: &str,
        method: &str,
    ) -> Result<Option<Arc<Resolved>>, ApiError> {
        let reference = FunctionRef {
            account: None,
            region: None,
            name: name.to_string(),
            qualifier: None,
        };
        let resolved = match self.resolve(account, &reference, None).await {
            Ok(resolved) => resolved,
            Err(error) if error.code == ErrorCode::ResourceNotFound => return Ok(None),
            Err(error) => return Err(error),
        };
        let serves = resolved
            .typed_of(&resolved.primary)
            .is_some_and(|typed| typed.serves(method));
        Ok(serves.then_some(resolved))
    }

    /// Refuses a method another function of the account already serves.
    pub(crate) async fn check_grpc_method_free(
        &self,
        account: &AccountId,
        name: &str,
        method: &str,
    ) -> Result<(), ApiError> {
        let Some(entry) = self
            .kv
            .get(&grpc_key(account, method))
            .await
            .map_err(store_error)?
        else {
            return Ok(());
        };
        let holder = String::from_utf8_lossy(&entry.value).into_owned();
        if holder != name && self.grpc_bound(account, &holder, method).await?.is_some() {
            return Err(ApiError::conflict(format!(
                "the gRPC method {method} is already served by function {holder}; hint: unbind it there first (its signature's GrpcMethod, or a route's GrpcMethod rule: wisp routes {holder})"
            )));
        }
        Ok(())
    }

    /// Points the index at `name` for the methods it binds now (`after`) and drops those it bound
    /// before and no longer does.
    pub(crate) async fn index_grpc_methods(
        &self,
        account: &AccountId,
        name: &str,
        before: &[String],
        after: &[String],
    ) -> Result<(), ApiError> {
        for old in before.iter().filter(|old| !after.contains(old)) {
            let key = grpc_key(account, old);
            if let Some(entry) = self.kv.get(&key).await.map_err(store_error)?
                && entry.value == name.as_bytes()
            {
                // A concurrent change of the same key is left alone: the entry is only a hint.
                let _ = self.kv.compare_and_delete(&key, entry.revision).await;
            }
        }
        for method in after {
            self.kv
                .put(&grpc_key(account, method), name.as_bytes().to_vec(), None)
                .await
                .map_err(store_error)?;
        }
        Ok(())
    }

    /// The function the index names for `method` (`package.Service/Method`) in `account`; confirm it
    /// with [`ControlPlane::grpc_bound`].
    pub async fn grpc_index(
        &self,
        account: &AccountId,
        method: &str,
    ) -> Result<Option<String>, ApiError> {
        Ok(self
            .kv
            .get(&grpc_key(account, method))
            .await
            .map_err(store_error)?
            .map(|entry| String::from_utf8_lossy(&entry.value).into_owned()))
    }

    /// Every gRPC method of the account that a function serves, with that function's resolution.
    pub async fn grpc_bindings(
        &self,
        account: &AccountId,
    ) -> Result<Vec<(String, Arc<Resolved>)>, ApiError> {
        let prefix = format!("grpc/{}/", account.0);
        let mut bindings = Vec::new();
        for (key, entry) in self.scan_all(&prefix).await? {
            let method = key[prefix.len()..].to_string();
            let name = String::from_utf8_lossy(&entry.value).into_owned();
            if let Some(resolved) = self.grpc_bound(account, &name, &method).await? {
                bindings.push((method, resolved));
            }
        }
        Ok(bindings)
    }
}

/// `package.Service/Method` of a method descriptor.
pub fn grpc_name(method: &prost_reflect::MethodDescriptor) -> String {
    format!("{}/{}", method.parent_service().full_name(), method.name())
}

//! `wisp check`: every place one function of an account is wired to another, checked again as it
//! would be checked if it were made now — the target exists, is in the account, and accepts what the
//! source sends (`compat`). Wiring is checked when it is made; this finds wirings that a later change
//! broke (a signature changed, a target deleted).

use serde::Serialize;
use wisp_types::*;

use crate::ControlPlane;

/// One wiring and what is wrong with it, if anything.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Wiring {
    /// The function (qualified) whose outcomes or events flow.
    pub source: String,
    /// What kind of wiring, e.g. `OnSuccess destination`.
    pub kind: String,
    pub target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// Every wiring of an account, with the number that have a problem.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct WiringReport {
    pub wirings: Vec<Wiring>,
    pub problems: usize,
}

impl ControlPlane {
    pub async fn check_wiring(&self, account: &AccountId) -> Result<WiringReport, ApiError> {
        let mut wirings = Vec::new();
        let mut marker = None;
        loop {
            let (functions, next) = self
                .list_functions(account, marker.as_deref(), 1000)
                .await?;
            for function in functions {
                self.check_destinations(account, &function.function_name, &mut wirings)
                    .await?;
                self.check_hooks(account, &function.function_name, &mut wirings)
                    .await?;
            }
            match next {
                Some(next) => marker = Some(next),
                None => break,
            }
        }
        let problems = wirings
            .iter()
            .filter(|wiring| wiring.problem.is_some())
            .count();
        Ok(WiringReport { wirings, problems })
    }

    async fn check_hooks(
        &self,
        account: &AccountId,
        name: &str,
        wirings: &mut Vec<Wiring>,
    ) -> Result<(), ApiError> {
        let Some(hooks) = self.stored_hooks(account, name).await? else {
            return Ok(());
        };
        let source = match self.get_signature(account, name, None).await {
            Ok(source) => source,
            Err(error) if error.code == ErrorCode::ResourceNotFound => return Ok(()),
            Err(error) => return Err(error),
        };
        for (which, hook) in [("Pre", &hooks.pre), ("Post", &hooks.post)] {
            let Some(hook) = hook else { continue };
            let problem = self
                .check_hook(account, name, which, hook, source.as_ref())
                .await
                .err()
                .map(|error| error.message);
            wirings.push(Wiring {
                source: function_arn(&self.options.region, account, name),
                kind: format!("{which}-invocation hook"),
                target: hook.clone(),
                problem,
            });
        }
        Ok(())
    }

    async fn check_destinations(
        &self,
        account: &AccountId,
        name: &str,
        wirings: &mut Vec<Wiring>,
    ) -> Result<(), ApiError> {
        let configs = match self
            .list_event_invoke_configs(account, name, None, 10_000)
            .await
        {
            Ok((configs, _)) => configs,
            // Deleted while the account was being checked: nothing of it is wired any more.
            Err(error) if error.code == ErrorCode::ResourceNotFound => return Ok(()),
            Err(error) => return Err(error),
        };
        for config in configs {
            let qualifier = FunctionRef::parse(&config.function_arn)?.qualifier;
            let source = self.get_signature(account, name, qualifier).await?;
            for (which, target) in [
                (
                    "OnSuccess",
                    &config.destination_config.on_success.destination,
                ),
                (
                    "OnFailure",
                    &config.destination_config.on_failure.destination,
                ),
            ] {
                let Some(target) = target else { continue };
                let problem = self
                    .check_destination(account, name, which, target, source.as_ref())
                    .await
                    .err()
                    .map(|error| error.message);
                wirings.push(Wiring {
                    source: config.function_arn.clone(),
                    kind: format!("{which} destination"),
                    target: target.clone(),
                    problem,
                });
            }
        }
        Ok(())
    }
}

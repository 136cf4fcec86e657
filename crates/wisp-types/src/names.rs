//! Names, qualifiers and ARNs, and parsing of every form a caller may use to name a function.
//!
//! Parsing is strict: anything Lambda would refuse is refused here with a message naming the value.

use std::fmt;

use crate::error::{ApiError, ErrorCode};

/// A 12-digit account id.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct AccountId(pub String);

impl AccountId {
    pub fn parse(text: &str) -> Result<AccountId, ApiError> {
        if text.len() == 12 && text.bytes().all(|b| b.is_ascii_digit()) {
            Ok(AccountId(text.to_string()))
        } else {
            Err(ApiError::invalid(format!(
                "account id {text:?} must be 12 digits"
            )))
        }
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a function or alias name: 1–64 characters of letters, digits, `-` and `_`.
pub fn validate_function_name(name: &str) -> Result<(), ApiError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidParameterValue,
            format!(
                "function name {name:?} is invalid: use 1 to 64 letters, digits, hyphens or underscores"
            ),
        ))
    }
}

/// Checks an alias name: 1–128 characters of letters, digits, `-` and `_`, not only digits.
pub fn validate_alias_name(name: &str) -> Result<(), ApiError> {
    let valid = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !name.bytes().all(|b| b.is_ascii_digit());
    if valid {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "alias name {name:?} is invalid: use 1 to 128 letters, digits, hyphens or underscores, not only digits"
        )))
    }
}

/// Which version of a function an invocation or request addresses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Qualifier {
    Latest,
    Version(u64),
    Alias(String),
}

impl Qualifier {
    pub fn parse(text: &str) -> Result<Qualifier, ApiError> {
        if text == "$LATEST" {
            return Ok(Qualifier::Latest);
        }
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return text
                .parse::<u64>()
                .ok()
                .filter(|number| *number > 0)
                .map(Qualifier::Version)
                .ok_or_else(|| {
                    ApiError::invalid(format!("version {text:?} is not a valid version number"))
                });
        }
        validate_alias_name(text)?;
        Ok(Qualifier::Alias(text.to_string()))
    }
}

impl fmt::Display for Qualifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Qualifier::Latest => f.write_str("$LATEST"),
            Qualifier::Version(number) => write!(f, "{number}"),
            Qualifier::Alias(name) => f.write_str(name),
        }
    }
}

/// A function named in a request: any of `name`, `name:qualifier`, `account:function:name[:qualifier]`
/// or `arn:aws:lambda:region:account:function:name[:qualifier]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRef {
    pub account: Option<AccountId>,
    pub region: Option<String>,
    pub name: String,
    pub qualifier: Option<Qualifier>,
}

impl FunctionRef {
    pub fn parse(text: &str) -> Result<FunctionRef, ApiError> {
        let parts: Vec<&str> = text.split(':').collect();
        let (account, region, name, qualifier) = match parts.as_slice() {
            [name] => (None, None, *name, None),
            [name, qualifier] => (None, None, *name, Some(*qualifier)),
            [account, "function", name] => (Some(*account), None, *name, None),
            [account, "function", name, qualifier] => {
                (Some(*account), None, *name, Some(*qualifier))
            }
            [
                "arn",
                partition,
                "lambda",
                region,
                account,
                "function",
                name,
            ] if partition.starts_with("aws") => (Some(*account), Some(*region), *name, None),
            [
                "arn",
                partition,
                "lambda",
                region,
                account,
                "function",
                name,
                qualifier,
            ] if partition.starts_with("aws") => {
                (Some(*account), Some(*region), *name, Some(*qualifier))
            }
            _ => {
                return Err(ApiError::invalid(format!(
                    "{text:?} is not a function name, name:qualifier, partial ARN or ARN"
                )));
            }
        };
        validate_function_name(name)?;
        Ok(FunctionRef {
            account: account.map(AccountId::parse).transpose()?,
            region: region.map(str::to_string),
            name: name.to_string(),
            qualifier: qualifier.map(Qualifier::parse).transpose()?,
        })
    }
}

/// `arn:aws:lambda:{region}:{account}:function:{name}`.
pub fn function_arn(region: &str, account: &AccountId, name: &str) -> String {
    format!("arn:aws:lambda:{region}:{account}:function:{name}")
}

/// The ARN with a qualifier appended (`…:function:name:qualifier`).
pub fn qualified_arn(region: &str, account: &AccountId, name: &str, qualifier: &str) -> String {
    format!("arn:aws:lambda:{region}:{account}:function:{name}:{qualifier}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_ref_accepts_every_lambda_form() {
        let cases = [
            ("hello", None, "hello", None),
            ("hello:3", None, "hello", Some(Qualifier::Version(3))),
            ("hello:$LATEST", None, "hello", Some(Qualifier::Latest)),
            (
                "hello:live",
                None,
                "hello",
                Some(Qualifier::Alias("live".into())),
            ),
            (
                "123456789012:function:hello",
                Some("123456789012"),
                "hello",
                None,
            ),
            (
                "123456789012:function:hello:live",
                Some("123456789012"),
                "hello",
                Some(Qualifier::Alias("live".into())),
            ),
            (
                "arn:aws:lambda:us-east-1:123456789012:function:hello",
                Some("123456789012"),
                "hello",
                None,
            ),
            (
                "arn:aws:lambda:us-east-1:123456789012:function:hello:7",
                Some("123456789012"),
                "hello",
                Some(Qualifier::Version(7)),
            ),
        ];
        for (text, account, name, qualifier) in cases {
            let parsed = FunctionRef::parse(text).unwrap_or_else(|error| panic!("{text}: {error}"));
            assert_eq!(
                parsed.account.as_ref().map(|a| a.0.as_str()),
                account,
                "{text}"
            );
            assert_eq!(parsed.name, name, "{text}");
            assert_eq!(parsed.qualifier, qualifier, "{text}");
        }
    }

    #[test]
    fn function_ref_refuses_malformed_names() {
        for text in [
            "",
            "a b",
            "x".repeat(65).as_str(),
            "a:b:c",
            "arn:aws:s3:::bucket",
            "hello:0",
            "hello:",
            "12:function:x",
        ] {
            assert!(
                FunctionRef::parse(text).is_err(),
                "{text:?} should be refused"
            );
        }
    }
}

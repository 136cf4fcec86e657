//! The error catalogue: every error Wisp answers with, by its AWS name and HTTP status.
//!
//! Names follow Lambda's exactly (clients such as boto3 switch on them); messages are lowercase,
//! name the thing that failed and its value, and may end with a hint.

use std::fmt;

/// An error type Wisp can answer with; [`ErrorCode::aws_name`] is what goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ErrorCode {
    ResourceNotFound,
    ProvisionedConcurrencyConfigNotFound,
    ResourceConflict,
    InvalidParameterValue,
    InvalidRequestContent,
    RequestTooLarge,
    TooManyRequests,
    UnrecognizedClient,
    InvalidSignature,
    MissingAuthenticationToken,
    AccessDenied,
    CodeStorageExceeded,
    PreconditionFailed,
    UnsupportedMediaType,
    /// The same idempotency key was sent with a different payload.
    IdempotencyKeyMismatch,
    /// The event does not match the function's input type.
    InputSchemaViolation,
    /// The function has routes and the event matches none.
    NoMatchingRoute,
    /// A pre-invocation hook rejected the call.
    InvocationRejected,
    /// An event-bus rule's pattern is malformed.
    InvalidEventPattern,
    Service,
}

impl ErrorCode {
    pub fn aws_name(self) -> &'static str {
        match self {
            ErrorCode::ResourceNotFound => "ResourceNotFoundException",
            ErrorCode::ProvisionedConcurrencyConfigNotFound => {
                "ProvisionedConcurrencyConfigNotFoundException"
            }
            ErrorCode::ResourceConflict => "ResourceConflictException",
            ErrorCode::InvalidParameterValue => "InvalidParameterValueException",
            ErrorCode::InvalidRequestContent => "InvalidRequestContentException",
            ErrorCode::RequestTooLarge => "RequestTooLargeException",
            ErrorCode::TooManyRequests => "TooManyRequestsException",
            ErrorCode::UnrecognizedClient => "UnrecognizedClientException",
            ErrorCode::InvalidSignature => "InvalidSignatureException",
            ErrorCode::MissingAuthenticationToken => "MissingAuthenticationTokenException",
            ErrorCode::AccessDenied => "AccessDeniedException",
            ErrorCode::CodeStorageExceeded => "CodeStorageExceededException",
            ErrorCode::PreconditionFailed => "PreconditionFailedException",
            ErrorCode::UnsupportedMediaType => "UnsupportedMediaTypeException",
            ErrorCode::IdempotencyKeyMismatch => "IdempotencyKeyMismatchException",
            ErrorCode::InputSchemaViolation => "InputSchemaViolationException",
            ErrorCode::NoMatchingRoute => "NoMatchingRouteException",
            ErrorCode::InvocationRejected => "InvocationRejectedException",
            ErrorCode::InvalidEventPattern => "InvalidEventPatternException",
            ErrorCode::Service => "ServiceException",
        }
    }

    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::ResourceNotFound | ErrorCode::ProvisionedConcurrencyConfigNotFound => 404,
            ErrorCode::ResourceConflict => 409,
            ErrorCode::InvalidParameterValue
            | ErrorCode::InvalidRequestContent
            | ErrorCode::InputSchemaViolation
            | ErrorCode::NoMatchingRoute
            | ErrorCode::InvocationRejected
            | ErrorCode::InvalidEventPattern => 400,
            ErrorCode::CodeStorageExceeded => 400,
            ErrorCode::RequestTooLarge => 413,
            ErrorCode::TooManyRequests => 429,
            ErrorCode::UnrecognizedClient
            | ErrorCode::InvalidSignature
            | ErrorCode::MissingAuthenticationToken
            | ErrorCode::AccessDenied => 403,
            ErrorCode::PreconditionFailed => 412,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::IdempotencyKeyMismatch => 422,
            ErrorCode::Service => 500,
        }
    }

    /// Whether the same request may succeed later without change.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorCode::TooManyRequests | ErrorCode::Service)
    }
}

/// An error answered to an API caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// For throttling: the `Reason` field (e.g. `ReservedFunctionConcurrentInvocationLimitExceeded`).
    pub reason: Option<&'static str>,
    /// For throttling: seconds to wait, sent as `Retry-After`.
    pub retry_after_seconds: Option<u32>,
    /// The request id of an invocation the error was recorded under, sent as `x-amzn-RequestId`.
    pub request_id: Option<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            reason: None,
            retry_after_seconds: None,
            request_id: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::InvalidParameterValue, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::ResourceNotFound, message)
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::ResourceConflict, message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Service, message)
    }

    pub fn throttled(reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code: ErrorCode::TooManyRequests,
            message: message.into(),
            reason: Some(reason),
            retry_after_seconds: Some(1),
            request_id: None,
        }
    }

    /// The same error, answered under an invocation's request id.
    pub fn with_request_id(mut self, request_id: impl Into<String>) -> ApiError {
        self.request_id = Some(request_id.into());
        self
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.aws_name(), self.message)
    }
}

impl std::error::Error for ApiError {}

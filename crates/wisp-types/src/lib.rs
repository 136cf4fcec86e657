//! Plain data shared by every Wisp crate: names and ARNs, function, version and alias configurations
//! (serialised in AWS Lambda's JSON shape), invocation records and the error catalogue.
//!
//! This crate must never do I/O: no files, no sockets, no clocks beyond formatting a given time.

pub mod config;
pub mod error;
pub mod eventstream;
pub mod invocation;
pub mod names;
pub mod receipt;
pub mod signature;
pub mod sigv4;

pub use config::*;
pub use error::{ApiError, ErrorCode};
pub use invocation::*;
pub use names::*;
pub use signature::{
    ProtobufEncoding, ProtobufType, Route, RouteMatch, Signature, TypeSpec, Violation,
};

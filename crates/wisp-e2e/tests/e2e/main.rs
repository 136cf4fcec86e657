//! End-to-end tests: each starts the real `wisp` binary on a random port with its own temp data
//! directory and drives it with aws-sdk-rust over plain HTTP.

mod concurrency;
mod events;
mod python;
mod restart;
mod sdk;
mod streaming;
mod support;

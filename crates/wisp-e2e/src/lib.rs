//! End-to-end tests for Wisp: `tests/e2e` starts the real `wisp` binary (one server per test, on a
//! temp data directory) and drives it with aws-sdk-rust over plain HTTP. This crate has no library
//! code; the helpers are in `tests/e2e/support.rs`.
//!
//! Run with `cargo nextest run -p wisp-e2e`. The server is `$WISP_BIN`, else `target/debug/wisp`;
//! it and the `rust-echo` fixture are built on first use when missing.

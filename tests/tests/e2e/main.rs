//! The end-to-end tests: one test binary, one module per area. The harness (starting the relay,
//! driving bridge-client as an IDE, the process table, metrics) is the `mcp_bridge_tests` library
//! in tests/src.
//!
//! Run one area with `cargo test -p mcp-bridge-tests --test e2e -- tunnel::` (after
//! `cargo build --workspace --bins`).

mod abuse;
mod admin;
mod conformance;
mod conformance_client;
mod floods;
mod hosting;
mod http_carrier;
mod http_upstream;
mod idp;
mod lifecycle;
mod oauth;
mod oauth_upstream;
mod observability;
mod operations;
mod peers;
mod policy;
mod reload;
mod resilience;
mod scale_out;
mod security;
mod tunnel;

//! The end-to-end test harness: start the real relay binary on a free loopback port, drive the
//! real bridge-client binary as an IDE would (JSON lines on its stdin/stdout), find the pinned
//! third-party peers, and inspect the process table for leftovers.
//!
//! Everything waits on a condition with a deadline; nothing sleeps for readiness. One module a
//! job; every item the tests use is re-exported here, so they import from the crate root.

#![allow(clippy::unwrap_used, clippy::print_stdout, unreachable_pub)]

mod config;
mod ide;
mod metrics;
mod paths;
mod peers;
mod process;
mod procfs;
mod prometheus;
mod relay;

pub mod http_raw;
pub mod pki;
pub mod proxy;
pub mod ws;

pub use config::{demo_tool, fixture_tool, hash_token, relay_config, token_auth, tool_table};
pub use ide::Ide;
pub use metrics::{http_get, parse_metrics};
pub use paths::{bin, fixture, python3, repo_root, TempDir};
pub use peers::{
    assert_checks, browser_runs, run_driver, run_driver_interactive, signin_client,
    start_announcing, Peers, SETUP_COMMAND,
};
pub use process::{
    reap, run_bounded, signal, terminate_and_reap, wait_child, wait_until, Finished, Log,
};
pub use procfs::{alive, children_of, cpu_time, mib, proc_status_bytes};
pub use prometheus::{prometheus_bin, promtool, Prometheus, SCRAPE_INTERVAL};
pub use relay::Relay;

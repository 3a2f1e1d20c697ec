//! A client of the 2026-07-28 era (the Python SDK in `auto` mode: `server/discover` first)
//! against a tool that speaks only the handshake era (the demo tool) over the relay's
//! Streamable HTTP: the relay answers the session-less probe with a `400` that is no modern
//! error, the client falls back to `initialize` as the spec's compatibility rules have it, and
//! everything works in a 2025-11-25 session. (A tool that speaks 2026-07-28 is served without a
//! session: `http_carrier::modern`.)

use anyhow::Result;
use mcp_bridge_tests::{assert_checks, demo_tool, run_driver, Peers, Relay};
use std::process::Command;

use super::{http_url, DRIVER_LIMIT};

#[test]
fn a_modern_client_falls_back_and_works_over_http() -> Result<()> {
    let peers = Peers::require();
    let relay = Relay::start(&demo_tool("demo", ""))?;
    let mut cmd = Command::new(&peers.python);
    cmd.arg(peers.script("py_client.py"))
        .args(["--scenario", "demo", "--mode", "auto", "--url"])
        .arg(http_url(&relay, "demo"))
        .arg("--");
    let summary = run_driver(&mut cmd, DRIVER_LIMIT)?;
    assert_eq!(summary["era"], "legacy", "{summary}");
    assert_checks(
        &summary,
        &[
            "connect",
            "list_tools",
            "echo",
            "slow_progress",
            "sample",
            "cancel",
            "ping",
        ],
    );
    Ok(())
}

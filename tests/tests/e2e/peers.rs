//! End-to-end with real third-party MCP peers (pinned; installed by scripts/install-peers.sh):
//! the Python SDK and the TypeScript SDK as the IDE, server-everything and mcp-server-time as the
//! hosted tools. Each driver runs a scenario and reports the checks it passed.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use anyhow::Result;
use mcp_bridge_tests::{
    alive, assert_checks, bin, demo_tool, run_driver, run_driver_interactive, tool_table,
    wait_until, Peers, Relay,
};
use serde_json::Value;

const DRIVER_LIMIT: Duration = Duration::from_secs(90);

fn config(peers: &Peers) -> String {
    [
        demo_tool("demo", ""),
        peers.everything_table(),
        tool_table("time", &peers.venv_bin.join("mcp-server-time"), &[], ""),
    ]
    .join("\n")
}

fn relay(peers: &Peers) -> Result<Relay> {
    Relay::start(&config(peers))
}

/// The Python SDK client, starting bridge-client as its stdio server.
fn python(peers: &Peers, relay: &Relay, scenario: &str, mode: &str, tool: &str) -> Result<Value> {
    let client = bin("bridge-client");
    let mut cmd = Command::new(&peers.python);
    cmd.arg(peers.script("py_client.py"))
        .args(["--scenario", scenario, "--mode", mode, "--"])
        .arg(client)
        .arg(relay.url(tool));
    run_driver(&mut cmd, DRIVER_LIMIT)
}

/// The TypeScript SDK client over stdio through bridge-client.
fn ts_stdio(peers: &Peers, relay: &Relay, scenario: &str, tool: &str) -> Result<Value> {
    let mut cmd = Command::new("node");
    cmd.arg(peers.script("ts_client.mjs"))
        .args(["--transport", "stdio", "--scenario", scenario, "--"])
        .arg(bin("bridge-client"))
        .arg(relay.url(tool))
        .env("PEERS_NODE_MODULES", &peers.node_modules);
    run_driver(&mut cmd, DRIVER_LIMIT)
}

/// The TypeScript SDK's WebSocketClientTransport straight to the relay (subprotocol `mcp`).
fn ts_ws(peers: &Peers, relay: &Relay, scenario: &str, tool: &str) -> Result<Value> {
    let mut cmd = Command::new("node");
    cmd.arg(peers.script("ts_client.mjs"))
        .args(["--transport", "ws", "--scenario", scenario, "--url"])
        .arg(relay.url(tool))
        .env("PEERS_NODE_MODULES", &peers.node_modules);
    run_driver(&mut cmd, DRIVER_LIMIT)
}

#[test]
fn python_sdk_with_server_everything() -> Result<()> {
    let peers = Peers::require();
    let relay = relay(&peers)?;
    let summary = python(&peers, &relay, "everything", "legacy", "everything")?;
    assert_checks(
        &summary,
        &[
            "connect",
            "list_tools",
            "echo",
            "get_sum",
            "progress",
            "resources",
            "prompts",
            "cancel",
            "after_cancel",
            "sampling",
            "elicitation",
            "roots",
            "ping",
        ],
    );
    // The tool's own requests reused ids the client was using: the bridge kept them apart.
    assert!(
        summary["client_request_ids_overlapping"]
            .as_array()
            .is_some_and(|a| !a.is_empty()),
        "expected overlapping ids: {summary}"
    );
    relay.wait_no_children(Duration::from_secs(10))?;
    Ok(())
}

#[test]
fn python_sdk_auto_mode_falls_back_through_the_bridge() -> Result<()> {
    let peers = Peers::require();
    let relay = relay(&peers)?;
    // server/discover is answered "method not found" by the tool, through the bridge; the SDK
    // falls back to the handshake.
    let summary = python(&peers, &relay, "everything", "auto", "everything")?;
    assert_eq!(summary["era"], "legacy", "{summary}");
    let summary = python(&peers, &relay, "demo", "auto", "demo")?;
    assert_eq!(summary["era"], "legacy", "{summary}");
    relay.wait_no_children(Duration::from_secs(10))?;
    Ok(())
}

#[test]
fn python_sdk_with_mcp_server_time_in_both_eras() -> Result<()> {
    let peers = Peers::require();
    let relay = relay(&peers)?;
    let modern = python(&peers, &relay, "time", "auto", "time")?;
    assert_eq!(modern["protocol_version"], "2026-07-28", "{modern}");
    assert_checks(
        &modern,
        &[
            "list_tools",
            "get_current_time",
            "convert_time",
            "unknown_tool",
        ],
    );
    let legacy = python(&peers, &relay, "time", "legacy", "time")?;
    assert_ne!(legacy["protocol_version"], "2026-07-28", "{legacy}");
    assert_checks(
        &legacy,
        &["list_tools", "get_current_time", "convert_time", "ping"],
    );
    relay.wait_no_children(Duration::from_secs(10))?;
    Ok(())
}

#[test]
fn python_sdk_with_the_demo_tool() -> Result<()> {
    let peers = Peers::require();
    let relay = relay(&peers)?;
    let summary = python(&peers, &relay, "demo", "legacy", "demo")?;
    assert_checks(
        &summary,
        &[
            "list_tools",
            "echo",
            "add",
            "slow_progress",
            "sample",
            "unknown_tool",
            "echo_after_error",
            "cancel",
        ],
    );
    relay.wait_no_children(Duration::from_secs(10))?;
    Ok(())
}

#[test]
fn typescript_sdk_over_stdio_through_bridge_client() -> Result<()> {
    let peers = Peers::require();
    let relay = relay(&peers)?;
    let summary = ts_stdio(&peers, &relay, "everything", "everything")?;
    assert_checks(
        &summary,
        &[
            "connect",
            "list_tools",
            "echo",
            "get_sum",
            "progress",
            "sampling",
            "cancel",
            "close",
        ],
    );
    let summary = ts_stdio(&peers, &relay, "demo", "demo")?;
    assert_checks(
        &summary,
        &[
            "connect",
            "echo",
            "add",
            "progress",
            "sampling",
            "unknown_tool",
            "close",
        ],
    );
    relay.wait_no_children(Duration::from_secs(10))?;
    Ok(())
}

#[test]
fn typescript_sdk_websocket_transport_straight_to_the_relay() -> Result<()> {
    let peers = Peers::require();
    let relay = relay(&peers)?;
    let summary = ts_ws(&peers, &relay, "everything", "everything")?;
    assert_checks(
        &summary,
        &[
            "connect",
            "list_tools",
            "echo",
            "get_sum",
            "progress",
            "sampling",
            "close",
        ],
    );
    let summary = ts_ws(&peers, &relay, "demo", "demo")?;
    assert_checks(
        &summary,
        &[
            "connect",
            "echo",
            "add",
            "progress",
            "sampling",
            "unknown_tool",
            "close",
        ],
    );
    relay.wait_no_children(Duration::from_secs(10))?;
    Ok(())
}

/// The relay is killed (SIGKILL, as in a crash) and restarted mid-session. The Python SDK on the
/// IDE side keeps its one stdio server (bridge-client) throughout: the call in flight gets an
/// error, and later calls succeed on a fresh session — with the old-era handshake replayed for
/// server-everything, and with nothing to replay for mcp-server-time in the 2026-07-28 era.
#[test]
fn python_sdk_keeps_working_across_a_relay_restart_in_both_eras() -> Result<()> {
    let peers = Peers::require();
    for (scenario, mode, tool) in [
        ("restart-everything", "legacy", "everything"),
        ("restart-time", "auto", "time"),
    ] {
        let first = relay(&peers)?;
        let addr = first.addr;
        let mut current = Some(first);
        let mut cmd = Command::new(&peers.python);
        cmd.arg(peers.script("py_client.py"))
            .args([
                "--scenario",
                scenario,
                "--mode",
                mode,
                "--timeout",
                "80",
                "--",
            ])
            .arg(bin("bridge-client"))
            .arg(format!("ws://{addr}/mcp/{tool}"));
        let summary = run_driver_interactive(&mut cmd, Duration::from_secs(120), || {
            let old = current.take().context("no relay to kill")?;
            let tools = old.kill()?;
            // The kernel ends a dead relay's tools (parent-death signal): nothing is left over.
            wait_until(Duration::from_secs(10), || tools.iter().all(|p| !alive(*p)))
                .context("tools of the killed relay are still running")?;
            current = Some(Relay::start_with("", &config(&peers), Some(addr))?);
            Ok(())
        })?;
        println!("{scenario}: {summary}");
        // Calls made after the relay is back go straight to the new session: no retry needed.
        assert_eq!(summary["retries_after_restart"], 0, "{summary}");
        if scenario == "restart-everything" {
            assert_checks(
                &summary,
                &[
                    "inflight_failed",
                    "echo_after_restart",
                    "get_sum_after_restart",
                    "list_after_restart",
                ],
            );
        } else {
            assert_eq!(summary["protocol_version"], "2026-07-28", "{summary}");
            assert_checks(&summary, &["time_after_restart", "convert_after_restart"]);
        }
        if let Some(relay) = current.take() {
            relay.wait_no_children(Duration::from_secs(10))?;
        }
    }
    Ok(())
}

//! MCP Streamable HTTP through nginx in front of two relays: every `Mcp-Session-Id` starts
//! with the `node_id` of the relay that holds it, and the committed nginx.conf sends each
//! request of a session to that node (any request without a session to any node). Without
//! that, half the requests of a session would reach the other node and get 404.

use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use mcp_bridge_tests::http_raw::{raw, Resp};
use mcp_bridge_tests::{
    assert_checks, demo_tool, relay_config, run_driver, wait_until, Peers, Relay,
};
use serde_json::Value;

use super::nginx::Nginx;
use super::{sessions, T};

const ACCEPT_BOTH: (&str, &str) = ("Accept", "application/json, text/event-stream");
const JSON: (&str, &str) = ("Content-Type", "application/json");
const VERSION: (&str, &str) = ("MCP-Protocol-Version", "2025-11-25");
const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#;
const INITIALIZED: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;

/// Two relays named `relay-1` and `relay-2` (the names the committed nginx.conf maps), through
/// `MCP_BRIDGE_NODE_ID`, each hosting the demo tool.
fn named_relays() -> Result<[Relay; 2]> {
    let config = relay_config("", &demo_tool("demo", ""));
    Ok([
        Relay::start_full(&config, &[("MCP_BRIDGE_NODE_ID", "relay-1")], &[])?,
        Relay::start_full(&config, &[("MCP_BRIDGE_NODE_ID", "relay-2")], &[])?,
    ])
}

/// `initialize` through nginx; the new session's id (checked to carry a node's name).
fn open(nginx: &Nginx) -> Result<String> {
    let r = raw(nginx.addr, "POST", "/mcp/demo", &[ACCEPT_BOTH, JSON], INIT)?;
    ensure!(r.status == 200, "initialize through nginx: {r:?}");
    let id = r.header("mcp-session-id").context("no Mcp-Session-Id")?;
    ensure!(
        id.starts_with("relay-1.") || id.starts_with("relay-2."),
        "the session id does not start with its node's name: {id}"
    );
    let id = id.to_owned();
    let r = post(nginx, &id, INITIALIZED)?;
    ensure!(r.status == 202, "notifications/initialized: {r:?}");
    Ok(id)
}

fn post(nginx: &Nginx, session: &str, body: &str) -> Result<Resp> {
    raw(
        nginx.addr,
        "POST",
        "/mcp/demo",
        &[ACCEPT_BOTH, JSON, VERSION, ("Mcp-Session-Id", session)],
        body,
    )
}

/// `echo` in `session`; the answer's JSON-RPC message (from the SSE body or a JSON body).
fn echo(nginx: &Nginx, session: &str, id: u64, text: &str) -> Result<(u16, Value)> {
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"text":"{text}"}}}}}}"#
    );
    let r = post(nginx, session, &body)?;
    let answer = r
        .messages()
        .into_iter()
        .map(|(_, v)| v)
        .find(|v| v.get("id").is_some())
        .unwrap_or(Value::Null);
    Ok((r.status, answer))
}

fn node_of(session: &str) -> usize {
    usize::from(session.starts_with("relay-2."))
}

#[test]
fn each_request_of_a_session_reaches_the_node_that_holds_it() -> Result<()> {
    let relays = named_relays()?;
    let nginx = Nginx::start(&[relays[0].addr, relays[1].addr])?;

    // Sessions until both nodes hold two (bounded: the pool hashes a random key per request).
    let mut open_sessions: Vec<String> = Vec::new();
    while (0..2).any(|n| open_sessions.iter().filter(|s| node_of(s) == n).count() < 2) {
        ensure!(
            open_sessions.len() < 40,
            "40 sessions did not reach both nodes twice: {open_sessions:?}"
        );
        open_sessions.push(open(&nginx)?);
    }
    // Each node runs exactly the tool processes of the sessions named after it.
    for (n, relay) in relays.iter().enumerate() {
        let named = open_sessions.iter().filter(|s| node_of(s) == n).count();
        wait_until(T, || sessions(relay) == named)
            .with_context(|| format!("relay-{} holds {} tools", n + 1, sessions(relay)))?;
    }
    // Five calls in every session, each answered by its own tool (none 404).
    for (i, session) in open_sessions.iter().enumerate() {
        for k in 0..5u64 {
            let text = format!("s{i}-c{k}");
            let (status, answer) = echo(&nginx, session, 10 + k, &text)?;
            assert_eq!(status, 200, "{session}: {answer}");
            assert_eq!(
                answer
                    .pointer("/result/content/0/text")
                    .and_then(Value::as_str),
                Some(text.as_str()),
                "{session}: {answer}"
            );
        }
    }
    // DELETE reaches the right node too: every tool process ends.
    for session in &open_sessions {
        let r = raw(
            nginx.addr,
            "DELETE",
            "/mcp/demo",
            &[VERSION, ("Mcp-Session-Id", session)],
            "",
        )?;
        assert_eq!(r.status, 200, "DELETE {session}: {r:?}");
    }
    for relay in &relays {
        relay.wait_idle("demo", T)?;
    }
    println!(
        "{} sessions: {} on relay-1, {} on relay-2; 5 calls each, all answered",
        open_sessions.len(),
        open_sessions.iter().filter(|s| node_of(s) == 0).count(),
        open_sessions.iter().filter(|s| node_of(s) == 1).count()
    );
    Ok(())
}

/// The Python SDK (a real Streamable HTTP client: POSTs, the GET stream, DELETE) through
/// nginx, several times so that both nodes serve it.
#[test]
fn python_sdk_over_streamable_http_through_nginx() -> Result<()> {
    let peers = Peers::require();
    let relays = named_relays()?;
    let nginx = Nginx::start(&[relays[0].addr, relays[1].addr])?;
    let url = format!("http://{}/mcp/demo", nginx.addr);
    for _ in 0..3 {
        let mut cmd = Command::new(&peers.python);
        cmd.arg(peers.script("py_client.py")).args([
            "--scenario",
            "demo",
            "--mode",
            "legacy",
            "--url",
            &url,
            "--",
        ]);
        let summary = run_driver(&mut cmd, Duration::from_secs(60))?;
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
    }
    for relay in &relays {
        relay.wait_idle("demo", T)?;
    }
    Ok(())
}

/// A node dies: a request of one of its sessions goes to the other node (nginx's `backup`),
/// which answers 404, never 502; the host's new session lands on the survivor and works.
#[test]
fn a_lost_node_answers_404_for_its_sessions_and_new_ones_work() -> Result<()> {
    let [r1, r2] = named_relays()?;
    let nginx = Nginx::start(&[r1.addr, r2.addr])?;
    let mut on_first = None;
    for _ in 0..40 {
        let s = open(&nginx)?;
        if node_of(&s) == 0 {
            on_first = Some(s);
            break;
        }
    }
    let lost = on_first.context("40 sessions, none on relay-1")?;
    let (status, answer) = echo(&nginx, &lost, 2, "before")?;
    assert_eq!(status, 200, "{answer}");

    r1.kill()?;
    let (status, answer) = echo(&nginx, &lost, 3, "after")?;
    assert_eq!(
        status, 404,
        "a session of the lost node: 404 (so the host starts a new session), got {status}: {answer}"
    );
    for k in 0..5u64 {
        let s = open(&nginx)?;
        assert_eq!(node_of(&s), 1, "a new session on the lost node: {s}");
        let (status, answer) = echo(&nginx, &s, 4 + k, "again")?;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            answer
                .pointer("/result/content/0/text")
                .and_then(Value::as_str),
            Some("again"),
            "{answer}"
        );
    }
    Ok(())
}

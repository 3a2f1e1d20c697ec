//! MCP Streamable HTTP (2025-11-25) at `/mcp/<tool>`, beside the WebSocket upgrade: the Python
//! and TypeScript SDK clients against server-everything hosted by the relay, and raw HTTP for
//! the refusals (401, 403, 404, 406, 413, 400) and a session's life (initialize, SSE answers,
//! 202, DELETE freeing the session and reaping its tool).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod cuts;
mod eras;
mod faults;
mod http2;
mod keep_alive;
mod many;
mod modern;

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use mcp_bridge_tests::http_raw::{raw, sse_events, Resp};
use mcp_bridge_tests::{
    assert_checks, demo_tool, relay_config, run_driver, token_auth, Peers, Relay,
};
use serde_json::Value;

const DRIVER_LIMIT: Duration = Duration::from_secs(90);
const ACCEPT_BOTH: (&str, &str) = ("Accept", "application/json, text/event-stream");
const JSON: (&str, &str) = ("Content-Type", "application/json");
const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#;

/// A Streamable HTTP session with the demo tool, initialized (`initialize`, then
/// `notifications/initialized`): its id.
fn open_session(relay: &Relay) -> Result<String> {
    let r = post(relay, &[ACCEPT_BOTH, JSON], INIT)?;
    ensure!(r.status == 200, "initialize: {r:?}");
    let sid = r
        .header("mcp-session-id")
        .context("Mcp-Session-Id")?
        .to_owned();
    let r = raw(
        relay.addr,
        "POST",
        "/mcp/demo",
        &[
            ACCEPT_BOTH,
            JSON,
            ("MCP-Protocol-Version", "2025-11-25"),
            ("Mcp-Session-Id", &sid),
        ],
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    )?;
    ensure!(r.status == 202, "initialized: {r:?}");
    Ok(sid)
}

/// A POST to the demo tool's endpoint, on its own connection.
fn post(relay: &Relay, headers: &[(&str, &str)], body: &str) -> Result<Resp> {
    raw(relay.addr, "POST", "/mcp/demo", headers, body)
}

fn http_url(relay: &Relay, tool: &str) -> String {
    format!("http://{}/mcp/{tool}", relay.addr)
}

#[test]
fn python_sdk_over_streamable_http_with_server_everything() -> Result<()> {
    let peers = Peers::require();
    let relay = Relay::start(&peers.everything_table())?;
    let mut cmd = Command::new(&peers.python);
    cmd.arg(peers.script("py_client.py"))
        .args(["--scenario", "everything", "--mode", "legacy", "--url"])
        .arg(http_url(&relay, "everything"))
        .arg("--");
    let summary = run_driver(&mut cmd, DRIVER_LIMIT)?;
    assert_checks(
        &summary,
        &[
            "connect",
            "tools_list_changed",
            "roots_request_at_startup",
            "list_tools",
            "echo",
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
    // The SDK ends its session with DELETE: the tool is reaped and the slot freed.
    relay.wait_idle("everything", Duration::from_secs(10))?;
    Ok(())
}

#[test]
fn typescript_sdk_over_streamable_http_with_server_everything() -> Result<()> {
    let peers = Peers::require();
    let relay = Relay::start(&peers.everything_table())?;
    let mut cmd = Command::new("node");
    cmd.arg(peers.script("ts_client.mjs"))
        .args(["--transport", "http", "--scenario", "everything", "--url"])
        .arg(http_url(&relay, "everything"))
        .env("PEERS_NODE_MODULES", &peers.node_modules);
    let summary = run_driver(&mut cmd, DRIVER_LIMIT)?;
    assert_checks(
        &summary,
        &[
            "connect",
            "tools_list_changed",
            "list_tools",
            "echo",
            "progress",
            "sampling",
            "cancel",
            "after_cancel",
            "ping",
            "close",
        ],
    );
    assert_eq!(summary["session_terminated"], true, "{summary}");
    relay.wait_idle("everything", Duration::from_secs(10))?;
    Ok(())
}

#[test]
fn refusals_come_before_any_session_with_their_status() -> Result<()> {
    let auth = token_auth(&[("alice", "alice-token", &["demo"])])?;
    let config = format!(
        "[security]\nallowed_origins = [\"https://ide.example\"]\n\n{}\n{auth}",
        demo_tool("demo", "max_message_size = 4096")
    );
    let relay = Relay::start_config(&relay_config("", &config), &[])?;
    let bearer = ("Authorization", "Bearer alice-token");

    let r = post(&relay, &[ACCEPT_BOTH, JSON], INIT)?;
    assert_eq!(r.status, 401, "{r:?}");
    assert!(
        r.header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer")),
        "{r:?}"
    );

    let evil = ("Origin", "https://evil.example");
    let r = post(&relay, &[ACCEPT_BOTH, JSON, bearer, evil], INIT)?;
    assert_eq!(r.status, 403, "{r:?}");

    let r = post(&relay, &[("Accept", "text/html"), JSON, bearer], INIT)?;
    assert_eq!(r.status, 406, "{r:?}");

    let unknown = ("Mcp-Session-Id", "00000000000000000000000000000000");
    let ping = r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#;
    let r = post(&relay, &[ACCEPT_BOTH, JSON, bearer, unknown], ping)?;
    assert_eq!(r.status, 404, "{r:?}");
    let r = post(&relay, &[ACCEPT_BOTH, JSON, bearer], ping)?;
    assert_eq!(
        r.status, 400,
        "a request other than initialize needs a session: {r:?}"
    );

    let big = format!(
        r#"{{"jsonrpc":"2.0","id":3,"method":"initialize","params":{{"pad":"{}"}}}}"#,
        "x".repeat(8192)
    );
    let r = post(&relay, &[ACCEPT_BOTH, JSON, bearer], &big)?;
    assert_eq!(r.status, 413, "{r:?}");
    let body: Value = serde_json::from_str(&r.body).context("413 body is JSON-RPC")?;
    assert!(body["error"]["code"].is_i64(), "{body}");

    let r = raw(
        relay.addr,
        "POST",
        "/mcp/demo",
        &[ACCEPT_BOTH, JSON, bearer],
        "[1,2]",
    )?;
    assert_eq!(r.status, 400, "a batch is refused: {r:?}");
    // None of these started a tool.
    assert!(relay.children().is_empty());
    Ok(())
}

#[test]
fn a_session_lives_from_initialize_to_delete() -> Result<()> {
    let relay = Relay::start(&demo_tool("demo", ""))?;
    let r = post(&relay, &[ACCEPT_BOTH, JSON], INIT)?;
    assert_eq!(r.status, 200, "{r:?}");
    let sid = r
        .header("mcp-session-id")
        .context("Mcp-Session-Id")?
        .to_owned();
    // A JSON body, or (the tool's start counts) an SSE stream: either form, one answer.
    let events = r.messages();
    assert_eq!(events.len(), 1, "{r:?}");
    assert_eq!(events[0].1["id"], 1);
    assert!(events[0].1["result"]["serverInfo"].is_object(), "{r:?}");
    assert_eq!(relay.sessions_active("demo")?, 1.0);

    let session = ("Mcp-Session-Id", sid.as_str());
    let version = ("MCP-Protocol-Version", "2025-11-25");
    let initialized = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    let r = post(&relay, &[ACCEPT_BOTH, JSON, session, version], initialized)?;
    assert_eq!(r.status, 202, "{r:?}");

    // A call answered at once, before anything else for it: the answer is the whole body,
    // JSON (of five tries, on a loaded machine, at least one is answered within the window).
    let call = r#"{"jsonrpc":"2.0","id":"c1","method":"tools/call","params":{"name":"echo","arguments":{"text":"hi over http"}}}"#;
    let mut forms = Vec::new();
    for _ in 0..5 {
        let r = post(&relay, &[ACCEPT_BOTH, JSON, session, version], call)?;
        assert_eq!(r.status, 200, "{r:?}");
        let events = r.messages();
        let answer = &events.last().context("an answer")?.1;
        assert_eq!(answer["id"], "c1", "{r:?}");
        assert!(answer["result"].is_object(), "{r:?}");
        forms.push(r.header("content-type").unwrap_or_default().to_owned());
    }
    assert!(
        forms.iter().any(|f| f == "application/json"),
        "no answer came as JSON: {forms:?}"
    );

    // A call slower than the JSON window (and with no progress): an SSE stream, its priming
    // event (an id, no data) first so a cut can be resumed, then the answer, then its end.
    let slow = r#"{"jsonrpc":"2.0","id":"c2","method":"tools/call","params":{"name":"slow","arguments":{"steps":2,"delay_ms":150}}}"#;
    let r = post(&relay, &[ACCEPT_BOTH, JSON, session, version], slow)?;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some("text/event-stream"), "{r:?}");
    assert_eq!(r.header("x-accel-buffering"), Some("no"), "{r:?}");
    assert!(
        r.body.starts_with("id: ") && r.body.contains("\ndata: \n\n"),
        "the priming event comes first: {r:?}"
    );
    let events = r.messages();
    assert_eq!(events.len(), 1, "one message, the answer: {r:?}");
    assert!(events[0].0.is_some(), "events carry ids: {r:?}");
    assert_eq!(events[0].1["id"], "c2", "{r:?}");
    assert!(events[0].1["result"].is_object(), "{r:?}");

    let bad = ("MCP-Protocol-Version", "1999-01-01");
    let r = post(&relay, &[ACCEPT_BOTH, JSON, session, bad], call)?;
    assert_eq!(r.status, 400, "{r:?}");

    let r = raw(relay.addr, "DELETE", "/mcp/demo", &[session], "")?;
    assert_eq!(r.status, 200, "{r:?}");
    relay.wait_idle("demo", Duration::from_secs(10))?;
    let r = post(&relay, &[ACCEPT_BOTH, JSON, session, version], call)?;
    assert_eq!(r.status, 404, "an ended session is unknown: {r:?}");
    Ok(())
}

#[test]
fn a_session_is_its_users_alone_and_counts_against_the_same_limits() -> Result<()> {
    let auth = token_auth(&[
        ("alice", "alice-token", &["demo"]),
        ("bob", "bob-token", &["demo"]),
    ])?;
    let config = format!("{}\n{auth}", demo_tool("demo", ""));
    let relay = Relay::start_config(&relay_config("max_sessions_per_user = 1", &config), &[])?;
    let alice = ("Authorization", "Bearer alice-token");
    let bob = ("Authorization", "Bearer bob-token");

    let r = post(&relay, &[ACCEPT_BOTH, JSON, alice], INIT)?;
    assert_eq!(r.status, 200, "{r:?}");
    let sid = r
        .header("mcp-session-id")
        .context("Mcp-Session-Id")?
        .to_owned();
    let session = ("Mcp-Session-Id", sid.as_str());
    let key = "mcp_bridge_carrier_sessions_active{tool=\"demo\",carrier=\"http\"}";
    assert_eq!(relay.sample(key)?, 1.0, "{key}");

    // Someone else's session is as unknown as one that never existed.
    let ping = r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#;
    let r = post(&relay, &[ACCEPT_BOTH, JSON, bob, session], ping)?;
    assert_eq!(r.status, 404, "{r:?}");
    let r = raw(relay.addr, "DELETE", "/mcp/demo", &[bob, session], "")?;
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(relay.sessions_active("demo")?, 1.0);

    // The per-user limit covers HTTP sessions as it does WebSocket ones.
    let r = post(&relay, &[ACCEPT_BOTH, JSON, alice], INIT)?;
    assert_eq!(r.status, 429, "{r:?}");
    // A GET without the event-stream Accept is not Streamable HTTP: the WebSocket path's 426.
    let r = raw(relay.addr, "GET", "/mcp/demo", &[alice, session], "")?;
    assert_eq!(r.status, 426, "{r:?}");
    let r = raw(relay.addr, "DELETE", "/mcp/demo", &[alice, session], "")?;
    assert_eq!(r.status, 200, "{r:?}");
    relay.wait_idle("demo", Duration::from_secs(10))?;
    let r = post(&relay, &[ACCEPT_BOTH, JSON, bob], INIT)?;
    assert_eq!(r.status, 200, "the slot was freed: {r:?}");
    Ok(())
}

#[test]
fn a_broken_answer_stream_resumes_with_last_event_id() -> Result<()> {
    let relay = Relay::start(&demo_tool("demo", ""))?;
    let sid = open_session(&relay)?;
    let session = ("Mcp-Session-Id", sid.as_str());
    let call = r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"slow","arguments":{"steps":6,"delay_ms":150},"_meta":{"progressToken":"t"}}}"#;
    // Read the answer stream up to the first progress event, then break the connection.
    let mut s = std::net::TcpStream::connect(relay.addr)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(
        s,
        "POST /mcp/demo HTTP/1.1\r\nHost: test\r\nAccept: application/json, text/event-stream\r\n\
         Content-Type: application/json\r\nMcp-Session-Id: {sid}\r\nContent-Length: {}\r\n\r\n{call}",
        call.len()
    )?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("notifications/progress") {
        let n = s.read(&mut buf)?;
        if n == 0 {
            bail!("stream ended early: {}", String::from_utf8_lossy(&seen));
        }
        seen.extend_from_slice(&buf[..n]);
    }
    drop(s);
    let text = String::from_utf8_lossy(&seen).into_owned();
    let last_id = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .next_back()
        .context("an event id")?
        .trim()
        .to_owned();
    let resume = ("Last-Event-ID", last_id.as_str());
    let r = raw(
        relay.addr,
        "GET",
        "/mcp/demo",
        &[("Accept", "text/event-stream"), session, resume],
        "",
    )?;
    assert_eq!(r.status, 200, "{r:?}");
    let events = sse_events(&r.body);
    let progress: Vec<i64> = events
        .iter()
        .filter(|(_, v)| v["method"] == "notifications/progress")
        .filter_map(|(_, v)| v["params"]["progress"].as_i64())
        .collect();
    let answer = &events.last().context("the answer")?.1;
    assert_eq!(answer["id"], 9, "{r:?}");
    assert!(answer["result"].is_object(), "{r:?}");
    // Nothing lost, nothing twice: the progress seen before the break, then the rest in order.
    let before = text.matches("notifications/progress").count() as i64;
    let want: Vec<i64> = (before + 1..=6).collect();
    assert_eq!(progress, want, "{r:?}");
    let r = raw(relay.addr, "DELETE", "/mcp/demo", &[session], "")?;
    assert_eq!(r.status, 200, "{r:?}");
    relay.wait_idle("demo", Duration::from_secs(10))?;
    Ok(())
}

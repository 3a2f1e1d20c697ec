//! The session-less revision (2026-07-28) at `/mcp/<tool>`: the Python SDK in `auto` mode
//! against mcp-server-time (modern era, no `initialize`) and in `legacy` mode (a session);
//! raw HTTP for the header checks (-32020), an unsupported version (-32022 with the list),
//! GET/DELETE (405), the same id from two clients at once, per-user processes, a stream
//! closed before its answer (the tool gets `notifications/cancelled`), and a handshake-era
//! tool (modern clients are told to fall back).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use mcp_bridge_tests::http_raw::{raw, sse_events, Resp};
use mcp_bridge_tests::{
    assert_checks, demo_tool, fixture_tool, relay_config, run_driver, token_auth, tool_table,
    wait_until, Peers, Relay, TempDir,
};
use serde_json::Value;

use super::{http_url, DRIVER_LIMIT};

const MODERN: &str = "2026-07-28";

/// A 2026-07-28 request body: `params` (a JSON object's members, may be empty) plus `_meta`.
fn body(id: &str, method: &str, params: &str, version: &str) -> String {
    let sep = if params.is_empty() { "" } else { "," };
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{{{params}{sep}"_meta":{{"io.modelcontextprotocol/protocolVersion":"{version}","io.modelcontextprotocol/clientCapabilities":{{}}}}}}}}"#
    )
}

/// POSTs a modern request with its metadata headers (`name`: `Mcp-Name`), on its own
/// connection; `extra` headers after them.
fn post(
    addr: SocketAddr,
    tool: &str,
    body: &str,
    method: &str,
    name: Option<&str>,
    extra: &[(&str, &str)],
) -> Result<Resp> {
    let mut h = vec![
        ("Accept", "application/json, text/event-stream"),
        ("Content-Type", "application/json"),
        ("MCP-Protocol-Version", MODERN),
        ("Mcp-Method", method),
    ];
    if let Some(n) = name {
        h.push(("Mcp-Name", n));
    }
    h.extend_from_slice(extra);
    raw(addr, "POST", &format!("/mcp/{tool}"), &h, body)
}

/// The JSON-RPC message of an answer, JSON or the last SSE event.
fn answer(r: &Resp) -> Result<Value> {
    if r.header("content-type")
        .is_some_and(|c| c.starts_with("text/event-stream"))
    {
        let events = sse_events(&r.body);
        return events
            .last()
            .map(|(_, v)| v.clone())
            .context("no SSE event");
    }
    Ok(serde_json::from_str(&r.body)?)
}

fn text_of(v: &Value) -> String {
    v["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn python_sdk_auto_is_modern_and_legacy_still_works_with_mcp_server_time() -> Result<()> {
    let peers = Peers::require();
    let relay = Relay::start(&tool_table(
        "time",
        &peers.venv_bin.join("mcp-server-time"),
        &[],
        "",
    ))?;
    for (mode, era) in [("auto", "modern"), ("legacy", "legacy")] {
        let mut cmd = Command::new(&peers.python);
        cmd.arg(peers.script("py_client.py"))
            .args(["--scenario", "time", "--mode", mode, "--url"])
            .arg(http_url(&relay, "time"))
            .arg("--");
        let summary = run_driver(&mut cmd, DRIVER_LIMIT)?;
        assert_eq!(summary["era"], era, "{summary}");
        let mut wanted = vec![
            "connect",
            "list_tools",
            "get_current_time",
            "convert_time",
            "tool_error",
            "unknown_tool",
            "after_error",
        ];
        if mode == "legacy" {
            wanted.push("ping");
        }
        assert_checks(&summary, &wanted);
    }
    // The modern client's pooled process, and the legacy session's, were counted as sessions
    // of the tool.
    let m = relay.metrics()?;
    let key = "mcp_bridge_carrier_sessions_total{tool=\"time\",carrier=\"http-modern\"}";
    assert_eq!(m.get(key).copied(), Some(1.0), "{key} in {m:?}");
    Ok(())
}

#[test]
fn headers_that_do_not_match_the_body_are_32020_and_a_bad_version_is_32022() -> Result<()> {
    let peers = Peers::require();
    let relay = Relay::start(&tool_table(
        "time",
        &peers.venv_bin.join("mcp-server-time"),
        &[],
        "",
    ))?;
    let call = body(
        "5",
        "tools/call",
        r#""name":"get_current_time","arguments":{"timezone":"UTC"}"#,
        MODERN,
    );
    // The right headers: the tool answers.
    let ok = post(
        relay.addr,
        "time",
        &call,
        "tools/call",
        Some("get_current_time"),
        &[],
    )?;
    assert_eq!(ok.status, 200, "{ok:?}");
    let v = answer(&ok)?;
    assert_eq!(v["id"], 5, "{v}");
    assert!(text_of(&v).contains("UTC"), "{v}");
    assert!(
        ok.header("mcp-session-id").is_none(),
        "no session id is minted"
    );
    // The same name, base64-encoded, matches too.
    let b64 = post(
        relay.addr,
        "time",
        &call,
        "tools/call",
        Some("=?base64?Z2V0X2N1cnJlbnRfdGltZQ==?="),
        &[],
    )?;
    assert_eq!(b64.status, 200, "{b64:?}");
    for (method, name) in [
        ("tools/call", Some("convert_time")),
        ("tools/list", Some("get_current_time")),
        ("tools/call", None),
    ] {
        let r = post(relay.addr, "time", &call, method, name, &[])?;
        assert_eq!(r.status, 400, "{method} {name:?}: {r:?}");
        let v: Value = serde_json::from_str(&r.body)?;
        assert_eq!(v["error"]["code"], -32020, "{v}");
        assert_eq!(v["id"], 5, "{v}");
    }
    // A version header that differs from the body's `_meta`: a mismatch too.
    let other = body("6", "tools/list", "", "2025-11-25");
    let r = post(relay.addr, "time", &other, "tools/list", None, &[])?;
    let v: Value = serde_json::from_str(&r.body)?;
    assert_eq!(
        (r.status, v["error"]["code"].clone()),
        (400, (-32020).into()),
        "{v}"
    );
    // A version nobody serves, the same in header and body: -32022 with the list.
    let old = body("7", "server/discover", "", "1900-01-01");
    let r = raw(
        relay.addr,
        "POST",
        "/mcp/time",
        &[
            ("Accept", "application/json, text/event-stream"),
            ("Content-Type", "application/json"),
            ("MCP-Protocol-Version", "1900-01-01"),
            ("Mcp-Method", "server/discover"),
        ],
        &old,
    )?;
    assert_eq!(r.status, 400, "{r:?}");
    let v: Value = serde_json::from_str(&r.body)?;
    assert_eq!(v["error"]["code"], -32022, "{v}");
    assert_eq!(v["error"]["data"]["requested"], "1900-01-01", "{v}");
    let supported = v["error"]["data"]["supported"].as_array().context("list")?;
    assert!(supported.iter().any(|s| s == MODERN), "{v}");
    assert!(supported.iter().any(|s| s == "2025-11-25"), "{v}");
    // GET and DELETE have no meaning without sessions.
    for method in ["GET", "DELETE"] {
        let r = raw(
            relay.addr,
            method,
            "/mcp/time",
            &[
                ("Accept", "text/event-stream"),
                ("MCP-Protocol-Version", MODERN),
            ],
            "",
        )?;
        assert_eq!(r.status, 405, "{method}: {r:?}");
        assert_eq!(r.header("allow"), Some("POST"));
    }
    // A JSON-only client gets a JSON answer.
    let r = raw(
        relay.addr,
        "POST",
        "/mcp/time",
        &[
            ("Accept", "application/json"),
            ("Content-Type", "application/json"),
            ("MCP-Protocol-Version", MODERN),
            ("Mcp-Method", "tools/list"),
        ],
        &body("\"s\"", "tools/list", "", MODERN),
    )?;
    assert_eq!(r.header("content-type"), Some("application/json"), "{r:?}");
    let v: Value = serde_json::from_str(&r.body)?;
    assert_eq!(v["id"], "s", "{v}");
    assert!(v["result"]["tools"].is_array(), "{v}");
    Ok(())
}

#[test]
fn two_clients_with_the_same_id_each_get_their_own_answer() -> Result<()> {
    let relay = Relay::start(&fixture_tool("fx", &["--modern"], ""))?;
    let addr = relay.addr;
    let slow = std::thread::spawn(move || {
        post(
            addr,
            "fx",
            &body(
                "1",
                "tools/call",
                r#""name":"sleep","arguments":{"seconds":1}"#,
                MODERN,
            ),
            "tools/call",
            Some("sleep"),
            &[],
        )
    });
    // While the first waits at the tool, a second client uses the same id.
    std::thread::sleep(Duration::from_millis(300));
    let quick = post(
        addr,
        "fx",
        &body(
            "1",
            "tools/call",
            r#""name":"echo","arguments":{"text":"second"}"#,
            MODERN,
        ),
        "tools/call",
        Some("echo"),
        &[],
    )?;
    let slow = slow.join().map_err(|_| anyhow::anyhow!("thread"))??;
    let (a, b) = (answer(&slow)?, answer(&quick)?);
    assert_eq!(
        (a["id"].clone(), text_of(&a)),
        (1.into(), "slept".to_owned()),
        "{a}"
    );
    assert_eq!(
        (b["id"].clone(), text_of(&b)),
        (1.into(), "second".to_owned()),
        "{b}"
    );
    Ok(())
}

/// Also: the per-user session limit counts a pooled process.
#[test]
fn each_user_has_a_process_of_their_own() -> Result<()> {
    let auth = token_auth(&[("alice", "tok-a", &["fx"]), ("bob", "tok-b", &["fx"])])?;
    let config = format!("{}\n{auth}", fixture_tool("fx", &["--modern"], ""));
    let relay = Relay::start_config(&relay_config("max_sessions_per_user = 1", &config), &[])?;
    let pid = |token: &str| -> Result<String> {
        let auth = format!("Bearer {token}");
        let r = post(
            relay.addr,
            "fx",
            &body("1", "tools/call", r#""name":"pid","arguments":{}"#, MODERN),
            "tools/call",
            Some("pid"),
            &[("Authorization", &auth)],
        )?;
        Ok(text_of(&answer(&r)?))
    };
    let (a1, a2, b1) = (pid("tok-a")?, pid("tok-a")?, pid("tok-b")?);
    assert!(!a1.is_empty() && !b1.is_empty());
    assert_eq!(a1, a2, "alice's requests share her process");
    assert_ne!(a1, b1, "bob's requests never reach alice's process");
    assert_eq!(relay.sessions_active("fx")?, 2.0);
    // A pooled process counts like a session: alice holds her one, so a session is refused.
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#;
    let r = raw(
        relay.addr,
        "POST",
        "/mcp/fx",
        &[
            ("Accept", "application/json, text/event-stream"),
            ("Content-Type", "application/json"),
            ("Authorization", "Bearer tok-a"),
        ],
        init,
    )?;
    assert_eq!(r.status, 429, "{r:?}");
    Ok(())
}

#[test]
fn closing_the_stream_before_the_answer_cancels_the_call_at_the_tool() -> Result<()> {
    let dir = TempDir::new();
    let cancels = dir.path().join("cancels");
    let cancels_arg = cancels.display().to_string();
    let relay = Relay::start(&fixture_tool(
        "fx",
        &["--modern", "--cancels", &cancels_arg],
        "",
    ))?;
    // Open the call's stream, read the head, and go away.
    let call = body(
        "\"c1\"",
        "tools/call",
        r#""name":"sleep","arguments":{"seconds":2}"#,
        MODERN,
    );
    let mut s = std::net::TcpStream::connect(relay.addr)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    let req = format!(
        "POST /mcp/fx HTTP/1.1\r\nHost: test\r\nAccept: application/json, text/event-stream\r\nContent-Type: application/json\r\nMCP-Protocol-Version: {MODERN}\r\nMcp-Method: tools/call\r\nMcp-Name: sleep\r\nContent-Length: {}\r\n\r\n{call}",
        call.len()
    );
    s.write_all(req.as_bytes())?;
    let mut head = [0u8; 512];
    let n = s.read(&mut head)?;
    let head = String::from_utf8_lossy(&head[..n]).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/event-stream"), "{head}");
    drop(s);
    // The tool reads the cancel once its sleep is over; it names the id the tool saw.
    wait_until(Duration::from_secs(20), || {
        std::fs::read_to_string(&cancels).is_ok_and(|t| !t.trim().is_empty())
    })
    .context("the tool never got notifications/cancelled")?;
    let seen = std::fs::read_to_string(&cancels)?;
    assert_eq!(seen.lines().count(), 1, "{seen}");
    // The process goes on serving: the next call gets its own answer, not the cancelled one's.
    let r = post(
        relay.addr,
        "fx",
        &body(
            "\"c2\"",
            "tools/call",
            r#""name":"echo","arguments":{"text":"after"}"#,
            MODERN,
        ),
        "tools/call",
        Some("echo"),
        &[],
    )?;
    let v = answer(&r)?;
    assert_eq!(
        (v["id"].clone(), text_of(&v)),
        ("c2".into(), "after".to_owned()),
        "{v}"
    );
    Ok(())
}

#[test]
fn a_handshake_era_tool_tells_modern_clients_to_fall_back() -> Result<()> {
    let relay = Relay::start(&demo_tool("demo", ""))?;
    for round in 0..2 {
        let r = post(
            relay.addr,
            "demo",
            &body("1", "server/discover", "", MODERN),
            "server/discover",
            None,
            &[],
        )?;
        assert_eq!(r.status, 400, "round {round}: {r:?}");
        let v: Value = serde_json::from_str(&r.body)?;
        // Not a modern error (-32020/-32022): the client falls back to initialize.
        assert_eq!(v["error"]["code"], -32600, "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("initialize"),
            "{v}"
        );
    }
    // The process that found out is gone, and the second request started none.
    relay.wait_idle("demo", Duration::from_secs(10))?;
    let m = relay.metrics()?;
    let key = "mcp_bridge_tool_starts_total{tool=\"demo\"}";
    assert_eq!(m.get(key).copied(), Some(1.0), "{key} in {m:?}");
    Ok(())
}

/// An open SSE answer on a raw connection, read as events arrive.
struct Listening {
    s: std::net::TcpStream,
    seen: String,
}

impl Listening {
    fn open(addr: SocketAddr, tool: &str, body: &str, method: &str) -> Result<Listening> {
        let mut s = std::net::TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        let req = format!(
            "POST /mcp/{tool} HTTP/1.1\r\nHost: test\r\nAccept: application/json, text/event-stream\r\nContent-Type: application/json\r\nMCP-Protocol-Version: {MODERN}\r\nMcp-Method: {method}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes())?;
        Ok(Listening {
            s,
            seen: String::new(),
        })
    }

    /// The next message whose `method` is `method` (each SSE event is one chunk: its `data:`
    /// line is whole).
    fn next(&mut self, method: &str) -> Result<Value> {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let found = self
                .seen
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                .find(|v| v["method"] == method);
            if let Some(v) = found {
                // Forget what was read up to here.
                if let Some(at) = self.seen.find(method) {
                    self.seen.drain(..at + method.len());
                }
                return Ok(v);
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "no {method} on the stream: {}",
                self.seen
            );
            let mut buf = [0u8; 4096];
            let n = self.s.read(&mut buf)?;
            anyhow::ensure!(n > 0, "the stream ended before {method}: {}", self.seen);
            self.seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
}

#[test]
fn subscriptions_listen_streams_the_tools_changes_until_the_client_closes_it() -> Result<()> {
    let dir = TempDir::new();
    let cancels = dir.path().join("cancels");
    let cancels_arg = cancels.display().to_string();
    let relay = Relay::start(&fixture_tool(
        "fx",
        &["--modern", "--cancels", &cancels_arg],
        "",
    ))?;
    let listen_body = body(
        "\"L1\"",
        "subscriptions/listen",
        r#""notifications":{"toolsListChanged":true}"#,
        MODERN,
    );
    let mut listen = Listening::open(relay.addr, "fx", &listen_body, "subscriptions/listen")?;
    let ack = listen.next("notifications/subscriptions/acknowledged")?;
    let sub = "io.modelcontextprotocol/subscriptionId";
    assert_eq!(ack["params"]["_meta"][sub], "L1", "{ack}");
    // Another client's call (same user, same process) changes the tools.
    let r = post(
        relay.addr,
        "fx",
        &body(
            "\"L1\"",
            "tools/call",
            r#""name":"change","arguments":{}"#,
            MODERN,
        ),
        "tools/call",
        Some("change"),
        &[],
    )?;
    let v = answer(&r)?;
    assert_eq!(
        (v["id"].clone(), text_of(&v)),
        ("L1".into(), "changed".to_owned()),
        "{v}"
    );
    let changed = listen.next("notifications/tools/list_changed")?;
    assert_eq!(changed["params"]["_meta"][sub], "L1", "{changed}");
    // The client closes the stream: the tool's subscription is cancelled.
    drop(listen);
    wait_until(Duration::from_secs(20), || {
        std::fs::read_to_string(&cancels).is_ok_and(|t| !t.trim().is_empty())
    })
    .context("the tool never heard the subscription end")?;
    Ok(())
}

#[test]
fn a_drain_lets_a_call_in_flight_answer_and_refuses_new_requests() -> Result<()> {
    let relay = Relay::start(&fixture_tool("fx", &["--modern"], ""))?;
    let addr = relay.addr;
    let slow = std::thread::spawn(move || {
        post(
            addr,
            "fx",
            &body(
                "1",
                "tools/call",
                r#""name":"sleep","arguments":{"seconds":2}"#,
                MODERN,
            ),
            "tools/call",
            Some("sleep"),
            &[],
        )
    });
    // The call reaches the tool once the probe is answered; then the relay drains.
    relay
        .log
        .wait_for("method=\"server/discover\"", Duration::from_secs(20))?;
    std::thread::sleep(Duration::from_millis(300));
    relay.terminate();
    relay.log.wait_for("draining", Duration::from_secs(5))?;
    // The listener stays open while a session (the pooled process) is left.
    let r = post(
        addr,
        "fx",
        &body(
            "2",
            "tools/call",
            r#""name":"echo","arguments":{"text":"x"}"#,
            MODERN,
        ),
        "tools/call",
        Some("echo"),
        &[],
    )?;
    assert_eq!(r.status, 503, "{r:?}");
    let v: Value = serde_json::from_str(&r.body)?;
    assert_eq!(v["error"]["code"], -32011, "{v}");
    let slow = slow.join().map_err(|_| anyhow::anyhow!("thread"))??;
    let v = answer(&slow)?;
    assert_eq!(
        (v["id"].clone(), text_of(&v)),
        (1.into(), "slept".to_owned()),
        "{v}"
    );
    let status = relay.wait_exit(Duration::from_secs(20))?;
    assert!(status.success(), "{status:?}");
    Ok(())
}

#[test]
fn a_pooled_process_ends_after_its_idle_time_and_the_next_request_starts_one() -> Result<()> {
    let config = fixture_tool("fx", &["--modern"], "");
    let relay = Relay::start_config(&relay_config("resume_window_ms = 1000", &config), &[])?;
    let pid = || -> Result<String> {
        let r = post(
            relay.addr,
            "fx",
            &body("1", "tools/call", r#""name":"pid","arguments":{}"#, MODERN),
            "tools/call",
            Some("pid"),
            &[],
        )?;
        Ok(text_of(&answer(&r)?))
    };
    let first = pid()?;
    assert_eq!(relay.sessions_active("fx")?, 1.0);
    // Idle for the window: the process is ended and reaped, its slot freed.
    relay.wait_idle("fx", Duration::from_secs(15))?;
    let second = pid()?;
    assert!(
        !first.is_empty() && first != second,
        "{first} then {second}"
    );
    Ok(())
}

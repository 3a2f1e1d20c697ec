//! Session-less calls: the Python SDK in both modes, the header and version checks, GET and
//! DELETE, the same id from two clients, one process per user, and a handshake-era tool.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use mcp_bridge_tests::http_raw::raw;
use mcp_bridge_tests::{
    assert_checks, demo_tool, fixture_tool, relay_config, run_driver, token_auth, Peers, Relay,
};
use serde_json::Value;

use super::super::{http_url, DRIVER_LIMIT};
use super::{answer, body, post, text_of, time_relay, tool_call, MODERN};

#[test]
fn python_sdk_auto_is_modern_and_legacy_still_works_with_mcp_server_time() -> Result<()> {
    let peers = Peers::require();
    let relay = time_relay("")?;
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
    let key = "mcp_bridge_carrier_sessions_total{tool=\"time\",carrier=\"http-modern\"}";
    assert_eq!(relay.sample(key)?, 1.0, "{key}");
    Ok(())
}

#[test]
fn headers_that_do_not_match_the_body_are_32020_and_a_bad_version_is_32022() -> Result<()> {
    let relay = time_relay("")?;
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
    // A client that takes both gets a quick answer (the first thing for its request, within
    // 50 ms) as one JSON body too: of five tries on a loaded machine, at least one.
    let mut forms = Vec::new();
    for _ in 0..5 {
        let list = body("\"b\"", "tools/list", "", MODERN);
        let r = post(relay.addr, "time", &list, "tools/list", None, &[])?;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(answer(&r)?["id"], "b", "{r:?}");
        forms.push(r.header("content-type").unwrap_or_default().to_owned());
    }
    assert!(forms.iter().any(|f| f == "application/json"), "{forms:?}");
    // A method the tool does not have: 404 with its -32601, as the revision asks.
    let r = raw(
        relay.addr,
        "POST",
        "/mcp/time",
        &[
            ("Accept", "application/json"),
            ("Content-Type", "application/json"),
            ("MCP-Protocol-Version", MODERN),
            ("Mcp-Method", "nothing/here"),
        ],
        &body("8", "nothing/here", "", MODERN),
    )?;
    assert_eq!(r.status, 404, "{r:?}");
    let v: Value = serde_json::from_str(&r.body)?;
    assert_eq!(
        (v["id"].clone(), v["error"]["code"].clone()),
        (8.into(), (-32601).into()),
        "{v}"
    );
    Ok(())
}

#[test]
fn two_clients_with_the_same_id_each_get_their_own_answer() -> Result<()> {
    let relay = Relay::start(&fixture_tool("fx", &["--modern"], ""))?;
    let addr = relay.addr;
    let slow = std::thread::spawn(move || tool_call(addr, "fx", "1", "sleep", r#"{"seconds":1}"#));
    // While the first is on its way to the tool (it sleeps there 1 s), a second client uses
    // the same id.
    relay.log.wait_for(
        "a session-less call goes to the tool",
        Duration::from_secs(20),
    )?;
    let quick = tool_call(addr, "fx", "1", "echo", r#"{"text":"second"}"#)?;
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
    let key = "mcp_bridge_tool_starts_total{tool=\"demo\"}";
    assert_eq!(relay.sample(key)?, 1.0, "{key}");
    Ok(())
}

#[test]
fn the_relays_policy_holds_for_session_less_requests() -> Result<()> {
    let peers = Peers::require();
    let relay = time_relay("[[tool.policy]]\nusers = [\"*\"]\ndeny = [\"convert_*\"]\n")?;
    let mut cmd = Command::new(&peers.python);
    cmd.arg(peers.script("py_client.py"))
        .args(["--scenario", "time-policy", "--mode", "auto", "--url"])
        .arg(http_url(&relay, "time"))
        .arg("--");
    let summary = run_driver(&mut cmd, DRIVER_LIMIT)?;
    assert_eq!(summary["era"], "modern", "{summary}");
    assert_checks(
        &summary,
        &["hidden_in_list", "hidden_call_refused", "allowed_call"],
    );
    Ok(())
}

/// A real host: Claude Code probes `server/discover` first, and against a tool that speaks
/// 2026-07-28 it stays in that era — connected without any session.
#[test]
fn claude_code_connects_session_less_to_mcp_server_time() -> Result<()> {
    let peers = Peers::require();
    let relay = time_relay("")?;
    let home = mcp_bridge_tests::TempDir::new();
    let claude = peers.node_modules.join(".bin/claude");
    // Bounded in time: the output goes to a log, the process is reaped within the limit.
    let run = |args: &[&str]| -> Result<String> {
        let mut child = Command::new(&claude)
            .args(args)
            .current_dir(home.path())
            .env("HOME", home.path())
            .env_remove("ANTHROPIC_API_KEY")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", claude.display()))?;
        let log = mcp_bridge_tests::Log::default();
        log.drain_from(child.stdout.take().context("stdout")?, "claude");
        log.drain_from(child.stderr.take().context("stderr")?, "claude");
        mcp_bridge_tests::reap(&mut child, Duration::from_secs(60))?;
        log.wait_closed(Duration::from_secs(5));
        Ok(log.text())
    };
    run(&[
        "mcp",
        "add",
        "-s",
        "local",
        "-t",
        "http",
        "time",
        &http_url(&relay, "time"),
    ])?;
    let listed = run(&["mcp", "list"])?;
    assert!(listed.contains("✔ Connected"), "{listed}");
    let m = relay.metrics()?;
    let modern = "mcp_bridge_carrier_sessions_total{tool=\"time\",carrier=\"http-modern\"}";
    let sessions = "mcp_bridge_carrier_sessions_total{tool=\"time\",carrier=\"http\"}";
    assert_eq!(m.get(modern).copied(), Some(1.0), "{listed}");
    assert_eq!(m.get(sessions).copied(), None, "no initialize: {listed}");
    Ok(())
}

//! Operations: `/metrics` after a scripted session (parsed as Prometheus text, counts checked),
//! `/healthz` and `/readyz` (not ready while draining), JSON logs carrying the session's id, user
//! and tool, and `check-config` on good and broken configs.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use mcp_bridge_tests::{bin, demo_tool, http_get, wait_until, Ide, Relay, TempDir};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(15);

/// Parses the Prometheus/OpenMetrics text format strictly enough to catch a malformed line:
/// returns `name{labels}` → value for every sample.
fn parse_metrics(text: &str) -> Result<HashMap<String, f64>> {
    let mut samples = HashMap::new();
    let mut saw_eof = false;
    for line in text.lines() {
        if line == "# EOF" {
            saw_eof = true;
            continue;
        }
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") || line.starts_with("# UNIT ")
        {
            continue;
        }
        if line.is_empty() {
            bail!("blank line in exposition");
        }
        let (series, value) = line.rsplit_once(' ').context("no value")?;
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        {
            bail!("bad metric name in {line:?}");
        }
        if name_end < series.len() && !series.ends_with('}') {
            bail!("unterminated labels in {line:?}");
        }
        let v: f64 = value
            .parse()
            .with_context(|| format!("bad value in {line:?}"))?;
        samples.insert(series.to_owned(), v);
    }
    if !saw_eof {
        bail!("no `# EOF` terminator");
    }
    Ok(samples)
}

fn get(m: &HashMap<String, f64>, series: &str) -> f64 {
    m.get(series).copied().unwrap_or(0.0)
}

#[test]
fn metrics_match_a_scripted_session() -> Result<()> {
    let relay = Relay::start(&demo_tool("demo", ""))?;
    let mut ide = Ide::connect(&relay.url("demo"), &[])?;
    ide.initialize()?;
    ide.request(json!(1), "tools/list", json!({}))?;
    for i in 0..3 {
        ide.request(
            json!(10 + i),
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "x"}}),
        )?;
    }
    // One refused connection.
    let mut nope = Ide::connect(&relay.url("nope"), &[])?;
    assert!(!nope.wait(T)?.success());
    ide.close_stdin();
    assert!(ide.wait(T)?.success());
    relay.wait_no_children(T)?;
    // The session's end is recorded when its task finishes.
    let mut m = HashMap::new();
    wait_until(T, || {
        m = http_get(relay.addr, "/metrics")
            .ok()
            .and_then(|(_, body)| parse_metrics(&body).ok())
            .unwrap_or_default();
        get(&m, r#"mcp_bridge_sessions_active{tool="demo"}"#) == 0.0
            && get(
                &m,
                r#"mcp_bridge_tool_exits_total{tool="demo",how="ended"}"#,
            ) == 1.0
    })
    .context("session end not reflected in /metrics")?;
    let (status, body) = http_get(relay.addr, "/metrics")?;
    assert_eq!(status, 200);
    let m = parse_metrics(&body)?;
    let expect = [
        (r#"mcp_bridge_sessions_total{tool="demo"}"#, 1.0),
        (r#"mcp_bridge_connects_total{tool="demo",kind="new"}"#, 1.0),
        (r#"mcp_bridge_tool_starts_total{tool="demo"}"#, 1.0),
        (
            r#"mcp_bridge_request_duration_seconds_count{tool="demo",method="initialize"}"#,
            1.0,
        ),
        (
            r#"mcp_bridge_request_duration_seconds_count{tool="demo",method="tools/list"}"#,
            1.0,
        ),
        (
            r#"mcp_bridge_request_duration_seconds_count{tool="demo",method="tools/call"}"#,
            3.0,
        ),
        // initialize, notifications/initialized, tools/list, 3 calls.
        (
            r#"mcp_bridge_messages_total{tool="demo",direction="to_tool"}"#,
            6.0,
        ),
        (
            r#"mcp_bridge_messages_total{tool="demo",direction="to_client"}"#,
            5.0,
        ),
        (
            r#"mcp_bridge_rejected_connections_total{reason="unknown_tool"}"#,
            1.0,
        ),
        (
            r#"mcp_bridge_session_duration_seconds_count{tool="demo"}"#,
            1.0,
        ),
    ];
    for (series, want) in expect {
        assert_eq!(get(&m, series), want, "{series}\n{body}");
    }
    // bridge-client ended the session itself when the IDE closed its stdin.
    assert_eq!(
        get(
            &m,
            r#"mcp_bridge_session_ends_total{tool="demo",source="client",reason="client_ended"}"#
        ),
        1.0,
        "{body}"
    );
    // The unknown tool's refusal is not a call, and no call failed.
    assert!(!body.contains("mcp_bridge_call_errors_total{"), "{body}");
    // The limits, from the config (the built-in default here).
    assert_eq!(get(&m, "mcp_bridge_max_sessions"), 1024.0, "{body}");
    assert_eq!(get(&m, "mcp_bridge_ready"), 1.0);
    assert_eq!(
        get(&m, r#"mcp_bridge_tool_max_sessions{tool="demo"}"#),
        1024.0
    );
    // The relay process itself.
    assert!(get(&m, "process_resident_memory_bytes") > 1e6, "{body}");
    assert!(m.contains_key("process_cpu_seconds_total"), "{body}");
    assert!(get(&m, "process_open_fds") >= 3.0);
    assert!(get(&m, "process_start_time_seconds") > 1.6e9);
    assert!(
        get(
            &m,
            r#"mcp_bridge_message_bytes_total{tool="demo",direction="to_tool"}"#
        ) > 100.0
    );
    let sample: Vec<&str> = body
        .lines()
        .filter(|l| l.contains("tools/call") || l.contains("sessions_total"))
        .collect();
    println!("metrics sample:\n{}", sample.join("\n"));
    Ok(())
}

#[test]
fn health_and_readiness_while_draining() -> Result<()> {
    let relay = Relay::start_with("shutdown_grace_ms = 3000", &demo_tool("demo", ""), None)?;
    assert_eq!(http_get(relay.addr, "/healthz")?, (200, "ok\n".to_owned()));
    assert_eq!(
        http_get(relay.addr, "/readyz")?,
        (200, "ready\n".to_owned())
    );
    let mut ide = Ide::connect(&relay.url("demo"), &[])?;
    ide.initialize()?;
    ide.send(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "slow", "arguments": {"steps": 20, "delay_ms": 50}, "_meta": {"progressToken": 1}}}))?;
    // The call is at the tool once its progress flows back.
    ide.recv_until(T, |m| m["method"] == "notifications/progress")?;
    relay.terminate();
    // Draining: still answering, not ready, refusing new sessions with a reason.
    wait_until(T, || {
        http_get(relay.addr, "/readyz").is_ok_and(|r| r.0 == 503)
    })?;
    assert_eq!(http_get(relay.addr, "/readyz")?.1, "draining\n");
    let (_, metrics) = http_get(relay.addr, "/metrics")?;
    assert_eq!(get(&parse_metrics(&metrics)?, "mcp_bridge_ready"), 0.0);
    let mut late = Ide::connect(&relay.url("demo"), &[])?;
    assert!(!late.wait(T)?.success());
    assert!(
        late.stderr.text().contains("HTTP 503") && late.stderr.text().contains("shutting down")
    );
    let resp = ide.recv_until(T, |m| m["id"] == 1)?;
    assert_eq!(
        resp.pointer("/result/content/0/text"),
        Some(&json!("done after 20 steps")),
        "{resp}\n{}",
        relay.log.text()
    );
    assert!(relay.wait_exit(T)?.success());
    Ok(())
}

#[test]
fn json_logs_carry_session_id_user_and_tool() -> Result<()> {
    let config = format!("listen = \"127.0.0.1:0\"\n{}", demo_tool("demo", ""));
    let relay = Relay::start_full(&config, &[("RUST_LOG", "info")], &["--log-format", "json"])?;
    let mut ide = Ide::connect(&relay.url("demo"), &[])?;
    ide.initialize()?;
    ide.close_stdin();
    assert!(ide.wait(T)?.success());
    relay.log.wait_for("session ended", T)?;
    let mut session_lines = 0;
    for line in relay.log.text().lines() {
        let v: Value = serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))?;
        if let Some(span) = v.get("span") {
            assert!(
                span.get("id").is_some()
                    && span.get("user").is_some()
                    && span.get("tool") == Some(&json!("demo")),
                "{line}"
            );
            session_lines += 1;
        }
    }
    assert!(
        session_lines >= 3,
        "session lines: {session_lines}\n{}",
        relay.log.text()
    );
    Ok(())
}

#[test]
fn check_config_names_the_file_key_and_line() -> Result<()> {
    let dir = TempDir::new();
    let check = |name: &str, text: &str| -> Result<(bool, String)> {
        let path = dir.path().join(name);
        std::fs::write(&path, text)?;
        let out = Command::new(bin("bridge-server"))
            .arg("check-config")
            .arg(&path)
            .output()?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    };
    let (ok, msg) = check(
        "good.toml",
        "listen = \"127.0.0.1:9000\"\n[[tool]]\nname = \"time\"\ncommand = \"mcp-server-time\"\n",
    )?;
    assert!(ok, "{msg}");
    assert!(msg.contains("ok (1 tool(s): time)"), "{msg}");
    let cases = [
        ("typo.toml", "[[tool]]\nname = \"a\"\ncomand = \"x\"\n", "typo.toml:3:", "comand"),
        ("listen.toml", "listen = \"nowhere\"\n[[tool]]\nname = \"a\"\ncommand = \"x\"\n", "listen.toml:1:10: `listen`", "IP:PORT"),
        ("dup.toml", "[[tool]]\nname = \"a\"\ncommand = \"x\"\n[[tool]]\nname = \"a\"\ncommand = \"y\"\n", "dup.toml:5:8: `tool[1].name`", "already"),
        ("hb.toml", "[limits]\nheartbeat_interval_ms = 5000\nheartbeat_timeout_ms = 1000\n[[tool]]\nname = \"a\"\ncommand = \"x\"\n", "hb.toml:3:24: `limits.heartbeat_timeout_ms`", "longer"),
        ("auth.toml", "[auth]\nmode = \"magic\"\n[[tool]]\nname = \"a\"\ncommand = \"x\"\n", "auth.toml:2:8: `auth.mode`", "magic"),
        ("none.toml", "[[tool]]\nname = \"a b\"\ncommand = \"x\"\n", "none.toml:2:8: `tool[0].name`", "URL path"),
        ("empty.toml", "listen = \"127.0.0.1:1\"\n", "empty.toml:2:1: `tool`", "no tools"),
        // Two typos: both, the earlier line first.
        ("two.toml", "[[tool]]\nname = \"a\"\ncommand = \"x\"\n[limits]\nkill_grace = 1\n\n\n\nlisen = 2\n", "two.toml:5:1: `limits.kill_grace`", "two.toml:9:1: `limits.lisen`"),
    ];
    for (file, text, place, words) in cases {
        let (ok, msg) = check(file, text)?;
        assert!(!ok, "{file} should fail");
        // `words` comes after `place` (for two.toml: the second problem after the first).
        let (at, then) = (msg.find(place), msg.rfind(words));
        assert!(at.is_some() && then.is_some() && at < then, "{file}: {msg}");
        println!("{}", msg.trim());
    }
    // The relay refuses to start with the same text, exit status 64.
    let path = dir.path().join("dup.toml");
    let out = Command::new(bin("bridge-server"))
        .arg("--config")
        .arg(&path)
        .output()?;
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("dup.toml:5:8: `tool[1].name`"));
    Ok(())
}

/// The relay's default log output is batched: audit lines wait (up to 50 ms) and go out
/// together, and a warning takes every line waiting before it along, in order. (The other
/// tests run their relays with `MCP_BRIDGE_LOG_FLUSH_MS=0`, each line at once.)
#[test]
fn logs_are_batched_and_a_warning_takes_what_waits_along_in_order() -> Result<()> {
    let relay = Relay::start_full(
        &format!(
            "listen = \"127.0.0.1:0\"\n[limits]\nkill_grace_ms = 500\n\n{}",
            demo_tool("demo", "")
        ),
        &[("MCP_BRIDGE_LOG_FLUSH_MS", "3000"), ("RUST_LOG", "info")],
        &[],
    )?;
    let mut ide = Ide::connect(&relay.url("demo"), &[])?;
    ide.initialize()?;
    let started = std::time::Instant::now();
    for i in 0..20 {
        ide.request(
            json!(i + 1),
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "batched"}}),
        )?;
    }
    // Flushed 3 s after a batch's first line (the session's start): the audit lines still
    // wait, unless this machine took seconds for the calls (then there is nothing to see).
    let calls = |log: &str| log.matches("event=\"call\"").count();
    std::thread::sleep(Duration::from_millis(200));
    if started.elapsed() < Duration::from_secs(2) {
        assert_eq!(
            calls(&relay.log.text()),
            0,
            "the audit lines wait for their batch"
        );
    }
    // A refused Origin is a warning: written at once, after everything that waited.
    let refused = mcp_bridge_tests::http_raw::raw(
        relay.addr,
        "POST",
        "/mcp/demo",
        &[
            ("Origin", "http://evil.example"),
            ("Accept", "application/json, text/event-stream"),
            ("Content-Type", "application/json"),
        ],
        "{}",
    )?;
    assert_eq!(refused.status, 403, "{refused:?}");
    relay
        .log
        .wait_for("origin not allowed", Duration::from_secs(2))?;
    let log = relay.log.text();
    let warning_at = log.find("origin not allowed").context("the warning")?;
    assert_eq!(
        calls(&log[..warning_at]),
        21,
        "initialize and the 20 calls, before the warning: {log}"
    );
    ide.close_stdin();
    assert!(ide.wait(T)?.success());
    Ok(())
}

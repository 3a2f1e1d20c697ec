//! Sessions that survive the network: lossless resume through a fault-injecting proxy, resume
//! window and buffer bounds, heartbeats against a frozen connection, tool crashes, SIGTERM
//! drain, idle timeout and session limits. Each test ends with an empty process table.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use mcp_bridge_tests::proxy::FaultProxy;
use mcp_bridge_tests::{demo_tool, wait_until, Ide, Relay};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(15);

fn text_of(resp: &Value) -> &str {
    resp.pointer("/result/content/0/text")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn error_message(resp: &Value) -> &str {
    resp.pointer("/error/message")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// 10,000 requests and a stream of tool→IDE notifications through a proxy that cuts the
/// connection every ~100 ms: every request is answered exactly once and correctly, every
/// notification arrives exactly once and in order.
#[test]
fn lossless_under_random_connection_cuts() -> Result<()> {
    const REQUESTS: u64 = 10_000;
    const WINDOW: u64 = 64;
    const NOTES: u64 = 3_000;
    let relay = Relay::start(&demo_tool("demo", ""))?;
    let proxy = Arc::new(FaultProxy::start(relay.addr)?);
    let mut ide = Ide::connect(&proxy.url("demo"), &[])?;
    ide.initialize()?;

    // A long tool call whose progress notifications flow tool → IDE the whole time.
    ide.send(&json!({"jsonrpc": "2.0", "id": "notes", "method": "tools/call",
        "params": {"name": "slow", "arguments": {"steps": NOTES, "delay_ms": 1}, "_meta": {"progressToken": "p"}}}))?;

    let stop = Arc::new(AtomicBool::new(false));
    let cutter = proxy.random_cuts(Duration::from_millis(100), stop.clone());
    let started = Instant::now();

    let mut answers: HashMap<u64, u32> = HashMap::new();
    let (mut wrong, mut errors, mut notes_seen, mut out_of_order) = (0u64, 0u64, 0u64, 0u64);
    let mut last_note = 0u64;
    let mut slow_done = false;
    let (mut sent, mut in_flight) = (0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(240);
    while (answers.len() as u64) < REQUESTS || !slow_done {
        ensure!(
            Instant::now() < deadline,
            "timed out: {} answers, notes {notes_seen}",
            answers.len()
        );
        while sent < REQUESTS && in_flight < WINDOW {
            sent += 1;
            in_flight += 1;
            ide.send(
                &json!({"jsonrpc": "2.0", "id": sent, "method": "tools/call",
                "params": {"name": "echo", "arguments": {"text": format!("m{sent}")}}}),
            )?;
        }
        let msg = ide.recv(Duration::from_secs(30))?;
        if msg["method"] == "notifications/progress" {
            let n = msg["params"]["progress"].as_u64().unwrap_or(0);
            notes_seen += 1;
            if n != last_note + 1 {
                out_of_order += 1;
            }
            last_note = n;
            continue;
        }
        if msg["id"] == "notes" {
            assert_eq!(text_of(&msg), format!("done after {NOTES} steps"), "{msg}");
            slow_done = true;
            continue;
        }
        let Some(id) = msg["id"].as_u64() else {
            anyhow::bail!("unexpected message {msg}");
        };
        in_flight -= 1;
        *answers.entry(id).or_default() += 1;
        if msg.get("error").is_some() {
            errors += 1;
            eprintln!("error answer: {msg}");
        } else if text_of(&msg) != format!("m{id}") {
            wrong += 1;
        }
    }
    stop.store(true, Ordering::SeqCst);
    let _ = cutter.join();
    let elapsed = started.elapsed();
    let duplicated = answers.values().filter(|&&n| n > 1).count();
    let lost = (1..=REQUESTS)
        .filter(|id| !answers.contains_key(id))
        .count();
    let stderr = ide.stderr.text();
    let mut away_ms: Vec<u64> = stderr
        .lines()
        .filter_map(|l| l.split("resumed the session after ").nth(1))
        .filter_map(|rest| rest.split(" ms").next()?.parse().ok())
        .collect();
    away_ms.sort_unstable();
    let resumes = away_ms.len();
    let pct = |p: usize| {
        away_ms
            .get((away_ms.len().saturating_sub(1)) * p / 100)
            .copied()
            .unwrap_or(0)
    };
    println!(
        "fault test: {REQUESTS} requests, {} answered, {lost} lost, {duplicated} duplicated, {wrong} wrong, \
         {errors} errors; {notes_seen}/{NOTES} notifications, {out_of_order} out of order; \
         {} connections cut, {resumes} resumes (cut to resumed: p50 {} ms, p90 {} ms, max {} ms), {:.1} s",
        answers.len(),
        proxy.cuts(),
        pct(50),
        pct(90),
        pct(100),
        elapsed.as_secs_f64()
    );
    assert_eq!((lost, duplicated, wrong, errors), (0, 0, 0, 0));
    assert_eq!((notes_seen, out_of_order), (NOTES, 0));
    assert!(proxy.cuts() >= 10, "the proxy should have cut many times");
    assert!(resumes >= 5, "client stderr:\n{}", ide.stderr.text());
    ide.close_stdin();
    assert!(ide.wait(T)?.success());
    relay.wait_no_children(T)?;
    Ok(())
}

/// Past the resume window the relay ends the session; when the client comes back it learns
/// why, answers the call in flight with that reason, and a fresh session serves later calls.
#[test]
fn resume_window_expiry_then_a_fresh_session() -> Result<()> {
    let relay = Relay::start_with("resume_window_ms = 400", &demo_tool("demo", ""), None)?;
    let proxy = FaultProxy::start(relay.addr)?;
    let mut ide = Ide::connect(&proxy.url("demo"), &[])?;
    ide.initialize()?;
    ide.send(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "slow", "arguments": {"steps": 100, "delay_ms": 20}, "_meta": {"progressToken": 1}}}))?;
    // The call is at the tool once its progress flows back.
    ide.recv_until(T, |m| m["method"] == "notifications/progress")?;
    proxy.set_refusing(true);
    proxy.cut_all();
    relay.log.wait_for("longer than the resume window", T)?;
    relay.wait_no_children(T)?;
    proxy.set_refusing(false);
    let resp = ide.recv_until(T, |m| m["id"] == 1)?;
    assert!(error_message(&resp).contains("resume window"), "{resp}");
    // The next call opens a new session, replaying the handshake first.
    let echo = ide.request(
        json!(2),
        "tools/call",
        json!({"name": "echo", "arguments": {"text": "again"}}),
    )?;
    assert_eq!(text_of(&echo), "again", "{echo}");
    // bridge-client wrote it before the answer, but stderr is collected by its own thread,
    // which may not have read it yet.
    let said_so = wait_until(T, || {
        let stderr = ide.stderr.text();
        stderr.contains("replaying") || stderr.contains("new session")
    });
    assert!(said_so.is_ok(), "{}", ide.stderr.text());
    ide.close_stdin();
    assert!(ide.wait(T)?.success());
    relay.wait_no_children(T)?;
    Ok(())
}

/// While the client is away, the tool's output is buffered up to a bound; past it the session
/// ends, and the returning client is told why.
#[test]
fn resume_buffer_bound_ends_the_session_with_a_reason() -> Result<()> {
    let relay = Relay::start_with("resume_buffer_messages = 8", &demo_tool("demo", ""), None)?;
    let proxy = FaultProxy::start(relay.addr)?;
    let mut ide = Ide::connect(&proxy.url("demo"), &[])?;
    ide.initialize()?;
    ide.send(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "slow", "arguments": {"steps": 200, "delay_ms": 5}, "_meta": {"progressToken": 1}}}))?;
    ide.recv_until(T, |m| m["method"] == "notifications/progress")?;
    proxy.set_refusing(true);
    proxy.cut_all();
    relay.log.wait_for("filled the resume buffer", T)?;
    proxy.set_refusing(false);
    let resp = ide.recv_until(T, |m| m["id"] == 1)?;
    assert!(error_message(&resp).contains("resume buffer"), "{resp}");
    let echo = ide.request(
        json!(2),
        "tools/call",
        json!({"name": "echo", "arguments": {"text": "fresh"}}),
    )?;
    assert_eq!(text_of(&echo), "fresh");
    ide.close_stdin();
    assert!(ide.wait(T)?.success());
    relay.wait_no_children(T)?;
    Ok(())
}

/// A proxy that stops forwarding without closing: the client's heartbeat notices within its
/// timeout, the client reconnects and resumes, and the call in flight completes normally.
#[test]
fn client_heartbeat_detects_a_frozen_connection_and_resumes() -> Result<()> {
    // The relay's own heartbeat is left at its (long) default, so only the client can notice.
    let relay = Relay::start(&demo_tool("demo", ""))?;
    let proxy = FaultProxy::start(relay.addr)?;
    let mut ide = Ide::connect(
        &proxy.url("demo"),
        &["--heartbeat-interval", "0.2", "--heartbeat-timeout", "0.6"],
    )?;
    ide.initialize()?;
    ide.send(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "slow", "arguments": {"steps": 10, "delay_ms": 100}}}))?;
    let frozen_at = Instant::now();
    proxy.freeze_existing();
    let resp = ide.recv_until(T, |m| m["id"] == 1)?;
    assert_eq!(text_of(&resp), "done after 10 steps", "{resp}");
    let stderr = ide.stderr.text();
    assert!(
        stderr.contains("no heartbeat from the peer for 0.6 s"),
        "{stderr}"
    );
    assert!(stderr.contains("resumed the session"), "{stderr}");
    println!(
        "frozen connection: answer after {:?} (client heartbeat timeout 0.6 s)",
        frozen_at.elapsed()
    );
    assert!(proxy.accepted() >= 2, "the client opened a new connection");
    ide.close_stdin();
    assert!(ide.wait(T)?.success());
    relay.wait_no_children(T)?;
    Ok(())
}

/// The same from the relay's side: its heartbeat notices a silent client, keeps the session
/// for a resume, and the client (told by the connection's end) resumes it.
#[test]
fn relay_heartbeat_detects_a_frozen_connection() -> Result<()> {
    let relay = Relay::start_with(
        "heartbeat_interval_ms = 200\nheartbeat_timeout_ms = 600",
        &demo_tool("demo", ""),
        None,
    )?;
    let proxy = FaultProxy::start(relay.addr)?;
    let mut ide = Ide::connect(&proxy.url("demo"), &[])?;
    ide.initialize()?;
    ide.send(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "slow", "arguments": {"steps": 10, "delay_ms": 100}}}))?;
    proxy.freeze_existing();
    relay
        .log
        .wait_for("no heartbeat from the peer for 0.6 s", T)?;
    let resp = ide.recv_until(T, |m| m["id"] == 1)?;
    assert_eq!(text_of(&resp), "done after 10 steps", "{resp}");
    ide.close_stdin();
    assert!(ide.wait(T)?.success());
    relay.wait_no_children(T)?;
    Ok(())
}

/// A tool that crashes mid-call: every call in flight gets an error within 1 s naming the tool
/// and its exit status; the child is reaped; the IDE's next call gets a fresh tool.
#[test]
fn tool_crash_mid_call_answers_everything_in_flight() -> Result<()> {
    let relay = Relay::start(&demo_tool("demo", ""))?;
    let mut ide = Ide::connect(&relay.url("demo"), &[])?;
    ide.initialize()?;
    ide.send(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "slow", "arguments": {"steps": 1000, "delay_ms": 10}}}))?;
    ide.send(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "slow", "arguments": {"steps": 1000, "delay_ms": 10}}}))?;
    let crashed_at = Instant::now();
    ide.send(&json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "crash", "arguments": {"code": 7}}}))?;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let resp = ide.recv(T)?;
        let msg = error_message(&resp);
        assert!(
            msg.contains("tool `demo`") && msg.contains("exited with status 7"),
            "{resp}"
        );
        seen.push(resp["id"].as_u64().unwrap());
    }
    let took = crashed_at.elapsed();
    seen.sort();
    assert_eq!(seen, [1, 2, 3]);
    println!("tool crash: 3 calls in flight answered within {took:?}");
    // Answered by the crash, not by the slow calls finishing (10 s each): a bound well under
    // that, loose enough for a loaded CI machine.
    assert!(took < Duration::from_secs(5), "answers took {took:?}");
    relay.wait_no_children(T)?;
    let echo = ide.request(
        json!(4),
        "tools/call",
        json!({"name": "echo", "arguments": {"text": "new tool"}}),
    )?;
    assert_eq!(text_of(&echo), "new tool", "{echo}");
    ide.close_stdin();
    assert!(ide.wait(T)?.success());
    relay.wait_no_children(T)?;
    Ok(())
}

/// SIGTERM: the relay stops accepting, tells clients, lets the call in flight finish within
/// the grace period, then ends its tools and exits 0.
#[test]
fn sigterm_drains_a_call_in_flight() -> Result<()> {
    let relay = Relay::start_with("shutdown_grace_ms = 5000", &demo_tool("demo", ""), None)?;
    let mut ide = Ide::connect(&relay.url("demo"), &[])?;
    ide.initialize()?;
    ide.send(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "slow", "arguments": {"steps": 10, "delay_ms": 50}, "_meta": {"progressToken": 1}}}))?;
    // The call is at the tool once its progress flows back.
    ide.recv_until(T, |m| m["method"] == "notifications/progress")?;
    let relay_pid = relay.pid();
    relay.terminate();
    let resp = ide.recv_until(T, |m| m["id"] == 1)?;
    assert_eq!(text_of(&resp), "done after 10 steps", "{resp}");
    assert!(
        ide.stderr.text().contains("draining"),
        "{}",
        ide.stderr.text()
    );
    let status = relay.wait_exit(T)?;
    assert!(status.success(), "{status}");
    assert!(mcp_bridge_tests::children_of(relay_pid).is_empty());
    // The relay is gone: a new call is answered with an error, not left hanging.
    let after = ide.request(json!(2), "ping", json!({}))?;
    assert!(after.get("error").is_some(), "{after}");
    ide.close_stdin();
    assert!(ide.wait(T)?.success());
    Ok(())
}

/// A call that outlives the grace period is ended with an error that says why.
#[test]
fn sigterm_grace_period_ends_long_calls() -> Result<()> {
    let relay = Relay::start_with("shutdown_grace_ms = 300", &demo_tool("demo", ""), None)?;
    let mut ide = Ide::connect(&relay.url("demo"), &[])?;
    ide.initialize()?;
    ide.send(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "slow", "arguments": {"steps": 1000, "delay_ms": 20}}}))?;
    wait_until(T, || relay.children().len() == 1)?;
    let relay_pid = relay.pid();
    relay.terminate();
    let resp = ide.recv_until(T, |m| m["id"] == 1)?;
    assert!(error_message(&resp).contains("shutting down"), "{resp}");
    assert!(relay.wait_exit(T)?.success());
    assert!(mcp_bridge_tests::children_of(relay_pid).is_empty());
    Ok(())
}

/// Session limits refuse before the upgrade (503 with a reason); an idle session is ended and
/// the IDE's next call transparently gets a new one.
#[test]
fn limits_per_tool_and_idle_timeout() -> Result<()> {
    let relay = Relay::start_with(
        "idle_timeout_ms = 500",
        &demo_tool("demo", "max_sessions = 2"),
        None,
    )?;
    let mut a = Ide::connect(&relay.url("demo"), &[])?;
    let mut b = Ide::connect(&relay.url("demo"), &[])?;
    a.initialize()?;
    b.initialize()?;
    let mut c = Ide::connect(&relay.url("demo"), &[])?;
    assert!(!c.wait(T)?.success());
    let err = c.stderr.text();
    assert!(
        err.contains("HTTP 503") && err.contains("maximum of 2 sessions"),
        "{err}"
    );

    relay.log.wait_for("idle for 500 ms", T)?;
    relay.wait_no_children(T)?;
    let echo = a.request(
        json!(5),
        "tools/call",
        json!({"name": "echo", "arguments": {"text": "after idle"}}),
    )?;
    assert_eq!(text_of(&echo), "after idle", "{echo}");
    a.close_stdin();
    b.close_stdin();
    assert!(a.wait(T)?.success());
    assert!(b.wait(T)?.success());
    relay.wait_no_children(T)?;
    Ok(())
}

/// Deep pipelining with tool→IDE traffic on top: 3,000 requests sent without waiting, each
/// answered with a progress notification and a result. More is in flight than any one queue
/// holds, so this only completes if acknowledgements keep flowing while the tool is busy.
#[test]
fn deep_pipelining_with_notifications_does_not_stall() -> Result<()> {
    const N: u64 = 3_000;
    let relay = Relay::start(&demo_tool("demo", ""))?;
    let mut ide = Ide::connect(&relay.url("demo"), &[])?;
    ide.initialize()?;
    let started = Instant::now();
    for i in 0..N {
        ide.send(&json!({"jsonrpc": "2.0", "id": i, "method": "tools/call",
            "params": {"name": "slow", "arguments": {"steps": 1, "delay_ms": 0}, "_meta": {"progressToken": i}}}))?;
    }
    let (mut results, mut notes) = (0u64, 0u64);
    while results < N {
        let msg = ide.recv(Duration::from_secs(30))?;
        if msg["method"] == "notifications/progress" {
            notes += 1;
        } else {
            assert_eq!(text_of(&msg), "done after 1 steps", "{msg}");
            results += 1;
        }
    }
    println!(
        "deep pipelining: {results} results, {notes} notifications in {:?}",
        started.elapsed()
    );
    assert_eq!(notes, N);
    ide.close_stdin();
    assert!(ide.wait(T)?.success());
    relay.wait_no_children(T)?;
    Ok(())
}

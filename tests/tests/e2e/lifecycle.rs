//! How sessions end, seen from both ends: the tool told by EOF on its stdin, bridge-client ended
//! by a signal as IDEs end it, and requests written before a first connection that fails.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mcp_bridge_tests::{
    alive, bin, demo_tool, fixture_tool, signal, wait_child, wait_until, Ide, Relay, TempDir,
};
use serde_json::{json, Value};

/// L1. docs/protocol.md, session lifecycle: "A tool still running has its stdin closed; after
/// `kill_grace_ms` its process group gets SIGTERM" — so a tool that exits on EOF (as MCP stdio
/// servers do) ends by itself and never sees the signal. The fixture records which came first.
///
/// Bound: the tool has recorded how it ended within 5 s of the IDE closing stdin, and that is
/// `EOF`; no session or process is left 5 s after.
#[test]
fn l1_a_finished_session_closes_the_tools_stdin_and_the_tool_exits_by_itself() -> Result<()> {
    let dir = TempDir::new();
    let record = dir.path().join("how-it-ended");
    let relay = Relay::start(&fixture_tool(
        "rec",
        &["--record", record.to_str().unwrap()],
        "",
    ))?;
    let mut ide = Ide::connect(&relay.url("rec"), &[])?;
    let init = ide.initialize()?;
    assert_eq!(
        init["result"]["serverInfo"]["name"], "mcp-bridge-test-fixture",
        "{init}"
    );
    let list = ide.request(json!(1), "tools/list", json!({}))?;
    assert_eq!(list["result"]["tools"], json!([]), "{list}");

    let closed = Instant::now();
    ide.close_stdin();
    let status = ide.wait(Duration::from_secs(5))?;
    assert!(status.success(), "bridge-client: {status}");
    wait_until(Duration::from_secs(5), || record.exists())
        .context("the tool recorded nothing within 5 s of the session's end")?;
    let took = closed.elapsed();
    let how = std::fs::read_to_string(&record)?;
    println!("the tool recorded {how:?} {took:?} after the IDE closed stdin");
    relay.wait_idle("rec", Duration::from_secs(5))?;
    assert_eq!(
        how, "EOF",
        "the tool was ended by {how} {took:?} after the IDE closed stdin, instead of seeing EOF \
         on its stdin"
    );
    Ok(())
}

/// L2. docs/protocol.md, "stdin EOF": bridge-client tells the relay with `end` when it is done,
/// so the relay does not keep the session for its resume window. IDEs (Claude Code, Gemini CLI)
/// stop a stdio server with a signal, stdin still open, shortly after their last message; that
/// is the same "done", and the relay must not be left holding the session and its tool for the
/// resume window (60 s).
///
/// Bound: for each of SIGTERM, SIGINT and SIGHUP, sent ~20 ms after the IDE's last message,
/// bridge-client exits and the relay holds no session of that tool (`mcp_bridge_sessions_active`)
/// and its tool process is gone, within 2 s.
#[test]
fn l2_bridge_client_ended_by_a_signal_leaves_no_session_on_the_relay() -> Result<()> {
    let signals = ["TERM", "INT", "HUP"];
    let tools: String = signals
        .iter()
        .map(|s| demo_tool(&format!("demo-{s}"), ""))
        .collect();
    let relay = Relay::start(&tools)?;
    let mut outcomes = Vec::new();
    for sig in signals {
        let tool = format!("demo-{sig}");
        let before: Vec<u32> = relay.children().iter().map(|c| c.0).collect();
        let mut ide = Ide::connect(&relay.url(&tool), &[])?;
        ide.initialize()?;
        let list = ide.request(json!(1), "tools/list", json!({}))?;
        assert!(list["result"]["tools"].is_array(), "{list}");
        let tool_pid = relay
            .children()
            .iter()
            .map(|c| c.0)
            .find(|p| !before.contains(p))
            .context("the session's tool process")?;
        assert_eq!(relay.sessions_active(&tool)?, 1.0);
        // The IDE's habit: its last message, then the signal ~20 ms later, stdin left open.
        ide.send(
            &json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": {"requestId": 99, "reason": "shutting down"}}),
        )?;
        std::thread::sleep(Duration::from_millis(20));
        let signalled = Instant::now();
        signal(ide.pid(), sig);
        let exit = match ide.wait(Duration::from_secs(2)) {
            Ok(status) => format!("exited ({status})"),
            Err(e) => format!("did not exit ({e})"),
        };
        let gone = wait_until(Duration::from_secs(2), || {
            relay.sessions_active(&tool).is_ok_and(|n| n == 0.0) && !alive(tool_pid)
        });
        let outcome = match gone {
            Ok(()) => format!(
                "SIG{sig}: bridge-client {exit}; session and tool gone after {:?}",
                signalled.elapsed()
            ),
            Err(_) => format!(
                "SIG{sig}: bridge-client {exit}; after {:?} the relay still holds {} session(s) \
                 of `{tool}` and tool pid {tool_pid} is {}",
                signalled.elapsed(),
                relay.sessions_active(&tool)?,
                if alive(tool_pid) { "running" } else { "gone" }
            ),
        };
        println!("{outcome}");
        outcomes.push((gone.is_ok(), outcome));
    }
    assert!(
        outcomes.iter().all(|(ok, _)| *ok),
        "sessions left behind by a signalled bridge-client:\n{}",
        outcomes
            .iter()
            .map(|(_, o)| o.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(())
}

/// Runs bridge-client with `requests` already waiting on its stdin (written into the pipe before
/// it starts; the pipe stays open), until it exits. Returns its exit status, its stdout messages
/// and its stderr.
fn first_connection_fails(url: &str, requests: &[Value]) -> Result<(i32, Vec<Value>, String)> {
    let (read_end, write_end) = nix::unistd::pipe()?;
    let mut stdin = std::fs::File::from(write_end);
    for r in requests {
        writeln!(stdin, "{r}")?;
    }
    stdin.flush()?;
    let mut child = Command::new(bin("bridge-client"))
        .arg(url)
        .stdin(Stdio::from(read_end))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let status = match wait_child(&mut child, Duration::from_secs(15)) {
        Ok(s) => s,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e.context("bridge-client did not exit after its first connection failed"));
        }
    };
    drop(stdin);
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out)?;
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err)?;
    let msgs = out
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<Vec<Value>, _>>()
        .with_context(|| format!("stdout is not JSON lines: {out:?}"))?;
    Ok((status.code().unwrap_or(-1), msgs, err))
}

/// Checks one run: every request answered with -32011; returns a line saying what happened.
fn check_run(what: &str, run: usize, url: &str) -> Result<(bool, String)> {
    let requests: Vec<Value> = (1..=3)
        .map(|id| json!({"jsonrpc": "2.0", "id": id, "method": "tools/list", "params": {}}))
        .collect();
    let started = Instant::now();
    let (code, msgs, err) = first_connection_fails(url, &requests)?;
    let answered: Vec<i64> = (1..=3)
        .filter(|id| {
            msgs.iter()
                .any(|m| m["id"] == json!(id) && m["error"]["code"] == json!(-32011))
        })
        .collect();
    let ok = answered.len() == 3 && code != 0;
    let line = format!(
        "{what}, run {run}: exit {code} after {:?}; requests answered with -32011: {answered:?} \
         of [1, 2, 3]; {} line(s) on stdout; stderr: {}",
        started.elapsed(),
        msgs.len(),
        err.trim()
    );
    Ok((ok, line))
}

/// L3. docs/protocol.md, bridge-client behaviour: "If that first connection fails, it answers
/// the requests the IDE has already sent with `-32011`, prints one line on stderr, and exits 1."
///
/// Bound: in each of 5 runs with the relay down (a port nobody listens on) and 5 runs with an
/// unknown tool (404), all 3 requests written before bridge-client started are answered with
/// -32011 on stdout, and it exits non-zero (within 15 s).
#[test]
fn l3_requests_sent_before_the_first_connection_fails_are_answered() -> Result<()> {
    let relay = Relay::start(&demo_tool("demo", ""))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let down = format!("ws://127.0.0.1:{port}/mcp/demo");
    let unknown = relay.url("nope");
    let mut lines = Vec::new();
    let mut all_ok = true;
    for run in 1..=5 {
        for (what, url) in [("relay down", &down), ("unknown tool (404)", &unknown)] {
            let (ok, line) = check_run(what, run, url)?;
            println!("{line}");
            all_ok &= ok;
            lines.push(line);
        }
    }
    assert!(
        relay.children().is_empty(),
        "a refused session left a process"
    );
    assert!(
        all_ok,
        "requests left unanswered when the first connection failed:\n{}",
        lines.join("\n")
    );
    Ok(())
}

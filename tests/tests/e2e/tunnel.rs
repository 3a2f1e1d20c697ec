//! End-to-end: IDE (this test, speaking JSON lines) → bridge-client → WebSocket → bridge-server →
//! the built-in demo tool, and every kind of bad input on the way. No third-party peers needed.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use mcp_bridge_tests::{bin, demo_tool, tool_table, wait_until, Ide, Relay};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(10);

fn relay_with_demo() -> Result<Relay> {
    Relay::start(&demo_tool("demo", ""))
}

fn text_of(resp: &Value) -> &str {
    resp.pointer("/result/content/0/text")
        .and_then(Value::as_str)
        .unwrap_or("")
}

#[test]
fn demo_tool_full_flow_through_the_bridge() -> Result<()> {
    let relay = relay_with_demo()?;
    let mut ide = Ide::connect(&relay.url("demo"), &[])?;
    let init = ide.initialize()?;
    assert_eq!(init["result"]["serverInfo"]["name"], "mcp-bridge-demo");

    let tools = ide.request(json!(1), "tools/list", json!({}))?;
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["echo", "add", "slow", "crash", "sample"]);

    let echo = ide.request(
        json!("e-1"),
        "tools/call",
        json!({"name": "echo", "arguments": {"text": "héllo ✓"}}),
    )?;
    assert_eq!(text_of(&echo), "héllo ✓");
    let add = ide.request(
        json!(2),
        "tools/call",
        json!({"name": "add", "arguments": {"a": 2, "b": 3}}),
    )?;
    assert_eq!(text_of(&add), "5");

    // Progress notifications flow tool → IDE before the result.
    ide.send(&json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "slow", "arguments": {"steps": 3, "delay_ms": 20}, "_meta": {"progressToken": "tok"}}}))?;
    let mut progress = Vec::new();
    let result = loop {
        let msg = ide.recv(T)?;
        if msg["method"] == "notifications/progress" {
            assert_eq!(msg["params"]["progressToken"], "tok");
            progress.push(msg["params"]["progress"].as_u64().unwrap());
        } else {
            break msg;
        }
    };
    assert_eq!(progress, [1, 2, 3]);
    assert_eq!(text_of(&result), "done after 3 steps");

    // A tool → IDE request (sampling) whose id (0) collides with an IDE id used above.
    ide.send(&json!({"jsonrpc": "2.0", "id": 0, "method": "tools/call",
        "params": {"name": "sample", "arguments": {"prompt": "ping?"}}}))?;
    let req = ide.recv(T)?;
    assert_eq!(req["method"], "sampling/createMessage");
    assert_eq!(req["params"]["messages"][0]["content"]["text"], "ping?");
    ide.send(&json!({"jsonrpc": "2.0", "id": req["id"], "result": {
        "role": "assistant", "model": "test", "content": {"type": "text", "text": "pong"}}}))?;
    let sampled = ide.recv(T)?;
    assert_eq!(sampled["id"], 0);
    assert_eq!(text_of(&sampled), "client said: pong");

    // Unknown tool name: a JSON-RPC error, and the session goes on.
    let unknown = ide.request(
        json!(5),
        "tools/call",
        json!({"name": "nope", "arguments": {}}),
    )?;
    assert_eq!(unknown["error"]["code"], -32602);
    let echo = ide.request(
        json!(6),
        "tools/call",
        json!({"name": "echo", "arguments": {"text": "still here"}}),
    )?;
    assert_eq!(text_of(&echo), "still here");

    // Cancellation: the tool stops, the IDE gets no response for it, and carries on.
    ide.send(&json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "slow", "arguments": {"steps": 50, "delay_ms": 20}}}))?;
    ide.send(&json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 7, "reason": "user"}}))?;
    let ping = ide.request(json!(8), "ping", json!({}))?;
    assert_eq!(ping["result"], json!({}));
    ide.expect_silence(Duration::from_millis(300))?;

    // EOF on stdin: bridge-client exits 0 within 2 s, and the tool process is gone soon after.
    let started = Instant::now();
    ide.close_stdin();
    let status = ide.wait(Duration::from_secs(2))?;
    println!(
        "bridge-client exited {status} {:?} after stdin EOF",
        started.elapsed()
    );
    assert!(status.success(), "{status}: {}", ide.stderr.text());
    relay.wait_no_children(Duration::from_secs(5))?;
    Ok(())
}

#[test]
fn fifty_concurrent_sessions_each_get_their_own_child_and_answers() -> Result<()> {
    let relay = relay_with_demo()?;
    let mut ides = Vec::new();
    for _ in 0..50 {
        let mut ide = Ide::connect(&relay.url("demo"), &[])?;
        // Same ids in every session: routing must not mix them up.
        ide.send(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}))?;
        ides.push(ide);
    }
    for ide in &mut ides {
        let init = ide.recv(T)?;
        assert_eq!(init["id"], 1);
    }
    wait_until(T, || relay.children().len() == 50)?;
    for (i, ide) in ides.iter_mut().enumerate() {
        ide.send(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": format!("session {i}")}}}))?;
    }
    for (i, ide) in ides.iter_mut().enumerate() {
        let resp = ide.recv(T)?;
        assert_eq!(resp["id"], 2);
        assert_eq!(text_of(&resp), format!("session {i}"));
    }
    let pids: std::collections::HashSet<u32> = relay.children().iter().map(|c| c.0).collect();
    assert_eq!(pids.len(), 50, "one tool process per session");
    for ide in &mut ides {
        ide.close_stdin();
    }
    for ide in &mut ides {
        assert!(ide.wait(Duration::from_secs(3))?.success());
    }
    relay.wait_no_children(Duration::from_secs(10))?;
    Ok(())
}

#[test]
fn bad_lines_from_the_ide_get_errors_and_the_session_goes_on() -> Result<()> {
    let relay = Relay::start(&demo_tool("demo", ""))?;
    let mut ide = Ide::connect(&relay.url("demo"), &["--max-message-size", "4096"])?;
    ide.initialize()?;

    ide.send_raw(b"{this is not json")?;
    let err = ide.recv(T)?;
    assert_eq!(err["error"]["code"], -32700);
    assert_eq!(err["id"], Value::Null);

    ide.send_raw(br#"[{"jsonrpc":"2.0","id":"b1","method":"ping"},{"jsonrpc":"2.0","method":"x"},{"jsonrpc":"2.0","id":"b2","method":"ping"}]"#)?;
    let batch = ide.recv(T)?;
    let ids: Vec<&Value> = batch.as_array().unwrap().iter().map(|e| &e["id"]).collect();
    assert_eq!(ids, [&json!("b1"), &json!("b2")]);
    assert_eq!(batch[0]["error"]["code"], -32600);

    // Oversize: the id is recovered from the head, so the request is answered.
    let big = "x".repeat(10_000);
    ide.send(&json!({"jsonrpc": "2.0", "id": 42, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": big}}}))?;
    let too_big = ide.recv(T)?;
    assert_eq!(too_big["id"], 42);
    assert_eq!(too_big["error"]["code"], -32012);
    assert!(
        too_big["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limit of 4 KiB"),
        "{too_big}"
    );

    ide.send_raw(br#"{"jsonrpc":"2.0","id":9}"#)?;
    let invalid = ide.recv(T)?;
    assert_eq!(invalid["error"]["code"], -32600);
    assert_eq!(invalid["id"], 9);

    let echo = ide.request(
        json!(10),
        "tools/call",
        json!({"name": "echo", "arguments": {"text": "ok"}}),
    )?;
    assert_eq!(text_of(&echo), "ok");
    assert!(
        ide.stderr.text().contains("batch"),
        "client logs the batch on stderr"
    );
    ide.close_stdin();
    assert!(ide.wait(T)?.success());
    relay.wait_no_children(T)?;
    Ok(())
}

#[test]
fn oversize_tool_output_becomes_an_error_for_that_request() -> Result<()> {
    let relay = Relay::start(&demo_tool("small", "max_message_size = 2048"))?;
    let mut ide = Ide::connect(&relay.url("small"), &[])?;
    ide.initialize()?;
    let big = "y".repeat(1500); // fits going in; the response (with JSON around it) still fits
    let ok = ide.request(
        json!(1),
        "tools/call",
        json!({"name": "echo", "arguments": {"text": big}}),
    )?;
    assert_eq!(text_of(&ok).len(), 1500);
    // The relay refuses an inbound message over its limit with an error for that id.
    let huge = "z".repeat(5000);
    let refused = ide.request(
        json!(2),
        "tools/call",
        json!({"name": "echo", "arguments": {"text": huge}}),
    )?;
    assert_eq!(refused["error"]["code"], -32012, "{refused}");
    let after = ide.request(json!(3), "ping", json!({}))?;
    assert_eq!(after["result"], json!({}));
    Ok(())
}

#[test]
fn unknown_tool_is_refused_with_404_before_the_upgrade() -> Result<()> {
    let relay = relay_with_demo()?;
    let mut ide = Ide::connect(&relay.url("nope"), &[])?;
    let status = ide.wait(T)?;
    assert!(!status.success());
    let err = ide.stderr.text();
    assert!(err.contains("HTTP 404"), "{err}");
    assert!(err.contains("unknown tool `nope`"), "{err}");
    assert!(err.contains(&relay.url("nope")), "{err}");
    assert!(
        relay.children().is_empty(),
        "no child spawned for a refused session"
    );
    Ok(())
}

#[test]
fn relay_down_is_one_clear_line_and_pending_requests_are_answered() -> Result<()> {
    // Bind and drop a listener to find a port with nothing on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let url = format!("ws://127.0.0.1:{port}/mcp/demo");
    let mut ide = Ide::connect(&url, &[])?;
    let _ = ide.send(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}));
    let status = ide.wait(T)?;
    assert!(!status.success());
    let err = ide.stderr.text();
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("bridge-client:"))
        .collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].contains("cannot reach the relay") && lines[0].contains(&url),
        "{err}"
    );
    Ok(())
}

#[test]
fn a_tool_command_that_does_not_exist_is_a_502_with_the_reason() -> Result<()> {
    let relay = Relay::start(&tool_table(
        "ghost",
        Path::new("/nonexistent/mcp-tool"),
        &[],
        "",
    ))?;
    let mut ide = Ide::connect(&relay.url("ghost"), &[])?;
    let status = ide.wait(T)?;
    assert!(!status.success());
    let err = ide.stderr.text();
    assert!(err.contains("HTTP 502"), "{err}");
    assert!(err.contains("cannot start tool `ghost`"), "{err}");
    assert!(err.contains("No such file"), "{err}");
    assert!(relay.log.text().contains("cannot start tool `ghost`"));
    Ok(())
}

#[test]
fn a_tool_that_exits_at_once_answers_with_its_status_and_the_client_goes_on() -> Result<()> {
    let relay = Relay::start(&tool_table(
        "quitter",
        Path::new("/bin/sh"),
        &["-c", "echo going away >&2; exit 3"],
        "",
    ))?;
    let mut ide = Ide::connect(&relay.url("quitter"), &[])?;
    // Each request gets one answer that names the exit: from the relay (the tool left before
    // answering) or from the client (the relay ended the session with that reason).
    for id in 1..=2 {
        ide.send(&json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {}}))?;
        let resp = ide.recv(T)?;
        assert_eq!(resp["id"], id);
        let message = resp["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains("exited with status 3"), "{resp}");
        assert!(message.contains("quitter"), "{resp}");
    }
    // bridge-client stays up for the IDE (IDEs do not restart a stdio server) and exits 0 on EOF.
    ide.close_stdin();
    assert!(ide.wait(T)?.success(), "{}", ide.stderr.text());
    relay.log.wait_for("going away", T)?;
    relay.wait_no_children(T)?;
    Ok(())
}

#[test]
fn a_non_json_banner_on_tool_stdout_is_logged_and_skipped() -> Result<()> {
    let server = bin("bridge-server");
    let script = format!(
        "echo 'Starting demo server v1.0 on stdio'; exec {} demo-tool",
        server.display()
    );
    let relay = Relay::start(&tool_table(
        "banner",
        Path::new("/bin/sh"),
        &["-c", &script],
        "",
    ))?;
    let mut ide = Ide::connect(&relay.url("banner"), &[])?;
    let init = ide.initialize()?;
    assert_eq!(init["result"]["serverInfo"]["name"], "mcp-bridge-demo");
    relay.log.wait_for("not a JSON-RPC message", T)?;
    assert!(relay.log.text().contains("Starting demo server v1.0"));
    ide.close_stdin();
    assert!(ide.wait(T)?.success());
    relay.wait_no_children(T)?;
    Ok(())
}

#[test]
fn healthz_answers() -> Result<()> {
    let relay = relay_with_demo()?;
    let mut stream = std::net::TcpStream::connect(relay.addr)?;
    use std::io::{Read, Write};
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
    let mut resp = String::new();
    stream.read_to_string(&mut resp)?;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    Ok(())
}

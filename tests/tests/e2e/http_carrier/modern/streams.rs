//! Session-less streams: cancel on close, `subscriptions/listen`, a drain, the idle end.

use std::io::{Read, Write};
use std::time::Duration;

use anyhow::{Context, Result};
use mcp_bridge_tests::{fixture_tool, relay_config, wait_until, Relay};
use serde_json::Value;

use super::{answer, body, fixture_relay_with_cancels, text_of, tool_call, Listening, MODERN};

#[test]
fn closing_the_stream_before_the_answer_cancels_the_call_at_the_tool() -> Result<()> {
    let (relay, _dir, cancels) = fixture_relay_with_cancels()?;
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
    let r = tool_call(relay.addr, "fx", "\"c2\"", "echo", r#"{"text":"after"}"#)?;
    let v = answer(&r)?;
    assert_eq!(
        (v["id"].clone(), text_of(&v)),
        ("c2".into(), "after".to_owned()),
        "{v}"
    );
    Ok(())
}

#[test]
fn subscriptions_listen_streams_the_tools_changes_until_the_client_closes_it() -> Result<()> {
    let (relay, _dir, cancels) = fixture_relay_with_cancels()?;
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
    let r = tool_call(relay.addr, "fx", "\"L1\"", "change", "{}")?;
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
fn a_drain_lets_a_call_in_flight_answer_ends_subscriptions_and_refuses_new_requests() -> Result<()>
{
    let relay = Relay::start(&fixture_tool("fx", &["--modern"], ""))?;
    let addr = relay.addr;
    let mut listen = Listening::open(
        addr,
        "fx",
        &body(
            "\"L9\"",
            "subscriptions/listen",
            r#""notifications":{}"#,
            MODERN,
        ),
        "subscriptions/listen",
    )?;
    listen.next("notifications/subscriptions/acknowledged")?;
    let slow = std::thread::spawn(move || tool_call(addr, "fx", "1", "sleep", r#"{"seconds":2}"#));
    // Once the call is on its way to the tool (after the listen), the relay drains.
    let taken = "a session-less call goes to the tool";
    wait_until(Duration::from_secs(20), || {
        relay.log.text().matches(taken).count() >= 2
    })?;
    relay.terminate();
    relay.log.wait_for("draining", Duration::from_secs(5))?;
    // The listener stays open while a session (the pooled process) is left.
    let r = tool_call(addr, "fx", "2", "echo", r#"{"text":"x"}"#)?;
    assert_eq!(r.status, 503, "{r:?}");
    let v: Value = serde_json::from_str(&r.body)?;
    assert_eq!(v["error"]["code"], -32011, "{v}");
    // The subscription ends gracefully: its completion result, with its own id.
    let done = listen.next_where("the listen's result", |v| v["id"] == "L9")?;
    assert_eq!(done["result"]["resultType"], "complete", "{done}");
    let sub = "io.modelcontextprotocol/subscriptionId";
    assert_eq!(done["result"]["_meta"][sub], "L9", "{done}");
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
        let r = tool_call(relay.addr, "fx", "1", "pid", "{}")?;
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

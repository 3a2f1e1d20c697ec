//! Faults on the Streamable HTTP carrier: a tool that dies in the middle of an SSE answer, and
//! a relay told to drain while HTTP calls are in flight.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use mcp_bridge_tests::{fixture_tool, relay_config, Relay};
use serde_json::Value;

use super::{ACCEPT_BOTH, INIT, JSON};
use mcp_bridge_tests::http_raw::raw;

/// The JSON-RPC error code for "the tool exited" (`shared::jsonrpc::TOOL_EXITED`).
const TOOL_EXITED: i64 = -32010;

/// Starts a session; returns its id.
fn initialize(addr: SocketAddr) -> Result<String> {
    let r = raw(addr, "POST", "/mcp/fx", &[ACCEPT_BOTH, JSON], INIT)?;
    if r.status != 200 {
        bail!("initialize answered {r:?}");
    }
    Ok(r.header("mcp-session-id")
        .context("Mcp-Session-Id")?
        .to_owned())
}

fn call(id: u32, tool: &str, args: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{args}}}}}"#
    )
}

#[test]
fn a_tool_that_dies_mid_answer_ends_its_stream_with_an_error_and_its_session() -> Result<()> {
    let relay = Relay::start(&fixture_tool("fx", &[], ""))?;
    let sid = initialize(relay.addr)?;
    let session = ("Mcp-Session-Id", sid.as_str());
    let r = raw(
        relay.addr,
        "POST",
        "/mcp/fx",
        &[ACCEPT_BOTH, JSON, session],
        &call(7, "crash", "{}"),
    )?;
    assert_eq!(r.status, 200, "{r:?}");
    let events = r.messages();
    let answer = &events.last().context("an answer on the stream")?.1;
    assert_eq!(answer["id"], 7, "{r:?}");
    assert_eq!(answer["error"]["code"], TOOL_EXITED, "{r:?}");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains('3'), "the message names the exit: {r:?}");
    // The session ended with its tool: the client is told to start a new one.
    let r = raw(
        relay.addr,
        "POST",
        "/mcp/fx",
        &[ACCEPT_BOTH, JSON, session],
        &call(8, "cwd", "{}"),
    )?;
    assert_eq!(r.status, 404, "{r:?}");
    relay.wait_idle("fx", Duration::from_secs(10))?;
    Ok(())
}

#[test]
fn a_drain_lets_http_calls_in_flight_answer_and_refuses_new_sessions() -> Result<()> {
    let relay = Relay::start_config(
        &relay_config("shutdown_grace_ms = 20000", &fixture_tool("fx", &[], "")),
        &[],
    )?;
    let sid = initialize(relay.addr)?;
    let body = call(5, "sleep", r#"{"seconds":2}"#);
    let mut s = TcpStream::connect(relay.addr)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(
        s,
        "POST /mcp/fx HTTP/1.1\r\nHost: test\r\nAccept: application/json, text/event-stream\r\n\
         Content-Type: application/json\r\nMcp-Session-Id: {sid}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    // The answer stream is open (its head and priming event): the call is in flight.
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("id:") {
        let n = s.read(&mut buf)?;
        if n == 0 {
            bail!("stream ended early: {}", String::from_utf8_lossy(&seen));
        }
        seen.extend_from_slice(&buf[..n]);
    }
    relay.terminate();
    relay.log.wait_for("draining", Duration::from_secs(5))?;
    let r = raw(relay.addr, "POST", "/mcp/fx", &[ACCEPT_BOTH, JSON], INIT)?;
    assert_eq!(r.status, 503, "no new session while draining: {r:?}");
    s.read_to_end(&mut seen)?;
    let text = String::from_utf8_lossy(&seen).into_owned();
    let answer: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    let last = answer.last().context("the call's answer")?;
    assert_eq!(last["id"], 5, "{text}");
    assert_eq!(
        last["result"]["content"][0]["text"], "slept",
        "the call finished: {text}"
    );
    let status = relay.wait_exit(Duration::from_secs(20))?;
    assert_eq!(status.code(), Some(0), "the relay exits 0 after its drain");
    Ok(())
}

//! Streamable HTTP requests that reach the wrong node (a load balancer that cannot route by
//! session: round robin, ingress-nginx's hash): the relay passes a request for another node's
//! session on to that node (`[cluster]`) and streams its answer back; when that node is gone,
//! 404 so the host starts a new session; never passed on twice.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use mcp_bridge_tests::http_raw::{raw, Resp, SseStream};
use mcp_bridge_tests::{demo_tool, relay_config, Relay};
use serde_json::Value;

const ACCEPT_BOTH: (&str, &str) = ("Accept", "application/json, text/event-stream");
const JSON: (&str, &str) = ("Content-Type", "application/json");
const VERSION: (&str, &str) = ("MCP-Protocol-Version", "2025-11-25");
const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#;

/// `relay-1` (no `[cluster]`), then `relay-2`, which knows where `relay-1` is.
fn two_nodes() -> Result<(Relay, Relay)> {
    let one = Relay::start_full(
        &relay_config("", &demo_tool("demo", "")),
        &[("MCP_BRIDGE_NODE_ID", "relay-1")],
        &[],
    )?;
    let cluster = format!("[cluster]\npeers = {{ relay-1 = \"{}\" }}\n", one.addr);
    let two = Relay::start_full(
        &relay_config("", &format!("{cluster}\n{}", demo_tool("demo", ""))),
        &[("MCP_BRIDGE_NODE_ID", "relay-2")],
        &[],
    )?;
    Ok((one, two))
}

fn post(relay: &Relay, sid: &str, body: &str) -> Result<Resp> {
    raw(
        relay.addr,
        "POST",
        "/mcp/demo",
        &[ACCEPT_BOTH, JSON, VERSION, ("Mcp-Session-Id", sid)],
        body,
    )
}

fn echo_body(id: u64, text: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"text":"{text}"}}}}}}"#
    )
}

fn answer_of(r: &Resp, id: u64) -> Value {
    r.messages()
        .into_iter()
        .map(|(_, v)| v)
        .find(|v| v["id"] == id)
        .unwrap_or(Value::Null)
}

#[test]
fn a_request_for_another_nodes_session_is_passed_on_and_answered() -> Result<()> {
    let (one, two) = two_nodes()?;
    let r = raw(one.addr, "POST", "/mcp/demo", &[ACCEPT_BOTH, JSON], INIT)?;
    ensure!(r.status == 200, "{r:?}");
    let sid = r.header("mcp-session-id").context("session id")?.to_owned();
    ensure!(sid.starts_with("relay-1."), "{sid}");
    let r = post(
        &two,
        &sid,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    )?;
    assert_eq!(r.status, 202, "{r:?}");

    // Calls through the other node, each answered by the session's own tool on relay-1.
    for k in 0..20u64 {
        let text = format!("via-two-{k}");
        let r = post(&two, &sid, &echo_body(10 + k, &text))?;
        assert_eq!(r.status, 200, "{r:?}");
        let a = answer_of(&r, 10 + k);
        assert_eq!(
            a.pointer("/result/content/0/text").and_then(Value::as_str),
            Some(text.as_str()),
            "{a}"
        );
    }
    // A streamed answer with progress passes through as it comes, then ends.
    let slow = r#"{"jsonrpc":"2.0","id":99,"method":"tools/call","params":{"name":"slow","arguments":{"steps":4,"delay_ms":50},"_meta":{"progressToken":"p"}}}"#;
    let mut s = SseStream::open(
        two.addr,
        "POST",
        "/mcp/demo",
        &[ACCEPT_BOTH, JSON, VERSION, ("Mcp-Session-Id", &sid)],
        slow,
    )?;
    let mut progress = Vec::new();
    let mut answered = false;
    while let Some((_, ev)) = s.next_event()? {
        if ev["method"] == "notifications/progress" {
            progress.extend(ev["params"]["progress"].as_i64());
        } else if ev["id"] == 99 {
            answered = ev["result"].is_object();
        }
    }
    assert_eq!(progress, [1, 2, 3, 4]);
    assert!(answered, "the slow call's answer came through");
    // relay-2 started no tool of its own: everything ran on relay-1.
    assert!(two.children().is_empty(), "{:?}", two.children());
    assert_eq!(one.children().len(), 1, "{:?}", one.children());

    // DELETE through the other node ends the session on its node.
    let r = raw(
        two.addr,
        "DELETE",
        "/mcp/demo",
        &[VERSION, ("Mcp-Session-Id", &sid)],
        "",
    )?;
    assert_eq!(r.status, 200, "{r:?}");
    one.wait_idle("demo", Duration::from_secs(10))?;
    let passed =
        two.sample("mcp_bridge_http_forwarded_total{node=\"relay-1\",result=\"passed_on\"}")?;
    assert!(passed >= 23.0, "forwarded requests counted: {passed}");
    Ok(())
}

#[test]
fn a_lost_node_means_404_and_nothing_is_passed_on_twice() -> Result<()> {
    let (one, two) = two_nodes()?;
    let r = raw(one.addr, "POST", "/mcp/demo", &[ACCEPT_BOTH, JSON], INIT)?;
    let sid = r.header("mcp-session-id").context("session id")?.to_owned();

    // A request already passed on is served where it lands: relay-2 has no such session.
    let r = raw(
        two.addr,
        "POST",
        "/mcp/demo",
        &[
            ACCEPT_BOTH,
            JSON,
            VERSION,
            ("Mcp-Session-Id", &sid),
            ("mcp-bridge-forwarded", "relay-9"),
        ],
        &echo_body(2, "loop"),
    )?;
    assert_eq!(r.status, 404, "{r:?}");
    assert!(two.children().is_empty());

    // An unknown node (not in [cluster]) is not guessed at: 404 from relay-2 itself.
    let r = post(
        &two,
        "relay-9.0123456789abcdef0123456789abcdef",
        &echo_body(3, "x"),
    )?;
    assert_eq!(r.status, 404, "{r:?}");

    one.kill()?;
    let r = post(&two, &sid, &echo_body(4, "after"))?;
    assert_eq!(r.status, 404, "{r:?}");
    assert!(
        r.body.contains("relay-1") && r.body.contains("initialize"),
        "{r:?}"
    );
    // A new session then works on the node that is left.
    let r = raw(two.addr, "POST", "/mcp/demo", &[ACCEPT_BOTH, JSON], INIT)?;
    assert_eq!(r.status, 200, "{r:?}");
    let fresh = r.header("mcp-session-id").context("session id")?.to_owned();
    assert!(fresh.starts_with("relay-2."), "{fresh}");
    let key = "mcp_bridge_http_forwarded_total{node=\"relay-1\",result=\"unreachable\"}";
    assert_eq!(two.sample(key)?, 1.0, "{key}");
    Ok(())
}

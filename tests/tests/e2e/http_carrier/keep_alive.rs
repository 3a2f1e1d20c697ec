//! HTTP/1.1 keep-alive on Streamable HTTP: several requests of a session on one connection;
//! an idle kept-alive connection closed by `header_read_timeout_ms`; a refusal still closes.

use std::time::Duration;

use anyhow::{Context, Result};
use mcp_bridge_tests::{demo_tool, relay_config, Relay};

use super::{ACCEPT_BOTH, INIT, JSON};
use mcp_bridge_tests::http_raw::Conn;

#[test]
fn posts_of_a_session_share_one_connection_until_it_idles() -> Result<()> {
    let relay = Relay::start_config(
        &relay_config("header_read_timeout_ms = 1500", &demo_tool("demo", "")),
        &[],
    )?;
    let mut conn = Conn::open(relay.addr)?;
    let r = conn.send("POST", "/mcp/demo", &[ACCEPT_BOTH, JSON], INIT)?;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("connection"), None, "kept alive: {r:?}");
    let sid = r
        .header("mcp-session-id")
        .context("Mcp-Session-Id")?
        .to_owned();
    let session = ("Mcp-Session-Id", sid.as_str());
    let initialized = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    let r = conn.send(
        "POST",
        "/mcp/demo",
        &[ACCEPT_BOTH, JSON, session],
        initialized,
    )?;
    assert_eq!(r.status, 202, "{r:?}");
    let call = r#"{"jsonrpc":"2.0","id":"k","method":"tools/call","params":{"name":"echo","arguments":{"text":"same connection"}}}"#;
    let r = conn.send("POST", "/mcp/demo", &[ACCEPT_BOTH, JSON, session], call)?;
    assert_eq!(r.status, 200, "{r:?}");
    let events = r.messages();
    let answer = &events.last().context("an answer")?.1;
    assert_eq!(answer["id"], "k", "{r:?}");
    assert!(answer["result"].is_object(), "{r:?}");
    // Idle now: hyper's header timeout runs between requests and closes it.
    let idle = conn.wait_closed()?;
    assert!(
        idle < Duration::from_secs(6),
        "an idle connection is closed by the header timeout, took {idle:?}"
    );

    // A refusal ends its connection, as before.
    let mut conn = Conn::open(relay.addr)?;
    let unknown = ("Mcp-Session-Id", "00000000000000000000000000000000");
    let r = conn.send("POST", "/mcp/demo", &[ACCEPT_BOTH, JSON, unknown], INIT)?;
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    let closed = conn.wait_closed()?;
    assert!(closed < Duration::from_secs(1), "took {closed:?}");

    let mut conn = Conn::open(relay.addr)?;
    let r = conn.send("DELETE", "/mcp/demo", &[session], "")?;
    assert_eq!(r.status, 200, "{r:?}");
    relay.wait_idle("demo", Duration::from_secs(10))?;
    Ok(())
}

//! The session admin API on the relay's private metrics listener, and `bridge-server sessions`
//! in front of it: a bridge-client tunnel session, a plain WebSocket session and a Streamable
//! HTTP session listed with real figures (a live tool pid, calls and bytes that grow), shown,
//! and ended — the IDE gets an error naming the reason for its call in flight and then a new
//! session, the plain client a close frame with the reason, the HTTP client a 404, and each old
//! tool is reaped — tokens refused, and nothing of it on the public listener.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use mcp_bridge_tests::http_raw::{raw, Resp};
use mcp_bridge_tests::{
    alive, bin, demo_tool, hash_token, relay_config, token_auth, wait_until, Ide, Relay, TempDir,
};
use serde_json::{json, Value};

const ADMIN: &str = "admin-token-for-the-tests";
const ALICE: &str = "alice-token-for-the-tests";
const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#;

/// A relay hosting the demo tool for alice, with a metrics listener and an admin token.
fn admin_relay() -> Result<(Relay, SocketAddr)> {
    let body = format!(
        "[metrics]\nlisten = \"127.0.0.1:0\"\n{}[[admin.token]]\nname = \"ops\"\nsha256 = \"{}\"\n{}",
        token_auth(&[("alice", ALICE, &["demo"])])?,
        hash_token(ADMIN)?,
        demo_tool("demo", "")
    );
    let relay = Relay::start_config(&relay_config("", &body), &[])?;
    let admin = relay.metrics_addr()?;
    Ok((relay, admin))
}

/// bridge-client for alice, as an IDE starts it.
fn ide(relay: &Relay) -> Result<Ide> {
    Ide::spawn(
        Command::new(bin("bridge-client"))
            .arg(relay.url("demo"))
            .arg("--no-keyring")
            .env("MCP_BRIDGE_TOKEN", ALICE),
    )
}

fn admin_req(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> Result<Resp> {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    raw(addr, method, path, &headers, "")
}

fn json_of(resp: &Resp) -> Result<Value> {
    serde_json::from_str(&resp.body).with_context(|| format!("not JSON: {}", resp.body))
}

fn sessions(addr: SocketAddr) -> Result<Vec<Value>> {
    let resp = admin_req(addr, "GET", "/admin/sessions", Some(ADMIN))?;
    ensure!(resp.status == 200, "list: {} {}", resp.status, resp.body);
    Ok(json_of(&resp)?["sessions"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

fn by_carrier(list: &[Value], carrier: &str) -> Result<Value> {
    list.iter()
        .find(|s| s["carrier"] == carrier)
        .cloned()
        .with_context(|| format!("no {carrier} session in {list:?}"))
}

fn pid_of(s: &Value) -> Result<u32> {
    s["tool_pid"]
        .as_u64()
        .and_then(|p| u32::try_from(p).ok())
        .with_context(|| format!("no tool pid in {s}"))
}

fn echo(ide: &mut Ide, id: u64, text: &str) -> Result<Value> {
    ide.request(
        json!(id),
        "tools/call",
        json!({"name": "echo", "arguments": {"text": text}}),
    )
}

/// Opens a Streamable HTTP session for alice; its id.
fn http_session(relay: &Relay) -> Result<String> {
    let bearer = format!("Bearer {ALICE}");
    let headers = [
        ("Authorization", bearer.as_str()),
        ("Accept", "application/json, text/event-stream"),
        ("Content-Type", "application/json"),
    ];
    let resp = raw(relay.addr, "POST", "/mcp/demo", &headers, INIT)?;
    ensure!(
        resp.status == 200,
        "initialize: {} {}",
        resp.status,
        resp.body
    );
    let id = resp
        .header("mcp-session-id")
        .context("session id")?
        .to_owned();
    Ok(id)
}

fn http_post(relay: &Relay, session: &str, body: &str) -> Result<Resp> {
    let bearer = format!("Bearer {ALICE}");
    let headers = [
        ("Authorization", bearer.as_str()),
        ("Accept", "application/json, text/event-stream"),
        ("Content-Type", "application/json"),
        ("Mcp-Session-Id", session),
        ("MCP-Protocol-Version", "2025-11-25"),
    ];
    raw(relay.addr, "POST", "/mcp/demo", &headers, body)
}

/// Whether `pid` is gone and left no zombie among the relay's children.
fn reaped(relay: &Relay, pid: u32) -> bool {
    !alive(pid) && !relay.children().iter().any(|(p, _)| *p == pid)
}

#[test]
fn sessions_of_both_carriers_are_listed_shown_and_ended() -> Result<()> {
    let (relay, admin) = admin_relay()?;
    let mut ide = ide(&relay)?;
    ide.initialize()?;
    echo(&mut ide, 1, "one")?;
    let http = http_session(&relay)?;
    let call = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"over http"}}}"#;
    ensure!(http_post(&relay, &http, call)?.status == 200);

    let list = sessions(admin)?;
    ensure!(list.len() == 2, "two sessions: {list:?}");
    let ws = by_carrier(&list, "ws")?;
    let hs = by_carrier(&list, "http")?;
    for s in [&ws, &hs] {
        ensure!(s["user"] == "alice" && s["tool"] == "demo", "{s}");
        ensure!(s["state"] == "attached", "{s}");
        ensure!(s["id"].as_str().is_some_and(|i| i.len() == 32), "{s}");
        ensure!(
            s["started"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{s}"
        );
        ensure!(s["calls"].as_u64() >= Some(1), "{s}");
        ensure!(s["bytes_to_tool"].as_u64() > Some(0), "{s}");
        ensure!(s["bytes_to_client"].as_u64() > Some(0), "{s}");
        let pid = pid_of(s)?;
        ensure!(alive(pid), "the listed tool pid {pid} is a live process");
        ensure!(
            relay.children().iter().any(|(p, _)| *p == pid),
            "the tool {pid} is the relay's child: {:?}",
            relay.children()
        );
    }
    ensure!(ws["wire"] == "v1" && hs["wire"] == "http", "{ws} {hs}");
    ensure!(
        hs["id"] == http.as_str(),
        "the HTTP session's id is its Mcp-Session-Id"
    );

    // The figures are live: another call shows.
    echo(&mut ide, 2, "two")?;
    let ws_id = ws["id"].as_str().context("id")?.to_owned();
    let shown = admin_req(
        admin,
        "GET",
        &format!("/admin/sessions/{}", &ws_id[..8]),
        Some(ADMIN),
    )?;
    ensure!(shown.status == 200, "show: {} {}", shown.status, shown.body);
    let now = json_of(&shown)?["session"].clone();
    ensure!(
        now["id"] == ws_id.as_str(),
        "a prefix of 8 digits finds it: {now}"
    );
    ensure!(
        now["calls"].as_u64() > ws["calls"].as_u64(),
        "calls grow: {ws} → {now}"
    );
    ensure!(
        now["bytes_to_tool"].as_u64() > ws["bytes_to_tool"].as_u64(),
        "{now}"
    );
    ensure!(
        now["bytes_to_client"].as_u64() > ws["bytes_to_client"].as_u64(),
        "{now}"
    );

    // End the tunnel session with a call in flight.
    let old_pid = pid_of(&ws)?;
    ide.send(&json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "slow", "arguments": {"steps": 100, "delay_ms": 100}}}))?;
    // Wait until the call has reached the tool (the session's messages to it grow).
    let before = now["messages_to_tool"].as_u64();
    let path = format!("/admin/sessions/{ws_id}");
    wait_until(Duration::from_secs(10), || {
        admin_req(admin, "GET", &path, Some(ADMIN))
            .ok()
            .and_then(|r| json_of(&r).ok())
            .is_some_and(|v| v["session"]["messages_to_tool"].as_u64() > before)
    })?;
    let ended = admin_req(
        admin,
        "DELETE",
        &format!("/admin/sessions/{ws_id}"),
        Some(ADMIN),
    )?;
    ensure!(ended.status == 200, "end: {} {}", ended.status, ended.body);
    let ended = json_of(&ended)?;
    ensure!(ended["tool_reaped"] == true, "{ended}");
    ensure!(
        ended["reason"]
            .as_str()
            .is_some_and(|r| r.contains("administrator")),
        "{ended}"
    );
    ensure!(
        reaped(&relay, old_pid),
        "the old tool {old_pid} is reaped: {:?}",
        relay.children()
    );
    let answer = ide.recv_until(Duration::from_secs(10), |m| m["id"] == 3)?;
    ensure!(answer["error"]["code"] == -32011, "{answer}");
    ensure!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("administrator")),
        "the IDE reads why: {answer}"
    );
    // bridge-client opens a new session for the next call; it works, with a new tool.
    let again = echo(&mut ide, 4, "after")?;
    ensure!(again["result"]["content"][0]["text"] == "after", "{again}");
    let list = sessions(admin)?;
    let new_ws = by_carrier(&list, "ws")?;
    ensure!(new_ws["id"] != ws_id.as_str(), "a new session: {new_ws}");
    ensure!(
        pid_of(&new_ws)? != old_pid && alive(pid_of(&new_ws)?),
        "{new_ws}"
    );

    // End the HTTP session: its client's next request is refused, its tool reaped.
    let http_pid = pid_of(&hs)?;
    let ended = admin_req(
        admin,
        "DELETE",
        &format!("/admin/sessions/{http}"),
        Some(ADMIN),
    )?;
    ensure!(
        ended.status == 200,
        "end http: {} {}",
        ended.status,
        ended.body
    );
    ensure!(
        reaped(&relay, http_pid),
        "the HTTP session's tool {http_pid} is reaped"
    );
    let after = http_post(&relay, &http, call)?;
    ensure!(
        after.status == 404,
        "an ended HTTP session is gone: {} {}",
        after.status,
        after.body
    );
    let gone = admin_req(
        admin,
        "DELETE",
        &format!("/admin/sessions/{http}"),
        Some(ADMIN),
    )?;
    ensure!(
        gone.status == 404,
        "ending it again: {} {}",
        gone.status,
        gone.body
    );

    // Every action is audited with the admin's name; the token never shows.
    let log = relay.log.text();
    for action in ["list", "show", "end"] {
        let needle = format!("action=\"{action}\"");
        ensure!(
            log.lines().any(|l| l.contains("event=\"admin\"")
                && l.contains("admin=ops")
                && l.contains(&needle)),
            "no audit line for {action}"
        );
    }
    ensure!(
        log.contains("end=\"admin\""),
        "the session's end line says why"
    );
    ensure!(!log.contains(ADMIN), "the admin token is never logged");
    Ok(())
}

#[test]
fn wrong_or_missing_tokens_are_refused_and_the_public_listener_has_no_admin_api() -> Result<()> {
    let (relay, admin) = admin_relay()?;
    let mut ide = ide(&relay)?;
    ide.initialize()?;
    for (token, what) in [
        (None, "missing"),
        (Some("nope"), "wrong"),
        (Some(ALICE), "a user's"),
    ] {
        for (method, path) in [
            ("GET", "/admin/sessions"),
            ("DELETE", "/admin/sessions/0123456789"),
        ] {
            let resp = admin_req(admin, method, path, token)?;
            ensure!(
                resp.status == 401,
                "{what} token, {method} {path}: {} {}",
                resp.status,
                resp.body
            );
            ensure!(
                json_of(&resp)?["error"].is_string(),
                "a JSON error: {}",
                resp.body
            );
            ensure!(
                resp.header("www-authenticate").is_some(),
                "{:?}",
                resp.headers
            );
        }
    }
    ensure!(sessions(admin)?.len() == 1, "nothing was ended");
    // The public listener serves MCP only, whatever the token.
    for (method, path) in [
        ("GET", "/admin/sessions"),
        ("DELETE", "/admin/sessions/0123456789abcdef"),
    ] {
        let resp = admin_req(relay.addr, method, path, Some(ADMIN))?;
        ensure!(
            resp.status == 404,
            "public {method} {path}: {} {}",
            resp.status,
            resp.body
        );
    }
    let unknown = admin_req(
        admin,
        "GET",
        "/admin/sessions/0123456789abcdef",
        Some(ADMIN),
    )?;
    ensure!(unknown.status == 404, "{} {}", unknown.status, unknown.body);
    ensure!(!relay.log.text().contains(ADMIN) && !relay.log.text().contains("nope"));

    // Without [admin], the API is off, never open.
    let body = format!(
        "[metrics]\nlisten = \"127.0.0.1:0\"\n{}",
        demo_tool("demo", "")
    );
    let plain = Relay::start_config(&relay_config("", &body), &[])?;
    let resp = admin_req(plain.metrics_addr()?, "GET", "/admin/sessions", None)?;
    ensure!(resp.status == 403, "{} {}", resp.status, resp.body);
    ensure!(json_of(&resp)?["error"]
        .as_str()
        .is_some_and(|e| e.contains("admin API is off")));
    Ok(())
}

#[test]
fn the_cli_lists_and_ends_sessions() -> Result<()> {
    let (relay, admin) = admin_relay()?;
    let mut ide = ide(&relay)?;
    ide.initialize()?;
    echo(&mut ide, 1, "one")?;
    let dir = TempDir::new();
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, format!("{ADMIN}\n"))?;
    let url = format!("http://{admin}");
    let cli = |args: &[&str], token: &std::path::Path| {
        Command::new(bin("bridge-server"))
            .arg("sessions")
            .args(args)
            .arg("--admin-url")
            .arg(&url)
            .arg("--token-file")
            .arg(token)
            .env_remove("MCP_BRIDGE_ADMIN_TOKEN")
            .output()
    };

    let out = cli(&[], &token_file)?;
    ensure!(out.status.code() == Some(0), "list: {out:?}");
    let table = String::from_utf8(out.stdout)?;
    let id = sessions(admin)?[0]["id"].as_str().context("id")?.to_owned();
    let row = table
        .lines()
        .find(|l| l.starts_with(&id[..8]))
        .context("the session's row")?;
    for cell in ["alice", "demo", "ws/v1", "attached"] {
        ensure!(row.contains(cell), "{cell} in {row:?}\n{table}");
    }
    let out = cli(&["--json"], &token_file)?;
    let listed: Value = serde_json::from_slice(&out.stdout)?;
    ensure!(listed["sessions"][0]["id"] == id.as_str(), "{listed}");

    let pid = pid_of(&listed["sessions"][0])?;
    let out = cli(&["--end", &id[..8]], &token_file)?;
    ensure!(out.status.code() == Some(0), "end: {out:?}");
    ensure!(String::from_utf8(out.stdout)?.contains("administrator"));
    ensure!(reaped(&relay, pid), "the tool {pid} is reaped");
    let again = echo(&mut ide, 2, "after")?;
    ensure!(again["result"]["content"][0]["text"] == "after", "{again}");

    let out = cli(&["--end", &id[..8]], &token_file)?;
    ensure!(out.status.code() == Some(4), "an ended session: {out:?}");
    let wrong = dir.path().join("wrong.token");
    std::fs::write(&wrong, "nope\n")?;
    let out = cli(&[], &wrong)?;
    ensure!(out.status.code() == Some(3), "a wrong token: {out:?}");
    ensure!(String::from_utf8(out.stderr)?.contains("HTTP 401"));
    Ok(())
}

#[test]
fn a_plain_websocket_session_is_listed_and_its_client_reads_why_it_ended() -> Result<()> {
    use futures_util::{SinkExt, StreamExt};
    use mcp_bridge_tests::ws;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::Message;

    let (relay, admin) = admin_relay()?;
    let bearer = format!("Bearer {ALICE}");
    ws::runtime().block_on(async {
        let mut sock = ws::connect(&relay.url("demo"), Some("mcp"), &[("Authorization", &bearer)])
            .await?
            .open()?;
        let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"plain"}}}"#;
        sock.send(Message::text(call)).await?;
        let answer = tokio::time::timeout(Duration::from_secs(10), sock.next()).await?;
        ensure!(
            matches!(&answer, Some(Ok(Message::Text(t))) if t.contains("plain")),
            "{answer:?}"
        );
        let list = sessions(admin)?;
        let s = by_carrier(&list, "ws")?;
        ensure!(s["wire"] == "mcp" && s["calls"] == 1, "{s}");
        let pid = pid_of(&s)?;
        let id = s["id"].as_str().context("id")?;
        let ended = admin_req(admin, "DELETE", &format!("/admin/sessions/{id}"), Some(ADMIN))?;
        ensure!(ended.status == 200, "{} {}", ended.status, ended.body);
        ensure!(reaped(&relay, pid), "the tool {pid} is reaped");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let frame = tokio::time::timeout_at(deadline, sock.next()).await?;
            match frame {
                Some(Ok(Message::Close(Some(close)))) => {
                    ensure!(close.code == CloseCode::Normal, "{close:?}");
                    ensure!(close.reason.contains("administrator"), "{close:?}");
                    return Ok(());
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => anyhow::bail!("expected a close frame with the reason, got {other:?}"),
            }
        }
    })
}

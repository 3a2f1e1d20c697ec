//! Sign-in while connected: bridge-client as the IDE's stdio server in front of the protected
//! MCP resource of tests/peers/oauth_server.mjs (oidc-provider), with no stored tokens. The
//! first request waits for the sign-in through the stand-in browser; an access token expiring
//! mid-session is refreshed; a revoked refresh token leads to one new sign-in — and no IDE
//! request fails on the way.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use mcp_bridge_tests::Ide;
use serde_json::{json, Value};

use crate::oauth::{no_tokens, OAuthPeer};

/// Long enough for a sign-in through the stand-in browser.
const SIGN_IN: Duration = Duration::from_secs(60);

fn session(p: &OAuthPeer) -> Result<Ide> {
    let url = p.mcp_url.clone();
    Ide::spawn(&mut p.command(&[
        &url,
        "--no-keyring",
        "--token-env",
        "MCP_BRIDGE_TEST_NO_TOKEN",
        "--oauth-timeout",
        "30",
    ]))
}

/// Sends a request and waits (long enough for a sign-in) for its answer, which must succeed.
fn call(ide: &mut Ide, id: i64, method: &str, params: Value) -> Result<Value> {
    ide.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))?;
    let r = ide.recv_until(SIGN_IN, |m| m["id"] == id && m.get("method").is_none())?;
    ensure!(
        r.get("error").is_none(),
        "{method} failed: {r}; stderr:\n{}",
        ide.stderr.text()
    );
    Ok(r["result"].clone())
}

fn handshake(ide: &mut Ide) -> Result<()> {
    let init = call(
        ide,
        0,
        "initialize",
        json!({
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "mcp-bridge-tests", "version": "0"}
        }),
    )?;
    ensure!(init["serverInfo"]["name"] == "protected-test", "{init}");
    ide.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
}

fn whoami(ide: &mut Ide, id: i64) -> Result<()> {
    let r = call(
        ide,
        id,
        "tools/call",
        json!({"name": "whoami", "arguments": {}}),
    )?;
    let text = r["content"][0]["text"].as_str().context("text")?;
    ensure!(text.starts_with("signed in as"), "{r}");
    Ok(())
}

fn finish(mut ide: Ide, p: &OAuthPeer) -> Result<String> {
    ide.close_stdin();
    let status = ide.wait(Duration::from_secs(10))?;
    let log = ide.stderr.text();
    ensure!(status.success(), "exit {status:?}: {log}");
    if let Some(rec) = p.stored()? {
        no_tokens(&rec, &[&log])?;
    }
    Ok(log)
}

#[test]
fn the_first_request_signs_in_through_the_browser_and_is_answered() -> Result<()> {
    let p = OAuthPeer::start(&[])?;
    let mut ide = session(&p)?;
    handshake(&mut ide)?;
    let tools = call(&mut ide, 1, "tools/list", json!({}))?;
    ensure!(tools["tools"][0]["name"] == "whoami", "{tools}");
    whoami(&mut ide, 2)?;
    ensure!(p.sign_ins() == 1, "browser ran {} times", p.sign_ins());
    let stats = p.admin("GET", "/stats")?;
    ensure!(stats["authorizations"] == 1, "{stats}");
    ensure!(p.stored()?.is_some(), "the tokens were not stored");
    let log = finish(ide, &p)?;
    ensure!(log.contains("asks for sign-in"), "{log}");
    Ok(())
}

#[test]
fn an_access_token_expiring_mid_session_is_refreshed_without_a_failed_call() -> Result<()> {
    let p = OAuthPeer::start(&["--access-ttl", "2"])?;
    let mut ide = session(&p)?;
    handshake(&mut ide)?;
    whoami(&mut ide, 1)?;
    // Let the access token expire for real, twice over.
    for id in 2..4 {
        std::thread::sleep(Duration::from_millis(2500));
        whoami(&mut ide, id)?;
    }
    ensure!(p.sign_ins() == 1, "browser ran {} times", p.sign_ins());
    let stats = p.admin("GET", "/stats")?;
    ensure!(
        stats["refreshes"].as_u64().unwrap_or(0) >= 2 && stats["authorizations"] == 1,
        "{stats}"
    );
    finish(ide, &p)?;
    Ok(())
}

#[test]
fn a_revoked_refresh_token_mid_session_leads_to_exactly_one_new_sign_in() -> Result<()> {
    let p = OAuthPeer::start(&["--access-ttl", "2"])?;
    let mut ide = session(&p)?;
    handshake(&mut ide)?;
    whoami(&mut ide, 1)?;
    ensure!(p.sign_ins() == 1, "browser ran {} times", p.sign_ins());
    p.admin("POST", "/revoke-refresh-tokens")?;
    std::thread::sleep(Duration::from_millis(2500));
    whoami(&mut ide, 2)?;
    whoami(&mut ide, 3)?;
    ensure!(p.sign_ins() == 2, "browser ran {} times", p.sign_ins());
    let log = finish(ide, &p)?;
    ensure!(log.contains("invalid_grant"), "{log}");
    Ok(())
}

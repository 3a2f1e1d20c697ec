//! The origin rule with the real OS keyring (keyutils here): `login`, `logout` and connecting
//! key a token the same way, with `http://` as `ws://` and `https://` as `wss://`.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use mcp_bridge_tests::{bin, demo_tool, relay_config, token_auth, wait_child, Ide, Relay};
use serde_json::json;

const T: Duration = Duration::from_secs(15);
const TOKEN: &str = "login-test-token-4e1d";

/// `bridge-client ARGS`, with `input` on stdin; waits with a deadline.
fn client(args: &[&str], input: &str) -> Result<Output> {
    let mut child = Command::new(bin("bridge-client"))
        .args(args)
        .env_remove("MCP_BRIDGE_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    match stdin.write_all(input.as_bytes()) {
        // A client that refuses its arguments exits without reading stdin.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other?,
    }
    drop(stdin);
    wait_child(&mut child, T)?;
    Ok(child.wait_with_output()?)
}

fn said(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Removes whatever a test stored, also when it fails.
struct Logout(Vec<String>);

impl Drop for Logout {
    fn drop(&mut self) {
        for url in &self.0 {
            let _ = client(&["logout", url], "");
        }
    }
}

/// A session with the token from the keyring (no variable, no file): whether the relay let
/// it in, and the client's stderr.
fn connects(url: &str) -> Result<(bool, String)> {
    let mut ide = Ide::spawn(
        Command::new(bin("bridge-client"))
            .arg(url)
            .env_remove("MCP_BRIDGE_TOKEN"),
    )?;
    let answer = ide.request(
        json!(1),
        "tools/call",
        json!({"name": "echo", "arguments": {"text": "hi"}}),
    );
    ide.close_stdin();
    let status = ide.wait(T)?;
    let ok = status.success()
        && answer.is_ok_and(|a| a.pointer("/result/content/0/text") == Some(&json!("hi")));
    Ok((ok, ide.stderr.text()))
}

fn token_relay() -> Result<Relay> {
    let auth = token_auth(&[("alice", TOKEN, &["*"])])?;
    Relay::start_config(
        &relay_config("", &format!("{auth}{}", demo_tool("demo", ""))),
        &[],
    )
}

#[test]
fn login_over_http_serves_ws_connections_and_logout_over_either_removes_it() -> Result<()> {
    let relay = token_relay()?;
    let ws = relay.url("demo");
    let http = format!("http://{}", relay.addr);
    let _cleanup = Logout(vec![http.clone()]);

    let out = client(&["login", &http], &format!("{TOKEN}\n"))?;
    ensure!(out.status.success(), "login: {}", said(&out));
    let key = format!("ws://{}", relay.addr);
    ensure!(
        said(&out).contains(&format!("token for {key} stored")),
        "login names the key: {}",
        said(&out)
    );
    let (ok, log) = connects(&ws)?;
    ensure!(
        ok,
        "ws:// connection with the token stored for http://: {log}"
    );

    // logout through a ws:// URL with a path removes the same token.
    let out = client(&["logout", &ws], "")?;
    ensure!(
        out.status.success() && said(&out).contains(&format!("token for {key} removed")),
        "logout: {}",
        said(&out)
    );
    let (ok, log) = connects(&ws)?;
    ensure!(!ok && log.contains("HTTP 401"), "after logout: {log}");

    // And the other way round: ws:// in, http:// out.
    let out = client(&["login", &ws], &format!("{TOKEN}\n"))?;
    ensure!(out.status.success(), "login: {}", said(&out));
    let out = client(&["logout", &format!("{http}/")], "")?;
    ensure!(said(&out).contains("removed"), "logout: {}", said(&out));
    let out = client(&["logout", &http], "")?;
    ensure!(
        out.status.success() && said(&out).contains("no token was stored"),
        "{}",
        said(&out)
    );
    Ok(())
}

#[test]
fn tls_origins_are_apart_from_plain_ones() -> Result<()> {
    let relay = token_relay()?;
    let ws = relay.url("demo");
    let https = format!("https://{}", relay.addr);
    let _cleanup = Logout(vec![https.clone()]);
    let out = client(&["login", &https], &format!("{TOKEN}\n"))?;
    ensure!(out.status.success(), "login: {}", said(&out));
    ensure!(
        said(&out).contains(&format!("token for wss://{} stored", relay.addr)),
        "{}",
        said(&out)
    );
    // Never sent over plain ws:// to the same host and port.
    let (ok, log) = connects(&ws)?;
    ensure!(!ok && log.contains("HTTP 401"), "{log}");
    // wss:// names the same key as https://.
    let out = client(&["logout", &format!("wss://{}/mcp/demo", relay.addr)], "")?;
    ensure!(said(&out).contains("removed"), "{}", said(&out));
    Ok(())
}

#[test]
fn urls_that_cannot_be_keyed_or_connected_say_what_to_give() -> Result<()> {
    let out = client(&["login", "127.0.0.1:8792"], "x\n")?;
    ensure!(out.status.code() == Some(2), "{}", said(&out));
    ensure!(
        said(&out).contains("give wss://127.0.0.1:8792 (TLS) or ws://127.0.0.1:8792"),
        "{}",
        said(&out)
    );
    // http(s):// means Streamable HTTP now: plain http only to this machine without a flag.
    let out = client(&["http://relay.example.com/mcp/time"], "")?;
    ensure!(
        out.status.code() == Some(2)
            && said(&out).contains("give https://relay.example.com/mcp/time"),
        "{}",
        said(&out)
    );
    let out = client(&["--no-keyring", "http://127.0.0.1:9/mcp/time"], "")?;
    ensure!(
        out.status.code() == Some(0),
        "loopback http is accepted: {}",
        said(&out)
    );
    Ok(())
}

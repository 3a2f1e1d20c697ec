//! Secrets: a token stored in the OS keyring (real keyutils) by `login`, used by a separate
//! process and removed by `logout`; tokens never reach either side's logs, even at trace level.

use std::io::Write;
use std::process::Command;

use anyhow::Result;
use mcp_bridge_tests::{bin, Ide};

use super::{echo_works, refused, token_relay, token_relay_env, T};

#[test]
fn keyring_login_connect_logout_round_trip() -> Result<()> {
    let relay = token_relay("")?;
    let url = relay.url("demo");
    let login = |token: &str| -> Result<String> {
        let mut child = Command::new(bin("bridge-client"))
            .args(["login", &url])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{token}\n").as_bytes())?;
        let out = child.wait_with_output()?;
        anyhow::ensure!(
            out.status.success(),
            "login failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let said = login("alice-token-7f3a")?;
    assert!(
        said.contains("keyutils"),
        "says where it stored the token: {said}"
    );
    // A separate process, as the IDE starts it: no env var, the token comes from the keyring.
    let mut cmd = Command::new(bin("bridge-client"));
    cmd.arg(&url).env_remove("MCP_BRIDGE_TOKEN");
    let mut ide = Ide::spawn(&mut cmd)?;
    echo_works(&mut ide)?;
    ide.close_stdin();
    assert!(ide.wait(T)?.success());
    let out = Command::new(bin("bridge-client"))
        .args(["logout", &url])
        .output()?;
    assert!(out.status.success());
    let mut cmd = Command::new(bin("bridge-client"));
    cmd.arg(&url).env_remove("MCP_BRIDGE_TOKEN");
    let mut after = Ide::spawn(&mut cmd)?;
    assert!(!after.wait(T)?.success());
    assert!(
        after.stderr.text().contains("HTTP 401"),
        "{}",
        after.stderr.text()
    );
    Ok(())
}

#[test]
fn secrets_never_reach_the_logs() -> Result<()> {
    let relay = token_relay_env("", &[("RUST_LOG", "trace")])?;
    let token = "alice-token-7f3a";
    let mut cmd = Command::new(bin("bridge-client"));
    cmd.arg(relay.url("demo"))
        .args(["--no-keyring", "-vv"])
        .env("MCP_BRIDGE_TOKEN", token)
        // The most specific directive, for the module that prints the raw upgrade request.
        .env("RUST_LOG", "trace,tungstenite::handshake::client=trace");
    let mut ide = Ide::spawn(&mut cmd)?;
    echo_works(&mut ide)?;
    let _ = refused(&relay.url("demo"), Some("wrong-secret-55aa"), &["-vv"])?;
    ide.close_stdin();
    assert!(ide.wait(T)?.success());
    relay.wait_no_children(T)?;
    let (client_log, relay_log) = (ide.stderr.text(), relay.log.text());
    assert!(
        relay_log.contains("event=\"call\""),
        "the relay did log the session"
    );
    for secret in [token, "wrong-secret-55aa"] {
        assert!(!client_log.contains(secret), "client log leaks {secret}");
        assert!(!relay_log.contains(secret), "relay log leaks {secret}");
    }
    Ok(())
}

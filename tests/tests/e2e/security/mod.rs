//! Security end to end: TLS and mutual TLS with certificates made here (rcgen), static tokens
//! and JWTs with every rejection, per-tool grants, session binding on resume, Origin checks,
//! the OS keyring (real keyutils), secrets kept out of logs, slowloris, and an HTTP CONNECT
//! proxy on loopback.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod auth;
mod cert_identity;
mod jwt;
mod secrets;
mod transport;

use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use mcp_bridge_tests::{bin, demo_tool, relay_config, token_auth, Ide, Relay};
use serde_json::json;

const T: Duration = Duration::from_secs(15);

/// A relay with two tokens: alice may use `demo`, bob only `other`.
fn token_relay(extra: &str) -> Result<Relay> {
    token_relay_env(extra, &[])
}

fn token_relay_env(extra: &str, envs: &[(&str, &str)]) -> Result<Relay> {
    let auth = token_auth(&[
        ("alice", "alice-token-7f3a", &["demo"]),
        ("bob", "bob-token-91c2", &["other"]),
    ])?;
    let tools = [demo_tool("demo", ""), demo_tool("other", "")].join("\n");
    Relay::start_config(&relay_config(extra, &format!("{auth}\n{tools}")), envs)
}

fn client(url: &str, token: Option<&str>, extra: &[&str]) -> Result<Ide> {
    let mut cmd = Command::new(bin("bridge-client"));
    cmd.arg(url)
        .arg("--no-keyring")
        .args(extra)
        .env_remove("MCP_BRIDGE_TOKEN");
    if let Some(t) = token {
        cmd.env("MCP_BRIDGE_TOKEN", t);
    }
    Ide::spawn(&mut cmd)
}

/// Starts a client that must be refused; returns its stderr.
fn refused(url: &str, token: Option<&str>, extra: &[&str]) -> Result<String> {
    let mut ide = client(url, token, extra)?;
    let status = ide.wait(T)?;
    anyhow::ensure!(!status.success(), "expected a refusal");
    Ok(ide.stderr.text())
}

fn echo_works(ide: &mut Ide) -> Result<()> {
    ide.initialize()?;
    let r = ide.request(
        json!(1),
        "tools/call",
        json!({"name": "echo", "arguments": {"text": "hi"}}),
    )?;
    anyhow::ensure!(
        r.pointer("/result/content/0/text") == Some(&json!("hi")),
        "{r}"
    );
    Ok(())
}

//! Per-user policy inside a hosted server and call rate limits (issue 13): hidden tools are
//! absent from `tools/list` and refused on `tools/call` in both eras (the Python SDK against
//! mcp-server-time), and a flood of calls from one user is limited while another user's calls
//! keep answering. Real relay, real bridge-client, real peers.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{json, Value};

use mcp_bridge_tests::{
    assert_checks, bin, demo_tool, relay_config, run_driver, token_auth, tool_table, Ide, Peers,
    Relay,
};

const T: Duration = Duration::from_secs(20);

fn relay(limits: &str, tools: &str) -> Result<Relay> {
    let all: &[&str] = &["*"];
    let auth = token_auth(&[
        ("alice", "alice-token-policy-1", all),
        ("bob", "bob-token-policy-2", all),
    ])?;
    Relay::start_config(&relay_config(limits, &format!("{auth}\n{tools}")), &[])
}

fn session(relay: &Relay, tool: &str, token: &str) -> Result<Ide> {
    let mut cmd = Command::new(bin("bridge-client"));
    cmd.arg(relay.url(tool))
        .arg("--no-keyring")
        .env("MCP_BRIDGE_TOKEN", token);
    let mut ide = Ide::spawn(&mut cmd)?;
    ide.initialize()?;
    Ok(ide)
}

fn names(list: &Value) -> Vec<String> {
    list.pointer("/result/tools")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|t| t.get("name").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn hidden_tools_are_absent_from_the_list_and_refused_per_user() -> Result<()> {
    let peers = Peers::require();
    let policy = "[[tool.policy]]\nusers = [\"*\"]\ndeny = [\"printEnv\", \"get*\"]\n\
                  [[tool.policy]]\nusers = [\"bob\"]\nallow = [\"echo\"]\n";
    let tools = tool_table("everything", &peers.server_everything(), &["stdio"], policy);
    let relay = relay("", &tools)?;
    let mut alice = session(&relay, "everything", "alice-token-policy-1")?;
    let listed = names(&alice.request(json!(1), "tools/list", json!({}))?);
    assert!(listed.iter().any(|n| n == "echo"), "{listed:?}");
    assert!(
        !listed
            .iter()
            .any(|n| n == "printEnv" || n.starts_with("get")),
        "alice's list hides the denied tools: {listed:?}"
    );
    let refused = alice.request(
        json!(2),
        "tools/call",
        json!({"name": "printEnv", "arguments": {}}),
    )?;
    assert_eq!(
        refused.pointer("/error/code"),
        Some(&json!(-32602)),
        "{refused}"
    );
    let echo = alice.request(
        json!(3),
        "tools/call",
        json!({"name": "echo", "arguments": {"message": "hi"}}),
    )?;
    assert!(
        echo.get("result").is_some(),
        "allowed tools still work: {echo}"
    );
    let mut bob = session(&relay, "everything", "bob-token-policy-2")?;
    let listed = names(&bob.request(json!(1), "tools/list", json!({}))?);
    assert_eq!(listed, ["echo"], "bob may use echo only");
    let refused = bob.request(
        json!(2),
        "tools/call",
        json!({"name": "add", "arguments": {"a": 1, "b": 2}}),
    )?;
    assert_eq!(
        refused.pointer("/error/code"),
        Some(&json!(-32602)),
        "{refused}"
    );
    // Audited and counted.
    relay.log.wait_for("outcome=\"denied\"", T)?;
    let denied =
        relay.sample("mcp_bridge_calls_refused_total{tool=\"everything\",reason=\"denied\"}")?;
    assert_eq!(denied, 2.0, "calls refused as denied");
    Ok(())
}

#[test]
fn the_policy_holds_in_both_eras() -> Result<()> {
    let peers = Peers::require();
    let tools = tool_table(
        "time",
        &peers.venv_bin.join("mcp-server-time"),
        &[],
        "[[tool.policy]]\nusers = [\"*\"]\ndeny = [\"convert_*\"]\n",
    );
    let relay = relay("", &tools)?;
    for mode in ["auto", "legacy"] {
        let mut cmd = Command::new(&peers.python);
        cmd.arg(peers.script("py_client.py"))
            .args(["--scenario", "time-policy", "--mode", mode, "--"])
            .arg(bin("bridge-client"))
            .arg(relay.url("time"))
            .arg("--no-keyring")
            .env("MCP_BRIDGE_TOKEN", "alice-token-policy-1");
        let summary = run_driver(&mut cmd, Duration::from_secs(90))?;
        let era = if mode == "auto" { "2026-07-28" } else { "2025" };
        let version = summary["protocol_version"].as_str().unwrap_or_default();
        assert!(version.starts_with(era), "{mode}: {summary}");
        assert_eq!(summary["ok"], json!(true), "{mode}: {summary}");
        assert_checks(
            &summary,
            &["hidden_in_list", "hidden_call_refused", "allowed_call"],
        );
    }
    Ok(())
}

/// 10,000 calls from alice, as fast as bridge-client sends them, against 200 calls per second
/// (burst 100): most are refused with -32014 and a retry time, the rest answered; bob's calls
/// meanwhile are never limited and keep answering. Prints the figures.
#[test]
fn a_flood_from_one_user_is_limited_while_another_keeps_answering() -> Result<()> {
    let relay = relay(
        "calls_per_second = 200\ncall_burst = 100\n",
        &demo_tool("demo", ""),
    )?;
    let mut bob = session(&relay, "demo", "bob-token-policy-2")?;
    let echo = |id: u64| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
               "params": {"name": "echo", "arguments": {"text": "x"}}})
    };
    let mut baseline = Vec::new();
    for id in 0..20 {
        let t = Instant::now();
        let r = bob.request(json!(id), "tools/call", echo(id)["params"].clone())?;
        anyhow::ensure!(r.get("result").is_some(), "{r}");
        baseline.push(t.elapsed());
    }
    let mut alice = session(&relay, "demo", "alice-token-policy-1")?;
    let started = Instant::now();
    const FLOOD: u64 = 10_000;
    let mut during = Vec::new();
    let (mut ok, mut limited) = (0u64, 0u64);
    let mut retry_hint = false;
    // In bursts of 500 (bridge-client's stdout must be read between them), with one of bob's
    // calls after each burst.
    for burst in 0..FLOOD / 500 {
        for n in 1..=500 {
            alice.send_raw(echo(burst * 500 + n).to_string().as_bytes())?;
        }
        let t = Instant::now();
        let id = 10_000 + burst;
        let r = bob.request(json!(id), "tools/call", echo(id)["params"].clone())?;
        anyhow::ensure!(r.get("result").is_some(), "bob was refused: {r}");
        during.push(t.elapsed());
        for _ in 0..500 {
            let a = alice.recv(T)?;
            match a.pointer("/error/code").and_then(Value::as_i64) {
                Some(-32014) => {
                    limited += 1;
                    retry_hint |= a.pointer("/error/data/retryAfterMs").is_some();
                }
                None => ok += 1,
                Some(other) => anyhow::bail!("unexpected error {other}: {a}"),
            }
        }
    }
    let elapsed = started.elapsed();
    let max = |v: &[Duration]| v.iter().max().copied().unwrap_or_default();
    eprintln!(
        "flood: {FLOOD} calls in {elapsed:?}: {ok} answered, {limited} rate-limited; bob's \
         calls: worst {:?} before, worst {:?} during ({} calls)",
        max(&baseline),
        max(&during),
        during.len()
    );
    assert!(
        limited > FLOOD / 2,
        "most of the flood is limited ({limited})"
    );
    let allowed = 100.0 + 200.0 * elapsed.as_secs_f64() * 1.1;
    assert!((ok as f64) <= allowed, "{ok} answered in {elapsed:?}");
    assert!(retry_hint, "the error says when to retry");
    assert!(max(&during) < Duration::from_secs(2), "bob kept answering");
    let counted =
        relay.sample("mcp_bridge_calls_refused_total{tool=\"demo\",reason=\"rate_limited\"}")?;
    assert_eq!(counted as u64, limited, "the metric counts them");
    Ok(())
}

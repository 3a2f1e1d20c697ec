//! Every query of the dashboard, run by a real Prometheus that scraped two relays during a
//! scripted workload.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use mcp_bridge_tests::proxy::FaultProxy;
use mcp_bridge_tests::{
    bin, demo_tool, relay_config, token_auth, wait_until, Ide, Prometheus, Relay,
};
use serde_json::{json, Value};

use super::dashboard::{self, Query};

const T: Duration = Duration::from_secs(15);
const TOKEN: &str = "observability-token-5d1e";

/// Panels whose queries may return nothing after the workload, and why. Every other query must
/// return at least one series.
const MAY_BE_EMPTY: &[(&str, &str)] = &[
    (
        "Handshakes shed by reason",
        "no connection flood in the workload: the counter has no series before its first shed",
    ),
    (
        "Resumes refused",
        "every resume in the workload succeeds: no `resume_unknown` refusal",
    ),
];

/// Both relays: token auth, the demo tool, and the demo tool again with a call rate of one a
/// second (so rate-limited calls are easy to make).
fn start_relay() -> Result<Relay> {
    let auth = token_auth(&[("ops", TOKEN, &["*"])])?;
    let tools = format!(
        "{}{}",
        demo_tool("demo", ""),
        demo_tool("limited", "calls_per_second = 1\ncall_burst = 1")
    );
    Relay::start_config(&relay_config("", &format!("{auth}\n{tools}")), &[])
}

/// bridge-client as an IDE at `url` with `token`.
fn ide(url: &str, token: &str) -> Result<Ide> {
    Ide::spawn(
        Command::new(bin("bridge-client"))
            .arg(url)
            .arg("--no-keyring")
            .env("MCP_BRIDGE_TOKEN", token),
    )
}

fn echo(ide: &mut Ide, id: u64) -> Result<Value> {
    ide.request(
        json!(id),
        "tools/call",
        json!({"name": "echo", "arguments": {"text": "hi"}}),
    )
}

/// The workload: calls on both relays, a dropped connection resumed, a tool crash and the
/// re-established session, rate-limited calls, a tool error, a wrong token. The IDEs it
/// returns keep their sessions open.
fn workload(a: &Relay, b: &Relay, proxy: &FaultProxy) -> Result<Vec<Ide>> {
    // Relay a, through a proxy that can cut the connection.
    let mut one = ide(&proxy.url("demo"), TOKEN)?;
    one.initialize()?;
    one.request(json!(1), "tools/list", json!({}))?;
    for id in 2..5 {
        ensure!(echo(&mut one, id)?.get("result").is_some());
    }
    ensure!(proxy.cut_all() > 0, "no connection to cut");
    one.stderr.wait_for("resumed the session", T)?;
    ensure!(echo(&mut one, 5)?.get("result").is_some());
    // The tool's own error.
    let err = one.request(json!(6), "tools/call", json!({"name": "no-such-tool"}))?;
    ensure!(err.get("error").is_some(), "{err}");
    // The tool crashes under a call; the next call gets a new session (re-established).
    let crash = one.request(
        json!(7),
        "tools/call",
        json!({"name": "crash", "arguments": {"code": 3}}),
    )?;
    ensure!(
        crash.pointer("/error/code") == Some(&json!(-32010)),
        "{crash}"
    );
    let again = echo(&mut one, 8)?;
    ensure!(again.get("result").is_some(), "{again}");

    // Relay b, directly: calls, then calls over the tool's rate.
    let mut two = ide(&b.url("demo"), TOKEN)?;
    two.initialize()?;
    for id in 1..4 {
        ensure!(echo(&mut two, id)?.get("result").is_some());
    }
    let mut three = ide(&b.url("limited"), TOKEN)?;
    three.initialize()?;
    let limited = (1..5)
        .map(|id| echo(&mut three, id))
        .collect::<Result<Vec<_>>>()?
        .iter()
        .filter(|r| r.pointer("/error/code") == Some(&json!(-32014)))
        .count();
    ensure!(limited >= 1, "no call was rate-limited");

    // A wrong token on each relay.
    for relay in [a, b] {
        let mut wrong = ide(&relay.url("demo"), "not-the-token")?;
        ensure!(!wrong.wait(T)?.success(), "a wrong token was accepted");
    }
    Ok(vec![one, two, three])
}

#[test]
fn every_dashboard_query_runs_on_prometheus_scraping_two_relays() -> Result<()> {
    let started = Instant::now();
    let dash = dashboard::load()?;
    let queries = dashboard::queries(&dash);
    let a = start_relay()?;
    let b = start_relay()?;
    let proxy = FaultProxy::start(a.addr)?;
    let prom = Prometheus::start("mcp-bridge", &[a.addr, b.addr])?;
    let instances = vec![a.addr.to_string(), b.addr.to_string()];
    wait_until(T, || {
        prom.series(r#"up{job="mcp-bridge"} == 1"#)
            .is_ok_and(|s| s.len() == 2)
    })
    .with_context(|| format!("Prometheus never scraped both relays:\n{}", prom.log.text()))?;

    let _ides = workload(&a, &b, &proxy)?;

    // Until every query that must have data has it (Prometheus scrapes every second; a rate
    // needs two samples after the event).
    let must: Vec<&Query> = queries
        .iter()
        .filter(|q| !MAY_BE_EMPTY.iter().any(|(p, _)| *p == q.panel))
        .collect();
    let run = |q: &Query| prom.series(&dashboard::substitute(&q.expr, &instances, "30s"));
    let mut empty: Vec<String> = Vec::new();
    let _ = wait_until(Duration::from_secs(20), || {
        empty = must
            .iter()
            .filter(|q| run(q).map_or(true, |s| s.is_empty()))
            .map(|q| format!("{}: {}", q.panel, q.expr))
            .collect();
        empty.is_empty()
    });
    // Now every query, once more: none errors, and what must have data has it.
    let mut report = Vec::new();
    for q in &queries {
        let series = run(q).with_context(|| format!("{}: {}", q.panel, q.expr))?;
        report.push(format!(
            "{:>3} series  {}: {}",
            series.len(),
            q.panel,
            q.expr
        ));
    }
    ensure!(
        empty.is_empty(),
        "queries without data after the workload:\n{}\n\nrelay a log:\n{}",
        empty.join("\n"),
        a.log.text()
    );
    // The numbers behind a few panels, from the workload.
    let one = |expr: &str| -> Result<f64> {
        let s = prom.series(expr)?;
        s.first()
            .and_then(|v| v["value"][1].as_str())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{expr}: {s:?}"))
    };
    ensure!(one(r#"sum(mcp_bridge_connects_total{kind="resume"})"#)? >= 1.0);
    ensure!(one(r#"sum(mcp_bridge_connects_total{kind="reestablish"})"#)? >= 1.0);
    ensure!(one(r#"sum(mcp_bridge_tool_exits_total{how="crashed"})"#)? == 1.0);
    ensure!(one(r#"sum(mcp_bridge_auth_failures_total{reason="unknown_token"})"#)? == 2.0);
    ensure!(one(r#"sum(mcp_bridge_call_errors_total{source="tool",code="-32010"})"#)? == 1.0);
    ensure!(one(r#"sum(mcp_bridge_call_errors_total{source="client",code="-32014"})"#)? >= 1.0);
    ensure!(one(r#"count(process_resident_memory_bytes{job="mcp-bridge"})"#)? == 2.0);
    println!(
        "{} dashboard queries checked against Prometheus in {:.1} s:\n{}",
        queries.len(),
        started.elapsed().as_secs_f64(),
        report.join("\n")
    );
    Ok(())
}

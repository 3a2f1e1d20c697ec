//! Every query of the dashboard, run by a real Prometheus that scraped two relays during a
//! scripted workload.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use mcp_bridge_tests::proxy::FaultProxy;
use mcp_bridge_tests::ws::{self, Upgrade};
use mcp_bridge_tests::{
    bin, demo_tool, relay_config, repo_root, token_auth, wait_until, Ide, Prometheus, Relay,
};
use serde_json::{json, Value};
use tokio::net::TcpSocket;

use super::dashboard::{self, Query};

const T: Duration = Duration::from_secs(15);
const TOKEN: &str = "observability-token-5d1e";

/// Idle connections opened from 127.0.0.2 (not Prometheus's 127.0.0.1): one more than the
/// default `max_handshakes_per_source`, so the last is shed.
const IDLE_CONNECTIONS: usize = 33;

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
/// re-established session, rate-limited calls, a tool error, a refused resume, a shed
/// handshake, a wrong token. The IDEs it
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
    // Once bridge-client knows the session is over (a call sent before that is answered
    // -32011, "retry it"), its next call opens the new session.
    one.stderr
        .wait_for("the relay ended the session: tool `demo` exited", T)?;
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

    refusals(b)?;

    // A wrong token on each relay.
    for relay in [a, b] {
        let mut wrong = ide(&relay.url("demo"), "not-the-token")?;
        ensure!(!wrong.wait(T)?.success(), "a wrong token was accepted");
    }
    Ok(vec![one, two, three])
}

/// On relay b: a resume of a session it never held (refused with 404), and connections from
/// one other source that send nothing, one past the per-source handshake bound (the last is
/// shed).
fn refusals(b: &Relay) -> Result<()> {
    ws::runtime().block_on(async {
        let bearer = format!("Bearer {TOKEN}");
        let id = "0".repeat(32);
        let headers = [
            ("authorization", bearer.as_str()),
            ("mcp-bridge-session", id.as_str()),
            ("mcp-bridge-last-seq", "0"),
        ];
        match ws::connect(&b.url("demo"), Some("mcp-bridge.v1"), &headers).await? {
            Upgrade::Refused(404, _) => {}
            Upgrade::Refused(status, body) => bail!("resume refused with {status}: {body}"),
            Upgrade::Open(_) => bail!("a resume of an unknown session was accepted"),
        }
        let mut idle = Vec::new();
        for _ in 0..IDLE_CONNECTIONS {
            let socket = TcpSocket::new_v4()?;
            socket.bind(SocketAddr::from((Ipv4Addr::new(127, 0, 0, 2), 0)))?;
            idle.push(socket.connect(b.addr).await?);
        }
        // Held until the relay has counted the shed one.
        wait_until(T, || {
            b.sample(r#"mcp_bridge_handshakes_shed_total{reason="source_limit"}"#)
                .is_ok_and(|v| v >= 1.0)
        })
        .context("no handshake shed")?;
        drop(idle);
        Ok(())
    })
}

#[test]
fn every_dashboard_query_runs_on_prometheus_scraping_two_relays() -> Result<()> {
    let started = Instant::now();
    let dash = dashboard::load()?;
    let queries = dashboard::queries(&dash);
    let a = start_relay()?;
    let b = start_relay()?;
    let proxy = FaultProxy::start(a.addr)?;
    let rules = repo_root().join("deploy/prometheus/alerts.yml");
    let prom = Prometheus::start("mcp-bridge", &[a.addr, b.addr], Some(&rules))?;
    let instances = vec![a.addr.to_string(), b.addr.to_string()];
    wait_until(T, || {
        prom.series(r#"up{job="mcp-bridge"} == 1"#)
            .is_ok_and(|s| s.len() == 2)
    })
    .with_context(|| format!("Prometheus never scraped both relays:\n{}", prom.log.text()))?;

    let _ides = workload(&a, &b, &proxy)?;

    // Until every query has data (Prometheus scrapes every second; a rate needs two samples
    // after the event).
    let run = |q: &Query| prom.series(&dashboard::substitute(&q.expr, &instances, "30s"));
    let mut empty: Vec<String> = Vec::new();
    let _ = wait_until(Duration::from_secs(20), || {
        empty = queries
            .iter()
            .filter(|q| run(q).map_or(true, |s| s.is_empty()))
            .map(|q| format!("{}: {}", q.panel, q.expr))
            .collect();
        empty.is_empty()
    });
    // Now every query, once more: none errors, and every one has data.
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
    ensure!(one(r#"sum(mcp_bridge_rejected_connections_total{reason="resume_unknown"})"#)? == 1.0);
    alerts_on_live_data(&prom, &std::fs::read_to_string(&rules)?)?;
    println!(
        "{} dashboard queries checked against Prometheus in {:.1} s:\n{}",
        queries.len(),
        started.elapsed().as_secs_f64(),
        report.join("\n")
    );
    Ok(())
}

/// The alert rules, evaluated by the same Prometheus on the relays' real series: every metric
/// they read is one the relays export (a misspelt name would pass `promtool test rules` with
/// equally misspelt fixtures, and never fire), every rule evaluates without error, and none is
/// pending or firing after this ordinary workload (one crash, two bad tokens).
fn alerts_on_live_data(prom: &Prometheus, rules_text: &str) -> Result<()> {
    let mut names: Vec<&str> = rules_text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("mcp_bridge_") || w.starts_with("process_"))
        .collect();
    names.sort_unstable();
    names.dedup();
    ensure!(names.len() >= 8, "{names:?}");
    for name in &names {
        ensure!(
            !prom
                .series(&format!(r#"{name}{{job="mcp-bridge"}}"#))?
                .is_empty(),
            "alerts.yml reads `{name}`, which the relays do not export"
        );
    }
    let mut evaluated = Vec::new();
    wait_until(T, || {
        evaluated = prom.rules().unwrap_or_default();
        evaluated.len() >= 9
            && evaluated.iter().all(|r| {
                r["lastEvaluation"]
                    .as_str()
                    .is_some_and(|t| !t.starts_with("0001"))
            })
    })
    .with_context(|| format!("rules not evaluated: {evaluated:?}"))?;
    for r in &evaluated {
        ensure!(
            r["health"] == "ok",
            "rule {} unhealthy: {}",
            r["name"],
            r["lastError"]
        );
        ensure!(
            r["state"] == "inactive",
            "rule {} is {}: {r}",
            r["name"],
            r["state"]
        );
    }
    println!(
        "{} alert rules evaluated on the relays' series: healthy and inactive; metrics read: {}",
        evaluated.len(),
        names.join(", ")
    );
    Ok(())
}

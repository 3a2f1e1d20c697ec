//! The pinned third-party peers (the Python and TypeScript SDKs, server-everything,
//! mcp-server-time) and their driver scripts in tests/peers, run to a JSON summary; peer servers
//! that announce themselves on one JSON line; bridge-client with the stand-in sign-in browser.
//! Not how they are installed (scripts/install-peers.sh).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::paths::{bin, repo_root};
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

    /// server-everything over stdio as a relay `[[tool]]` table named `everything`.
    pub fn everything_table(&self) -> String {
        crate::tool_table("everything", &self.server_everything(), &["stdio"], "")
    }

    /// A driver script in tests/peers.
    pub fn script(&self, name: &str) -> PathBuf {
        repo_root().join("tests/peers").join(name)
    }
}

/// Starts a peer server that prints one JSON line on stdout once it listens (the OAuth and
/// identity-provider peers) and serves until killed: the child and that line. Its stdout is
/// drained after the line (a closed pipe would kill it at its next write); its stderr is
/// dropped. Fails, with the child reaped, when no line comes within 20 s.
pub fn start_announcing(cmd: &mut Command, what: &str) -> Result<(Child, Value)> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let stdout = child.stdout.take().context("stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line);
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) else {
        let _ = child.kill();
        let _ = child.wait();
        bail!("{what} did not start within 20 s");
    };
    match serde_json::from_str(&line) {
        Ok(v) => Ok((child, v)),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e).with_context(|| format!("{what} announced {line:?}"))
        }
    }
}

/// `bridge-client ARGS` signing in through the stand-in browser (tests/peers/oauth_browser.py
/// as `$BROWSER`), which appends a line per run to `dir/browser.log`; `dir` is also its
/// `XDG_RUNTIME_DIR` (lock files). No `MCP_BRIDGE_TOKEN` from the test's environment.
pub fn signin_client(dir: &Path, args: &[&str]) -> Command {
    let peers = Peers::require();
    let browser = format!(
        "{} {}",
        peers.python.display(),
        peers.script("oauth_browser.py").display()
    );
    let mut cmd = Command::new(bin("bridge-client"));
    cmd.args(args)
        .env("BROWSER", browser)
        .env("OAUTH_BROWSER_LOG", dir.join("browser.log"))
        .env("XDG_RUNTIME_DIR", dir)
        .env_remove("MCP_BRIDGE_TOKEN");
    cmd
}

/// How many times the stand-in browser of [`signin_client`] ran with `dir`.
pub fn browser_runs(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("browser.log"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
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

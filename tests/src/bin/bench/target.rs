//! What the benchmark drives: the demo tool directly over a stdio pipe, the chain
//! bridge-client → relay → tool (over the tunnel, or Streamable HTTP to the relay's carrier), or
//! mcp-remote → the relay's carrier → tool; which processes serve a session, and the CPU time each of them
//! spends over a run. Not the measurements themselves (measure.rs).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use mcp_bridge_tests::{bin, children_of, cpu_time, wait_until, Ide};

/// A stdio MCP server as the IDE sees it: bridge-client to a relay, mcp-remote to the relay's
/// Streamable HTTP carrier, or the demo tool directly.
#[derive(Clone)]
pub(crate) enum Target {
    Direct,
    Chain {
        url: String,
        extra: Vec<String>,
        /// The relay's pid, to find the session's processes.
        relay: u32,
    },
    /// mcp-remote 0.15.1 (`--transport http-only --allow-http --silent`) on the system's node.
    McpRemote {
        /// Its entry script (`dist/proxy.js`).
        script: PathBuf,
        url: String,
        /// A scratch HOME (it keeps `~/.mcp-auth` there).
        home: PathBuf,
        relay: u32,
    },
}

/// The processes that can serve a session, in the order of [`Procs`] and [`CpuPerOp`].
pub(crate) const PROCESSES: [&str; 3] = ["bridge-client", "relay", "tool"];

/// The pids of the processes that serve one session, in the order of [`PROCESSES`] (`None`
/// where the path has no such process: direct has only the tool).
#[derive(Clone, Copy)]
pub(crate) struct Procs([Option<u32>; 3]);

/// CPU time (user + system) per operation of each process of a session over one run, in the
/// order of [`PROCESSES`].
#[derive(Clone, Copy)]
pub(crate) struct CpuPerOp(pub(crate) [Option<Duration>; 3]);

impl CpuPerOp {
    /// All of the session's processes together.
    pub(crate) fn total(&self) -> Duration {
        self.0.iter().flatten().sum()
    }
}

impl Target {
    /// A new session (process started, nothing sent yet).
    pub(crate) fn open(&self) -> Result<Ide> {
        match self {
            Target::Direct => Ide::spawn(
                Command::new(bin("bridge-server"))
                    .arg("demo-tool")
                    .env("RUST_LOG", "warn"),
            ),
            Target::Chain { url, extra, .. } => {
                let mut cmd = Command::new(bin("bridge-client"));
                cmd.arg(url).arg("--no-keyring").args(extra);
                Ide::spawn(&mut cmd)
            }
            Target::McpRemote {
                script, url, home, ..
            } => Ide::spawn(
                Command::new("node")
                    .arg(script)
                    .arg(url)
                    .args(["--transport", "http-only", "--allow-http", "--silent"])
                    .env("HOME", home),
            ),
        }
    }

    /// The relay behind this target, if any.
    fn relay(&self) -> Option<u32> {
        match self {
            Target::Direct => None,
            Target::Chain { relay, .. } | Target::McpRemote { relay, .. } => Some(*relay),
        }
    }

    /// A new session past `initialize`, with the processes that serve it.
    pub(crate) fn open_initialized(&self) -> Result<(Ide, Procs)> {
        let Some(relay) = self.relay() else {
            let mut ide = self.open()?;
            ide.initialize()?;
            let tool = ide.pid();
            return Ok((ide, Procs([None, None, Some(tool)])));
        };
        let tools_before = live_children(relay);
        let mut ide = self.open()?;
        ide.initialize()?;
        // The relay started the session's tool before it answered `initialize`.
        let mut tool = None;
        wait_until(Duration::from_secs(10), || {
            tool = live_children(relay)
                .into_iter()
                .find(|pid| !tools_before.contains(pid));
            tool.is_some()
        })
        .context("the relay started no tool for the session")?;
        let procs = Procs([Some(ide.pid()), Some(relay), tool]);
        Ok((ide, procs))
    }
}

impl Procs {
    /// The relay and the tool it started for a session opened after `tools_before` was taken
    /// (its live children then); `None` for a tool not found.
    pub(crate) fn relay_session(relay: u32, tools_before: &[u32]) -> Procs {
        let tool = live_children(relay)
            .into_iter()
            .find(|pid| !tools_before.contains(pid));
        Procs([None, Some(relay), tool])
    }
}

/// A process's children that are not zombies.
pub(crate) fn live_children(pid: u32) -> Vec<u32> {
    children_of(pid)
        .into_iter()
        .filter(|c| c.1 != 'Z')
        .map(|c| c.0)
        .collect()
}

/// The CPU time the processes of a session have used so far.
pub(crate) struct CpuMark {
    procs: Procs,
    at: [Option<Duration>; 3],
}

impl CpuMark {
    /// Reads every process's CPU time now.
    pub(crate) fn now(procs: Procs) -> CpuMark {
        let at = procs.0.map(|p| p.and_then(cpu_time));
        CpuMark { procs, at }
    }

    /// The CPU time each process used since this mark, divided by `ops`.
    pub(crate) fn per_op(&self, ops: usize) -> CpuPerOp {
        let now = CpuMark::now(self.procs).at;
        let per = |i: usize| {
            let used = now[i]?.saturating_sub(self.at[i]?);
            Some(used / u32::try_from(ops.max(1)).unwrap_or(u32::MAX))
        };
        CpuPerOp([per(0), per(1), per(2)])
    }
}

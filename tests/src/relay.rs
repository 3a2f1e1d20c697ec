//! A running relay: the real `bridge-server` binary on a free loopback port, with its log,
//! its process table, its memory and its `/metrics`. Not the config text (config.rs).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::config::relay_config_on;
use crate::metrics::{http_get, parse_metrics};
use crate::paths::{bin, TempDir};
use crate::process::{reap, signal, terminate_and_reap, wait_until, Log, STDERR_DRAIN};
use crate::procfs::{children_of, proc_status_bytes};

/// A running relay (the real `bridge-server` binary) on a free loopback port.
pub struct Relay {
    child: Option<Child>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its stderr.
    pub log: Log,
    dir: TempDir,
}

impl Relay {
    /// Starts the relay with the given tool tables (and any other config text).
    pub fn start(config_body: &str) -> Result<Relay> {
        Relay::start_with("", config_body, None)
    }

    /// Starts the relay with extra `[limits]` lines, the tool tables, and optionally a fixed
    /// listen address (to restart a relay where the previous one was).
    pub fn start_with(
        limits: &str,
        config_body: &str,
        listen: Option<SocketAddr>,
    ) -> Result<Relay> {
        let listen = listen.map_or("127.0.0.1:0".to_owned(), |a| a.to_string());
        Relay::start_config(&relay_config_on(&listen, limits, config_body), &[])
    }

    /// Starts the relay with a whole config file's text and extra environment variables.
    pub fn start_config(config_text: &str, envs: &[(&str, &str)]) -> Result<Relay> {
        Relay::start_full(config_text, envs, &[])
    }

    /// Starts the relay with a config file's text, environment variables and extra arguments.
    pub fn start_full(config_text: &str, envs: &[(&str, &str)], args: &[&str]) -> Result<Relay> {
        let dir = TempDir::new();
        let config = dir.path().join("relay.toml");
        std::fs::write(&config, config_text)?;
        let mut child = Command::new(bin("bridge-server"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .env("RUST_LOG", "debug,hyper=info")
            // Each log line at once, for tests that read the log right after an action (the
            // default batching has its own test: operations::logs_are_batched_and_…).
            .env("MCP_BRIDGE_LOG_FLUSH_MS", "0")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting bridge-server")?;
        let log = Log::default();
        log.drain_from(child.stderr.take().context("stderr")?, "relay");
        let mut relay = Relay {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            dir,
        };
        let marker = "bridge-server listening on ";
        relay.log.wait_for(marker, Duration::from_secs(10))?;
        let text = relay.log.text();
        let addr = text
            .lines()
            .find_map(|l| l.split(marker).nth(1))
            .and_then(|rest| rest.split(|c: char| c.is_whitespace() || c == '"').next())
            .context("listening line")?;
        relay.addr = addr.parse().context("relay address")?;
        Ok(relay)
    }

    /// The address of the relay's separate metrics listener (`[metrics] listen`), from its
    /// start-up line.
    pub fn metrics_addr(&self) -> Result<SocketAddr> {
        let marker = "metrics on http://";
        self.log.wait_for(marker, Duration::from_secs(10))?;
        let text = self.log.text();
        text.lines()
            .find_map(|l| l.split(marker).nth(1))
            .and_then(|rest| rest.split('/').next())
            .context("metrics line")?
            .parse()
            .context("metrics address")
    }

    /// The relay's PID.
    /// The relay's config file (rewrite it to test reloads).
    pub fn config_path(&self) -> std::path::PathBuf {
        self.dir.path().join("relay.toml")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// `ws://ADDR/mcp/TOOL`.
    pub fn url(&self, tool: &str) -> String {
        format!("ws://{}/mcp/{tool}", self.addr)
    }

    /// The relay's direct children (tool processes), as (pid, state) pairs.
    pub fn children(&self) -> Vec<(u32, char)> {
        children_of(self.pid())
    }

    /// The relay's resident memory now (VmRSS), in bytes.
    pub fn rss(&self) -> u64 {
        proc_status_bytes(self.pid(), "VmRSS").unwrap_or(0)
    }

    /// The relay's peak resident memory so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> u64 {
        proc_status_bytes(self.pid(), "VmHWM").unwrap_or(0)
    }

    /// Every sample of `/metrics`, keyed by name with labels as exposed
    /// (`mcp_bridge_sessions_active{tool="demo"}`).
    pub fn metrics(&self) -> Result<HashMap<String, f64>> {
        let (status, body) = http_get(self.addr, "/metrics")?;
        if status != 200 {
            bail!("/metrics answered {status}: {body}");
        }
        Ok(parse_metrics(&body))
    }

    /// One sample of `/metrics`, `key` being its name with labels as exposed (see
    /// [`Relay::metrics`]); 0 when the relay does not expose it.
    pub fn sample(&self, key: &str) -> Result<f64> {
        Ok(self.metrics()?.get(key).copied().unwrap_or(0.0))
    }

    /// The `mcp_bridge_sessions_active` gauge of `tool` (0 when it was never set).
    pub fn sessions_active(&self, tool: &str) -> Result<f64> {
        self.sample(&format!("mcp_bridge_sessions_active{{tool=\"{tool}\"}}"))
    }

    /// Waits until `tool` has no session on the relay (`/metrics`) and the relay has no child
    /// process left (none running, no zombie).
    pub fn wait_idle(&self, tool: &str, limit: Duration) -> Result<()> {
        wait_until(limit, || {
            self.sessions_active(tool).is_ok_and(|n| n == 0.0) && self.children().is_empty()
        })
        .map_err(|_| {
            anyhow!(
                "after {limit:?} the relay still holds {} session(s) of `{tool}` and children {:?}",
                self.sessions_active(tool).unwrap_or(f64::NAN),
                self.children()
            )
        })
    }

    /// Waits until the relay has no child process left at all (none running, no zombie).
    pub fn wait_no_children(&self, limit: Duration) -> Result<()> {
        wait_until(limit, || self.children().is_empty()).map_err(|_| {
            anyhow!(
                "relay still has children {:?} after {limit:?}",
                self.children()
            )
        })
    }

    /// Sends SIGTERM and waits for the relay to exit (SIGKILLed after 15 s, and an error).
    pub fn stop(mut self) -> Result<ExitStatus> {
        let mut child = self.child.take().context("already stopped")?;
        let status = terminate_and_reap(&mut child, Duration::from_secs(15))?;
        self.log.wait_closed(STDERR_DRAIN);
        Ok(status)
    }

    /// Sends SIGTERM without waiting (the relay drains).
    pub fn terminate(&self) {
        signal(self.pid(), "TERM");
    }

    /// Waits for the relay to exit (after [`Relay::terminate`]); SIGKILLed past `limit`, and
    /// an error.
    pub fn wait_exit(mut self, limit: Duration) -> Result<ExitStatus> {
        let mut child = self.child.take().context("already stopped")?;
        let status = reap(&mut child, limit)?;
        self.log.wait_closed(STDERR_DRAIN);
        Ok(status)
    }

    /// SIGKILLs the relay, as a crash would, and reaps it. Its tools are orphaned and end when
    /// their stdin closes, like after a real crash; returns their pids so a test can wait for them.
    pub fn kill(mut self) -> Result<Vec<u32>> {
        let tools: Vec<u32> = self.children().iter().map(|c| c.0).collect();
        let mut child = self.child.take().context("already stopped")?;
        child.kill()?;
        child.wait()?;
        Ok(tools)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = terminate_and_reap(&mut child, Duration::from_secs(10));
        }
    }
}

//! The IDE's side of a stdio MCP server: bridge-client (or any stdio server) driven with JSON
//! lines on its stdin and read from its stdout, with deadlines. Not the relay (relay.rs).

use std::io::Write;
use std::process::{Child, ChildStdin, Command, ExitStatus};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::paths::bin;
use crate::process::{reap, wait_child, Log, Piped, STDERR_DRAIN};

/// A bridge-client process driven as an IDE drives it: JSON lines in, JSON lines out.
pub struct Ide {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// bridge-client's stderr.
    pub stderr: Log,
}

impl Ide {
    /// Starts `bridge-client URL EXTRA_ARGS...`.
    pub fn connect(url: &str, extra_args: &[&str]) -> Result<Ide> {
        Ide::spawn(Command::new(bin("bridge-client")).arg(url).args(extra_args))
    }

    /// Starts any stdio MCP server command as the "IDE's server".
    pub fn spawn(cmd: &mut Command) -> Result<Ide> {
        let p = Piped::spawn(cmd, "the stdio server", "client")?;
        Ok(Ide {
            child: p.child,
            stdin: Some(p.stdin),
            lines: p.lines,
            stderr: p.stderr,
        })
    }

    /// Writes one raw line to bridge-client's stdin.
    pub fn send_raw(&mut self, line: &[u8]) -> Result<()> {
        let stdin = self.stdin.as_mut().context("stdin already closed")?;
        stdin.write_all(line)?;
        stdin.write_all(b"\n")?;
        stdin.flush()?;
        Ok(())
    }

    /// Writes one JSON-RPC message.
    pub fn send(&mut self, msg: &Value) -> Result<()> {
        self.send_raw(msg.to_string().as_bytes())
    }

    /// Sends a request and waits for the response with the same id; anything else that
    /// arrives meanwhile is dropped.
    pub fn request(&mut self, id: Value, method: &str, params: Value) -> Result<Value> {
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))?;
        self.recv_until(Duration::from_secs(20), |m| {
            m.get("id") == Some(&id) && m.get("method").is_none()
        })
    }

    /// The next message from bridge-client's stdout.
    pub fn recv(&mut self, limit: Duration) -> Result<Value> {
        let line = match self.lines.recv_timeout(limit) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => bail!(
                "no message within {limit:?}; bridge-client stderr:\n{}",
                self.stderr.text()
            ),
            Err(RecvTimeoutError::Disconnected) => bail!(
                "bridge-client closed stdout; stderr:\n{}",
                self.stderr.text()
            ),
        };
        serde_json::from_str(&line).with_context(|| format!("stdout line is not JSON: {line:?}"))
    }

    /// Receives until a message matches, returning it; other messages are dropped.
    pub fn recv_until(
        &mut self,
        limit: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = self.recv(left)?;
            if pred(&msg) {
                return Ok(msg);
            }
        }
    }

    /// Asserts no message arrives for `quiet`.
    pub fn expect_silence(&mut self, quiet: Duration) -> Result<()> {
        match self.lines.recv_timeout(quiet) {
            Ok(line) => bail!("unexpected message: {line}"),
            Err(_) => Ok(()),
        }
    }

    /// The old-era handshake: `initialize` then `notifications/initialized`.
    pub fn initialize(&mut self) -> Result<Value> {
        let resp = self.request(
            json!(0),
            "initialize",
            json!({
                "protocolVersion": "2025-06-18",
                "capabilities": {"sampling": {}},
                "clientInfo": {"name": "mcp-bridge-tests", "version": "0"}
            }),
        )?;
        self.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))?;
        Ok(resp)
    }

    /// Closes stdin (EOF), as an IDE does when it is done.
    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    /// Waits for the process to exit, and for the last of its stderr to be read.
    pub fn wait(&mut self, limit: Duration) -> Result<ExitStatus> {
        let status = wait_child(&mut self.child, limit)?;
        self.stderr.wait_closed(STDERR_DRAIN);
        Ok(status)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Ide {
    fn drop(&mut self) {
        self.stdin.take();
        let _ = reap(&mut self.child, Duration::from_secs(3));
    }
}

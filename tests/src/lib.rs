//! The end-to-end test harness: start the real relay binary on a free loopback port, drive the
//! real bridge-client binary as an IDE would (JSON lines on its stdin/stdout), find the pinned
//! third-party peers, and inspect the process table for leftovers.
//!
//! Everything waits on a condition with a deadline; nothing sleeps for readiness.

#![allow(clippy::unwrap_used, clippy::print_stdout, unreachable_pub)]

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

pub mod pki;
pub mod proxy;
pub mod ws;

/// The command that installs the test peers; named in every "peers missing" failure.
pub const SETUP_COMMAND: &str = "scripts/install-peers.sh";

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// Path of a workspace binary, built by `cargo build --workspace` (the test command does that).
pub fn bin(name: &str) -> PathBuf {
    // Test executables live in target/<profile>/deps, the binaries (and the bench) one level up.
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("target dir").to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first with `cargo build --workspace --bins` \
         (scripts/test.sh does this)",
        path.display()
    );
    path
}

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

/// A TOML `[[tool]]` table.
pub fn tool_table(name: &str, command: &Path, args: &[&str], extra: &str) -> String {
    let args: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
    format!(
        "[[tool]]\nname = {name:?}\ncommand = {:?}\nargs = [{}]\n{extra}\n",
        command.display().to_string(),
        args.join(", ")
    )
}

/// The demo tool, as a `[[tool]]` table named `name`.
pub fn demo_tool(name: &str, extra: &str) -> String {
    tool_table(name, &bin("bridge-server"), &["demo-tool"], extra)
}

/// A temporary folder removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty folder under the system temp dir.
    pub fn new() -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("mcp-bridge-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Default for TempDir {
    fn default() -> Self {
        TempDir::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Collected stderr of a process, shared with the thread that reads it.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<String>>);

impl Log {
    /// Collects the lines of `stream` (a child's stderr) on a thread, tagged `tag` when
    /// `MCP_BRIDGE_TEST_ECHO` is set.
    pub fn drain_from(
        &self,
        stream: impl std::io::Read + Send + 'static,
        tag: &'static str,
    ) -> thread::JoinHandle<()> {
        let log = self.clone();
        thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("MCP_BRIDGE_TEST_ECHO").is_some() {
                    eprintln!("[{tag}] {line}");
                }
                let mut text = log.0.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        })
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_for(&self, needle: &str, limit: Duration) -> Result<()> {
        wait_until(limit, || self.text().contains(needle))
            .with_context(|| format!("log never showed {needle:?}; log:\n{}", self.text()))
    }
}

/// Polls `cond` every 10 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("condition not met within {limit:?}");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// A running relay (the real `bridge-server` binary) on a free loopback port.
pub struct Relay {
    child: Option<Child>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its stderr.
    pub log: Log,
    _dir: TempDir,
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
        Relay::start_config(
            &format!(
                "listen = \"{listen}\"\n[limits]\nkill_grace_ms = 500\n{limits}\n\n{config_body}"
            ),
            &[],
        )
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
            _dir: dir,
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

    /// The relay's PID.
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
    pub fn metrics(&self) -> Result<std::collections::HashMap<String, f64>> {
        let (status, body) = http_get(self.addr, "/metrics")?;
        if status != 200 {
            bail!("/metrics answered {status}: {body}");
        }
        Ok(parse_metrics(&body))
    }

    /// The `mcp_bridge_sessions_active` gauge of `tool` (0 when it was never set).
    pub fn sessions_active(&self, tool: &str) -> Result<f64> {
        let key = format!("mcp_bridge_sessions_active{{tool=\"{tool}\"}}");
        Ok(self.metrics()?.get(&key).copied().unwrap_or(0.0))
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

    /// Sends SIGTERM and waits for the relay to exit.
    pub fn stop(mut self) -> Result<ExitStatus> {
        let mut child = self.child.take().context("already stopped")?;
        signal(child.id(), "TERM");
        wait_child(&mut child, Duration::from_secs(15))
    }

    /// Sends SIGTERM without waiting (the relay drains).
    pub fn terminate(&self) {
        signal(self.pid(), "TERM");
    }

    /// Waits for the relay to exit (after [`Relay::terminate`]).
    pub fn wait_exit(mut self, limit: Duration) -> Result<ExitStatus> {
        let mut child = self.child.take().context("already stopped")?;
        wait_child(&mut child, limit)
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
            signal(child.id(), "TERM");
            if wait_child(&mut child, Duration::from_secs(10)).is_err() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Prometheus text as a map from `name{labels}` to value (comments and `# EOF` skipped).
pub fn parse_metrics(text: &str) -> std::collections::HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// A `kB` field of `/proc/<pid>/status` (VmRSS, VmHWM, …), in bytes.
pub fn proc_status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kib * 1024)
    })
}

/// Bytes as MiB, for messages.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The real python3 interpreter (resolved once through `python3` on PATH, so that a version
/// manager's shim is not what the relay starts for every session).
pub fn python3() -> PathBuf {
    static PYTHON: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let out = Command::new("python3")
                .args(["-c", "import sys; print(sys.executable)"])
                .output()
                .expect("python3 is needed for the test fixture tools");
            let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            assert!(
                out.status.success() && !path.is_empty(),
                "python3 did not say where it is: {out:?}"
            );
            PathBuf::from(path)
        })
        .clone()
}

/// A file in tests/fixtures.
pub fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(name)
}

/// The fixture tool tests/fixtures/mcp_tool.py with `args`, as a `[[tool]]` table named `name`.
pub fn fixture_tool(name: &str, args: &[&str], extra: &str) -> String {
    let script = fixture("mcp_tool.py").display().to_string();
    let mut all = vec![script.as_str()];
    all.extend_from_slice(args);
    tool_table(name, &python3(), &all, extra)
}

/// Sends a signal by name with kill(1) (the harness keeps to safe Rust).
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

/// Waits for a child with a deadline.
pub fn wait_child(child: &mut Child, limit: Duration) -> Result<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            bail!("process {} still running after {limit:?}", child.id());
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Direct children of `pid` from /proc, with their state letter (`Z` = zombie).
pub fn children_of(pid: u32) -> Vec<(u32, char)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(child_pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...; comm may contain spaces and parens.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut fields = after.split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid = fields.next().and_then(|s| s.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push((child_pid, state));
        }
    }
    out
}

/// The lines of a child's output, read on a thread, as they come.
fn lines_of(stream: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Whether a process exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rfind(')')
                .map(|i| stat[i + 1..].trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
}

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
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the stdio server")?;
        let stderr = Log::default();
        stderr.drain_from(child.stderr.take().context("stderr")?, "client");
        let lines = lines_of(child.stdout.take().context("stdout")?);
        Ok(Ide {
            stdin: child.stdin.take(),
            child,
            lines,
            stderr,
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

    /// Sends a request and waits for the response with the same id, collecting anything else
    /// that arrives meanwhile into `others`.
    pub fn request(&mut self, id: Value, method: &str, params: Value) -> Result<Value> {
        self.send(
            &serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}),
        )?;
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
            serde_json::json!(0),
            "initialize",
            serde_json::json!({
                "protocolVersion": "2025-06-18",
                "capabilities": {"sampling": {}},
                "clientInfo": {"name": "mcp-bridge-tests", "version": "0"}
            }),
        )?;
        self.send(&serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))?;
        Ok(resp)
    }

    /// Closes stdin (EOF), as an IDE does when it is done.
    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    /// Waits for the process to exit.
    pub fn wait(&mut self, limit: Duration) -> Result<ExitStatus> {
        wait_child(&mut self.child, limit)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Ide {
    fn drop(&mut self) {
        self.stdin.take();
        if wait_child(&mut self.child, Duration::from_secs(3)).is_err() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
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
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the driver")?;
    let err_log = Log::default();
    err_log.drain_from(child.stderr.take().context("stderr")?, "driver-err");
    let rx = lines_of(child.stdout.take().context("stdout")?);
    let mut stdin = child.stdin.take().context("stdin")?;
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
    let status = match wait_child(&mut child, Duration::from_secs(10)) {
        Ok(s) => s,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e).context(format!("stderr:\n{}", err_log.text()));
        }
    };
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

/// A plain HTTP/1.1 GET on loopback: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("status line")?;
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

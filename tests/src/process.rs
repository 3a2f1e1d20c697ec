//! Processes the tests start: spawning with piped stdio, collecting stderr, reading stdout
//! lines, waiting with a deadline, signals, and always reaping. Not what /proc says about them
//! (procfs.rs).

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How long to wait, once a process has exited, for the rest of its stderr to be read.
pub(crate) const STDERR_DRAIN: Duration = Duration::from_secs(2);

/// Collected stderr of a process, shared with the thread that reads it.
#[derive(Clone, Default)]
pub struct Log {
    text: Arc<Mutex<String>>,
    /// Streams still being read: a process's exit does not mean its last lines were read yet.
    open: Arc<AtomicUsize>,
}

impl Log {
    /// Collects the lines of `stream` (a child's stderr) on a thread, tagged `tag` when
    /// `MCP_BRIDGE_TEST_ECHO` is set.
    pub fn drain_from(
        &self,
        stream: impl std::io::Read + Send + 'static,
        tag: &'static str,
    ) -> thread::JoinHandle<()> {
        let log = self.clone();
        log.open.fetch_add(1, Ordering::SeqCst);
        thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("MCP_BRIDGE_TEST_ECHO").is_some() {
                    eprintln!("[{tag}] {line}");
                }
                let mut text = log.text.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
            log.open.fetch_sub(1, Ordering::SeqCst);
        })
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        self.text.lock().unwrap().clone()
    }

    /// Waits (at most `limit`) until every stream drained into this log has ended, so that
    /// [`Log::text`] holds all a process wrote before it exited. A stream another process still
    /// holds open may not end: then this gives up quietly after `limit`.
    pub fn wait_closed(&self, limit: Duration) {
        let _ = wait_until(limit, || self.open.load(Ordering::SeqCst) == 0);
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

/// Waits up to `limit` for a child to exit, then SIGKILLs it: reaped either way. The error (it
/// had to be killed) is [`wait_child`]'s.
pub fn reap(child: &mut Child, limit: Duration) -> Result<ExitStatus> {
    let waited = wait_child(child, limit);
    if waited.is_err() {
        let _ = child.kill();
        let _ = child.wait();
    }
    waited
}

/// SIGTERM, then [`reap`].
pub fn terminate_and_reap(child: &mut Child, limit: Duration) -> Result<ExitStatus> {
    signal(child.id(), "TERM");
    reap(child, limit)
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

/// A child with every stdio stream piped: its stdin, its stdout as lines on a channel, its
/// stderr collected.
pub(crate) struct Piped {
    pub(crate) child: Child,
    pub(crate) stdin: ChildStdin,
    pub(crate) lines: Receiver<String>,
    pub(crate) stderr: Log,
}

impl Piped {
    /// Spawns `cmd`; `what` names it in the error, `tag` in echoed stderr.
    pub(crate) fn spawn(cmd: &mut Command, what: &str, tag: &'static str) -> Result<Piped> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        let stderr = Log::default();
        stderr.drain_from(child.stderr.take().context("stderr")?, tag);
        let lines = lines_of(child.stdout.take().context("stdout")?);
        let stdin = child.stdin.take().context("stdin")?;
        Ok(Piped {
            child,
            stdin,
            lines,
            stderr,
        })
    }
}

/// What a [`run_bounded`] command printed, and how it ended.
#[derive(Debug)]
pub struct Finished {
    /// Its exit status.
    pub status: ExitStatus,
    /// Its whole stdout.
    pub stdout: String,
    /// Its whole stderr.
    pub stderr: String,
}

/// Runs `cmd` to its end in a process group of its own, with stdin closed and its output
/// collected; past `limit` the whole group is SIGKILLed (the command and whatever it started),
/// reaped, and that is an error carrying what it had printed.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Result<Finished> {
    use std::os::unix::process::CommandExt;
    let mut child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let (out, err) = (Log::default(), Log::default());
    out.drain_from(child.stdout.take().context("stdout")?, "bounded-out");
    err.drain_from(child.stderr.take().context("stderr")?, "bounded-err");
    let waited = wait_child(&mut child, limit);
    if waited.is_err() {
        // The group's id is the child's pid (process_group(0)).
        signal_group(child.id(), "KILL");
        let _ = child.wait();
    }
    out.wait_closed(STDERR_DRAIN);
    err.wait_closed(STDERR_DRAIN);
    let (stdout, stderr) = (out.text(), err.text());
    match waited {
        Ok(status) => Ok(Finished {
            status,
            stdout,
            stderr,
        }),
        Err(e) => Err(e.context(format!(
            "{cmd:?} killed after {limit:?}; stdout:\n{stdout}\nstderr:\n{stderr}"
        ))),
    }
}

/// Sends a signal by name to the process group `pgid` (one the tests started).
fn signal_group(pgid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg("--")
        .arg(format!("-{pgid}"))
        .status();
}

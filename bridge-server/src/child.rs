//! Starting, stopping and reaping one tool process.
//!
//! A tool runs in its own process group with a clean environment plus its configured one. It is
//! ended in steps (close stdin, wait; SIGTERM to the group, wait; SIGKILL) and always reaped.
//! Reading and writing its stdio is the session's job, not this module's.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};

use std::sync::Arc;

use crate::config::{ToolConfig, ToolLimits};
use crate::confine::cgroup::ToolCgroup;
use crate::confine::{self, KillReason, Prepared, Rlimits, Watch};

/// Variables a tool inherits from the relay's environment; everything else comes from its config.
const INHERITED_ENV: &[&str] = &["PATH", "HOME", "USER", "LANG", "LC_ALL", "TZ", "TMPDIR"];

/// Why a tool could not be started.
#[derive(Debug, thiserror::Error)]
#[error("cannot start tool `{tool}` (command `{command}`): {source}")]
pub struct SpawnError {
    /// The tool's name.
    pub tool: String,
    /// The configured command.
    pub command: String,
    /// What the OS said.
    #[source]
    pub source: std::io::Error,
}

/// A running tool process and its three pipes (taken by the session).
#[derive(Debug)]
pub(crate) struct ToolProcess {
    pub(crate) child: Child,
    /// The tool's process group (its pid, taken at spawn: after reaping the pid is gone).
    pub(crate) pgid: Option<Pid>,
    pub(crate) stdin: Option<ChildStdin>,
    pub(crate) stdout: Option<ChildStdout>,
    pub(crate) stderr: Option<ChildStderr>,
    /// The limits it runs under, its cgroup, and why the relay ended it, if it did.
    limits: ToolLimits,
    cgroup: Option<Arc<ToolCgroup>>,
    watch: Watch,
    sandboxed: bool,
}

impl ToolProcess {
    /// Starts `prepared` (see [`crate::confine::Host::prepare`]) for `tool`.
    pub(crate) fn spawn(tool: &ToolConfig, prepared: Prepared) -> Result<ToolProcess, SpawnError> {
        let mut cmd = Command::new(&prepared.program);
        cmd.args(&prepared.args)
            .env_clear()
            .envs(
                INHERITED_ENV
                    .iter()
                    .filter_map(|k| std::env::var_os(k).map(|v| (k, v))),
            )
            .envs(&prepared.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        // In a sandbox, bwrap changes into the folder itself (it may not exist outside).
        if let (Some(cwd), false) = (&prepared.cwd, prepared.sandboxed) {
            cmd.current_dir(cwd);
        }
        let join = prepared
            .cgroup
            .as_ref()
            .map(|c| c.join_fds())
            .unwrap_or_default();
        in_child(&mut cmd, prepared.rlimits, join);
        let mut child = cmd.spawn().map_err(|source| SpawnError {
            tool: tool.name.clone(),
            command: tool.command.clone(),
            source,
        })?;
        let watch = match &prepared.cgroup {
            Some(cg) if tool.limits.processes.is_some() => Watch::start(cg),
            _ => Watch::default(),
        };
        Ok(ToolProcess {
            pgid: child
                .id()
                .and_then(|p| i32::try_from(p).ok())
                .map(Pid::from_raw),
            stdin: child.stdin.take(),
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
            child,
            limits: tool.limits.clone(),
            cgroup: prepared.cgroup,
            watch,
            sandboxed: prepared.sandboxed,
        })
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// How the tool ended, naming the limit that ended it when one did.
    pub(crate) fn describe_exit(&self, status: &ExitStatus) -> String {
        confine::describe_exit(
            status,
            &self.limits,
            self.cgroup.as_deref(),
            self.watch.killed(),
            self.sandboxed,
        )
    }

    /// Ends the tool now because it broke `reason` (the session then ends as the tool's).
    pub(crate) fn kill_for(&self, reason: KillReason) {
        self.watch.record(reason);
        kill_group(self.pgid, Signal::SIGKILL);
        if let Some(cg) = &self.cgroup {
            cg.kill_all();
        }
    }
}

/// What the forked child does before exec: die with the relay, join its cgroup, take its
/// rlimits.
#[allow(unsafe_code)]
fn in_child(cmd: &mut Command, rlimits: Rlimits, cgroup_procs: Vec<i32>) {
    #[cfg(target_os = "linux")]
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // system calls (prctl, write, setrlimit) on values prepared before the fork; it allocates
    // nothing and touches no memory shared with the parent. The cgroup descriptors stay open in
    // the parent (held by the ToolCgroup) until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
            for fd in &cgroup_procs {
                let fd = std::os::fd::BorrowedFd::borrow_raw(*fd);
                nix::unistd::write(fd, b"0").map_err(std::io::Error::from)?;
            }
            rlimits.apply().map_err(std::io::Error::from)
        });
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (cmd, rlimits, cgroup_procs);
}

/// Ends a tool whose stdin the caller has closed: waits `grace` for it to exit, sends SIGTERM to
/// its process group, waits `grace` again, then SIGKILLs the group. Always reaps; returns how it
/// exited.
pub(crate) async fn terminate(
    child: &mut Child,
    pgid: Option<Pid>,
    grace: Duration,
) -> std::io::Result<ExitStatus> {
    if let Ok(status) = tokio::time::timeout(grace, child.wait()).await {
        kill_group(pgid, Signal::SIGKILL);
        return status;
    }
    kill_group(pgid, Signal::SIGTERM);
    if let Ok(status) = tokio::time::timeout(grace, child.wait()).await {
        kill_group(pgid, Signal::SIGKILL);
        return status;
    }
    tracing::warn!("tool did not exit after SIGTERM; sending SIGKILL");
    kill_group(pgid, Signal::SIGKILL);
    child.wait().await
}

/// Signals a whole process group, so that helpers a tool started (npx → node) end with it.
pub(crate) fn kill_group(pgid: Option<Pid>, signal: Signal) {
    if let Some(pgid) = pgid {
        // ESRCH (the group is already gone) is the expected, quiet case.
        let _ = killpg(pgid, signal);
    }
}

/// "exited with status 3", "was killed by signal 9 (SIGKILL)".
pub(crate) fn describe_exit(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        format!("exited with status {code}")
    } else if let Some(sig) = status.signal() {
        match Signal::try_from(sig) {
            Ok(s) => format!("was killed by signal {sig} ({})", s.as_str()),
            Err(_) => format!("was killed by signal {sig}"),
        }
    } else {
        "ended".to_owned()
    }
}

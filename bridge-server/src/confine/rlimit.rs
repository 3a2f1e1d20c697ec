//! The rlimits of a tool process, set in the child between fork and exec.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// The limits to set, decided in the parent (plain numbers: the child may not allocate).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Rlimits {
    /// `RLIMIT_CPU` soft limit in seconds; the hard limit is one more (SIGXCPU, then SIGKILL).
    pub(crate) cpu_seconds: Option<u64>,
    /// `RLIMIT_NOFILE`.
    pub(crate) open_files: Option<u64>,
    /// `RLIMIT_NOFILE` (soft, hard) to give back when `open_files` is unset: the limits the
    /// relay started with, before it raised its own (see [`raise_open_files`]).
    pub(crate) open_files_at_start: Option<(u64, u64)>,
    /// `RLIMIT_DATA`: the memory limit when no cgroup enforces it.
    pub(crate) data: Option<u64>,
    /// `RLIMIT_NPROC`: the process limit when no cgroup enforces it (not for root, whom the
    /// kernel exempts).
    pub(crate) nproc: Option<u64>,
}

impl Rlimits {
    /// Applies them to the calling process. Async-signal-safe: only setrlimit(2).
    pub(crate) fn apply(&self) -> nix::Result<()> {
        // No core dumps of tools: they may hold users' data.
        setrlimit(Resource::RLIMIT_CORE, 0, 0)?;
        if let Some(s) = self.cpu_seconds {
            setrlimit(Resource::RLIMIT_CPU, s, s.saturating_add(1))?;
        }
        if let Some(n) = self.open_files {
            setrlimit(Resource::RLIMIT_NOFILE, n, n)?;
        } else if let Some((soft, hard)) = self.open_files_at_start {
            setrlimit(Resource::RLIMIT_NOFILE, soft, hard)?;
        }
        if let Some(b) = self.data {
            setrlimit(Resource::RLIMIT_DATA, b, b)?;
        }
        if let Some(n) = self.nproc {
            setrlimit(Resource::RLIMIT_NPROC, n, n)?;
        }
        Ok(())
    }
}

/// Raises the relay's own soft `RLIMIT_NOFILE` to its hard limit: each session holds a few
/// descriptors (the connection, the tool's three pipes), and the usual soft limit of 1024 would
/// end a relay at a few hundred sessions. Returns the (soft, hard) limits it started with when
/// it raised them, so tool processes get those back rather than inheriting the raised one.
pub(crate) fn raise_open_files() -> Option<(u64, u64)> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft >= hard {
        return None;
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => {
            tracing::info!(
                from = soft,
                to = hard,
                "raised the open-file limit (RLIMIT_NOFILE)"
            );
            Some((soft, hard))
        }
        Err(e) => {
            tracing::warn!(soft, hard, "cannot raise the open-file limit: {e}");
            None
        }
    }
}

//! How a tool process is confined: its per-user values (`{user}` in args, env and paths,
//! secrets read from per-user files, a per-user folder), its resource limits (a cgroup when the
//! relay has one to delegate, rlimits otherwise), and an optional bubblewrap sandbox.
//!
//! [`Host`] is found once at start-up (which cgroups there are, what must be hidden from
//! sandboxes: a reload adds to that, [`Host::hide_also`]); [`Host::prepare`] turns a tool's
//! config and a user into the command to start.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};

use tracing::{info, warn};

use crate::config::{Config, ToolConfig, ToolLimits};

pub(crate) mod cgroup;
mod rlimit;
pub(crate) use rlimit::Rlimits;
pub(crate) mod sandbox;
pub mod template;
mod watch;

use cgroup::{Cgroups, ToolCgroup};
use sandbox::SandboxError;
use template::{ExpandError, Vars};

pub(crate) use watch::{KillReason, Watch};

/// Largest secret file read into a tool's environment.
const MAX_SECRET: u64 = 64 * 1024;

/// Why a session's tool could not be prepared. Each says whose problem it is.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// A per-user value could not be filled in (the user's name cannot be used).
    #[error("tool `{tool}`: {source}")]
    Expand {
        tool: String,
        #[source]
        source: ExpandError,
    },
    /// A per-user secret file is missing or unreadable.
    #[error(
        "tool `{tool}` needs {var} for user `{user}` from {}, which {why}; ask the relay's \
         operator to provide it",
        path.display()
    )]
    Secret {
        tool: String,
        var: String,
        user: String,
        path: PathBuf,
        why: String,
    },
    /// The per-user folder could not be made.
    #[error("tool `{tool}`: cannot create the folder {}: {source}", path.display())]
    Folder {
        tool: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The sandbox could not be set up.
    #[error("tool `{tool}`: {source}")]
    Sandbox {
        tool: String,
        #[source]
        source: SandboxError,
    },
    /// The tool's cgroup could not be made.
    #[error("tool `{tool}`: cannot create its cgroup: {source}")]
    Cgroup {
        tool: String,
        #[source]
        source: std::io::Error,
    },
}

impl PrepareError {
    /// Whether the refusal is about this user (their name, their secret), not the relay.
    pub fn is_users(&self) -> bool {
        matches!(
            self,
            PrepareError::Expand {
                source: ExpandError::User(_),
                ..
            } | PrepareError::Secret { .. }
        )
    }
}

/// What the relay found about its host at start-up.
#[derive(Debug)]
pub(crate) struct Host {
    cgroups: Option<Cgroups>,
    /// Paths hidden from every sandbox (TLS key, secret folders): those of every config in
    /// force since start-up (a reload adds the new config's; a folder once hidden stays so).
    hidden: std::sync::RwLock<Vec<PathBuf>>,
    is_root: bool,
    /// The current hard `RLIMIT_NOFILE`: a tool's limit cannot go above it unless root.
    nofile_hard: u64,
    /// The open-file limits the relay started with, when it raised its own.
    nofile_at_start: Option<(u64, u64)>,
    next: AtomicU64,
}

/// A tool ready to start: the program, its arguments and environment, and its confinement.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) program: OsString,
    pub(crate) args: Vec<OsString>,
    pub(crate) env: BTreeMap<String, OsString>,
    pub(crate) cwd: Option<PathBuf>,
    pub(crate) rlimits: Rlimits,
    pub(crate) cgroup: Option<Arc<ToolCgroup>>,
    pub(crate) sandboxed: bool,
}

impl Host {
    /// Looks at the host: cgroups to delegate, the relay's own privileges, what to hide.
    pub(crate) fn detect(config: &Config) -> Host {
        let cgroups = match Cgroups::detect() {
            Ok(c) => {
                info!(
                    memory = c.has_memory(),
                    processes = c.has_pids(),
                    "tool limits: enforced by cgroups ({})",
                    match c {
                        Cgroups::V2 { .. } => "v2",
                        Cgroups::V1 { .. } => "v1",
                    }
                );
                Some(c)
            }
            Err(why) => {
                info!("tool limits: no cgroups ({why}); memory by RLIMIT_DATA, processes by RLIMIT_NPROC");
                None
            }
        };
        let is_root = nix::unistd::geteuid().is_root();
        if !cgroups.as_ref().is_some_and(Cgroups::has_pids) && is_root {
            for t in config.tools.iter().filter(|t| t.limits.processes.is_some()) {
                warn!(
                    tool = %t.name,
                    "the tool's process limit cannot be enforced: the relay runs as root \
                     (exempt from RLIMIT_NPROC) without a pids cgroup; run it under systemd \
                     with Delegate=yes, or as another user"
                );
            }
        }
        let nofile_at_start = rlimit::raise_open_files();
        let nofile_hard =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .map_or(u64::MAX, |(_, hard)| hard);
        Host {
            cgroups,
            hidden: std::sync::RwLock::new(hidden_paths(config)),
            is_root,
            nofile_hard,
            nofile_at_start,
            next: AtomicU64::new(0),
        }
    }

    /// A reloaded config is in force: what it names as secret is hidden from sandboxes started
    /// from now on, as well as what was hidden before.
    pub(crate) fn hide_also(&self, config: &Config) {
        let mut hidden = self.hidden.write().unwrap_or_else(PoisonError::into_inner);
        hidden.extend(hidden_paths(config));
        hidden.sort();
        hidden.dedup();
    }

    /// The command for one session of `tool` for `user`: per-user values filled in, the
    /// user's secrets read, the user's folder made, the cgroup created.
    pub(crate) fn prepare(&self, tool: &ToolConfig, user: &str) -> Result<Prepared, PrepareError> {
        let vars = Vars {
            user,
            tool: &tool.name,
        };
        let expand = |t: &str| {
            template::expand(t, vars).map_err(|source| PrepareError::Expand {
                tool: tool.name.clone(),
                source,
            })
        };
        let mut args: Vec<OsString> = Vec::with_capacity(tool.args.len());
        for a in &tool.args {
            args.push(expand(a)?.into());
        }
        let mut env: BTreeMap<String, OsString> = BTreeMap::new();
        for (k, v) in &tool.env {
            env.insert(k.clone(), expand(v)?.into());
        }
        for (var, path) in &tool.env_files {
            let path = PathBuf::from(expand(&path.to_string_lossy())?);
            let value = read_secret(&path).map_err(|why| PrepareError::Secret {
                tool: tool.name.clone(),
                var: var.clone(),
                user: shared::log_safe(user).into_owned(),
                path: path.clone(),
                why,
            })?;
            env.insert(var.clone(), value);
        }
        let cwd = match &tool.cwd {
            Some(c) => Some(PathBuf::from(expand(&c.to_string_lossy())?)),
            None => None,
        };
        if let (Some(dir), true) = (&cwd, tool.create_cwd) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| PrepareError::Folder {
                    tool: tool.name.clone(),
                    path: dir.clone(),
                    source,
                })?;
        }
        let (program, args) = match &tool.sandbox {
            Some(sb) => {
                let mut a = sandbox::args(
                    sb,
                    cwd.as_deref(),
                    &tool.command,
                    vars,
                    &self.hidden.read().unwrap_or_else(PoisonError::into_inner),
                )
                .map_err(|source| PrepareError::Sandbox {
                    tool: tool.name.clone(),
                    source,
                })?;
                a.push(tool.command.clone().into());
                a.extend(args);
                (OsString::from(sandbox::BWRAP), a)
            }
            None => (OsString::from(&tool.command), args),
        };
        let cgroup = self.cgroup(tool)?;
        Ok(Prepared {
            program,
            args,
            env,
            cwd,
            rlimits: self.rlimits(&tool.limits, cgroup.as_deref()),
            cgroup,
            sandboxed: tool.sandbox.is_some(),
        })
    }

    fn cgroup(&self, tool: &ToolConfig) -> Result<Option<Arc<ToolCgroup>>, PrepareError> {
        let Some(cg) = &self.cgroups else {
            return Ok(None);
        };
        let (memory, pids) = (tool.limits.memory, tool.limits.processes);
        if memory.is_none() && pids.is_none() {
            return Ok(None);
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        cg.create(&format!("{}-{n}", tool.name), memory, pids)
            .map(|c| Some(Arc::new(c)))
            .map_err(|source| PrepareError::Cgroup {
                tool: tool.name.clone(),
                source,
            })
    }

    fn rlimits(&self, l: &ToolLimits, cgroup: Option<&ToolCgroup>) -> Rlimits {
        let cg_memory = cgroup.is_some() && self.cgroups.as_ref().is_some_and(Cgroups::has_memory);
        let cg_pids = cgroup.is_some() && self.cgroups.as_ref().is_some_and(Cgroups::has_pids);
        Rlimits {
            cpu_seconds: l.cpu_seconds,
            open_files: l.open_files.map(|n| {
                if self.is_root {
                    n
                } else {
                    n.min(self.nofile_hard)
                }
            }),
            open_files_at_start: self.nofile_at_start,
            data: l.memory.filter(|_| !cg_memory),
            nproc: l.processes.filter(|_| !cg_pids && !self.is_root),
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(cg) = &self.cgroups {
            cgroup::remove_base(cg);
        }
    }
}

/// A secret's value: the file's bytes without a final newline. The value is never logged.
fn read_secret(path: &Path) -> Result<OsString, String> {
    use std::io::Read;
    use std::os::unix::ffi::OsStringExt;
    let file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "does not exist".to_owned(),
        _ => format!("cannot be read ({e})"),
    })?;
    let mut bytes = Vec::new();
    file.take(MAX_SECRET + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot be read ({e})"))?;
    if bytes.len() as u64 > MAX_SECRET {
        return Err(format!("is larger than {MAX_SECRET} bytes"));
    }
    while bytes.last().is_some_and(|b| matches!(b, b'\n' | b'\r')) {
        bytes.pop();
    }
    if bytes.contains(&0) {
        return Err("holds a NUL byte, which an environment value cannot".to_owned());
    }
    Ok(OsString::from_vec(bytes))
}

/// How a confined tool ended, naming the limit that ended it when one did.
pub(crate) fn describe_exit(
    status: &std::process::ExitStatus,
    limits: &ToolLimits,
    cgroup: Option<&ToolCgroup>,
    killed: Option<KillReason>,
    sandboxed: bool,
) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(reason) = killed {
        return reason.describe(limits);
    }
    if cgroup.is_some_and(|c| c.oom_kills() > 0) {
        return KillReason::Memory.describe(limits);
    }
    // bwrap reports a child killed by signal N as status 128 + N.
    let signal = status.signal().or_else(|| {
        status
            .code()
            .filter(|c| sandboxed && (129..160).contains(c))
            .map(|c| c - 128)
    });
    if signal == Some(nix::sys::signal::Signal::SIGXCPU as i32) {
        return KillReason::Cpu.describe(limits);
    }
    if cgroup.is_some_and(|c| c.pids_refusals() > 0) {
        return format!(
            "{} after reaching its process limit ({} processes)",
            crate::child::describe_exit(status),
            limits.processes.unwrap_or_default()
        );
    }
    match (signal, status.signal()) {
        (Some(sig), None) => format!("was killed by signal {sig}"),
        _ => crate::child::describe_exit(status),
    }
}

/// What sandboxes must not see under `config`: the TLS key's folder, the folders of tools'
/// `env_files` (the per-user root for templated ones) and per-user `cwd` roots.
fn hidden_paths(config: &Config) -> Vec<PathBuf> {
    let mut hidden = Vec::new();
    if let Some(tls) = &config.tls {
        hidden.extend(tls.key.parent().map(Path::to_path_buf));
    }
    for t in &config.tools {
        for path in t.env_files.values() {
            let text = path.to_string_lossy();
            match template::users_root(&text) {
                Some(root) => hidden.push(PathBuf::from(root)),
                None => hidden.extend(path.parent().map(Path::to_path_buf)),
            }
        }
        if let Some(root) = t
            .cwd
            .as_ref()
            .and_then(|c| template::users_root(&c.to_string_lossy()))
        {
            hidden.push(PathBuf::from(root));
        }
    }
    hidden.sort();
    hidden.dedup();
    hidden
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(body: &str) -> Config {
        let text = format!("listen = \"127.0.0.1:0\"\n{body}");
        match Config::parse(&text, Path::new("relay.toml")) {
            Ok(loaded) => loaded.config,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn a_reload_hides_the_new_configs_secrets_too_and_keeps_the_old_ones() {
        let first = config(
            "[[tool]]\nname = \"a\"\ncommand = \"/bin/cat\"\n\
             [tool.env_files]\nA_TOKEN = \"/etc/relay/a/token\"\n",
        );
        let host = Host::detect(&first);
        let hidden = || {
            host.hidden
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        };
        assert_eq!(hidden(), [PathBuf::from("/etc/relay/a")]);
        let second = config(
            "[[tool]]\nname = \"b\"\ncommand = \"/bin/cat\"\n\
             [tool.env_files]\nB_TOKEN = \"/srv/secrets/{user}/b\"\n",
        );
        host.hide_also(&second);
        assert_eq!(
            hidden(),
            [PathBuf::from("/etc/relay/a"), PathBuf::from("/srv/secrets")]
        );
    }
}

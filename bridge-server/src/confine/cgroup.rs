//! One cgroup per tool process, under the relay's own: its memory and process limits, and how
//! it ended (killed by the OOM killer, or stopped at its process limit).
//!
//! cgroup v2 is used when the relay's own cgroup delegates the `memory` and `pids` controllers
//! (systemd `Delegate=yes`): the relay moves itself into a `relay` leaf (v2 allows processes
//! only in leaves) and creates `tools/<session>` beside it. On a v1 (or hybrid) host, a
//! `mcp-bridge-<pid>` folder is made under the relay's cgroup in the `memory` and `pids`
//! hierarchies, when those are writable. Otherwise there are no cgroups, and the caller falls
//! back on rlimits.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use tracing::debug;

const ROOT: &str = "/sys/fs/cgroup";

/// The relay's cgroups, found at start-up.
#[derive(Debug, Clone)]
pub(crate) enum Cgroups {
    /// Unified hierarchy: sessions go under `tools`.
    V2 { tools: PathBuf },
    /// Separate hierarchies: sessions go under these folders.
    V1 {
        memory: Option<PathBuf>,
        pids: Option<PathBuf>,
    },
}

impl Cgroups {
    /// Finds cgroups the relay may create children in; `None` (with the reason) if there are
    /// none.
    pub(crate) fn detect() -> Result<Cgroups, String> {
        let own = fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
        let v2_reason = match v2(&own) {
            Ok(c) => return Ok(c),
            Err(why) => why,
        };
        let memory = v1_dir(&own, "memory");
        let pids = v1_dir(&own, "pids");
        if memory.is_none() && pids.is_none() {
            return Err(format!(
                "{v2_reason}; no writable cgroup v1 memory or pids hierarchy either"
            ));
        }
        Ok(Cgroups::V1 { memory, pids })
    }

    /// Whether memory limits are enforced by a cgroup.
    pub(crate) fn has_memory(&self) -> bool {
        matches!(
            self,
            Cgroups::V2 { .. }
                | Cgroups::V1 {
                    memory: Some(_),
                    ..
                }
        )
    }

    /// Whether process limits are enforced by a cgroup.
    pub(crate) fn has_pids(&self) -> bool {
        matches!(self, Cgroups::V2 { .. } | Cgroups::V1 { pids: Some(_), .. })
    }

    /// Creates the cgroup of one tool process, with its limits.
    pub(crate) fn create(
        &self,
        name: &str,
        memory: Option<u64>,
        pids: Option<u64>,
    ) -> io::Result<ToolCgroup> {
        let mut cg = ToolCgroup {
            v2: matches!(self, Cgroups::V2 { .. }),
            memory_dir: None,
            pids_dir: None,
            join: Vec::new(),
        };
        match self {
            Cgroups::V2 { tools } => {
                let dir = make(&tools.join(name))?;
                cg.memory_dir = Some(dir.clone());
                cg.pids_dir = Some(dir);
            }
            Cgroups::V1 { memory: m, pids: p } => {
                if let (Some(m), Some(_)) = (m, memory) {
                    cg.memory_dir = Some(make(&m.join(name))?);
                }
                if let (Some(p), Some(_)) = (p, pids) {
                    cg.pids_dir = Some(make(&p.join(name))?);
                }
            }
        }
        // From here on, `cg` removes what was made if a step fails (Drop).
        if let (Some(dir), Some(bytes)) = (&cg.memory_dir, memory) {
            if cg.v2 {
                write(dir, "memory.max", &bytes.to_string())?;
                // No swap: the limit is the limit.
                let _ = write(dir, "memory.swap.max", "0");
            } else {
                write(dir, "memory.limit_in_bytes", &bytes.to_string())?;
                let _ = write(dir, "memory.memsw.limit_in_bytes", &bytes.to_string());
            }
        }
        if let (Some(dir), Some(n)) = (&cg.pids_dir, pids) {
            write(dir, "pids.max", &n.to_string())?;
        }
        let mut dirs: Vec<PathBuf> = cg.memory_dir.iter().cloned().collect();
        if cg.pids_dir != cg.memory_dir {
            dirs.extend(cg.pids_dir.iter().cloned());
        }
        for dir in dirs {
            let f = OpenOptions::new()
                .write(true)
                .open(dir.join("cgroup.procs"))?;
            cg.join.push(OwnedFd::from(f));
        }
        Ok(cg)
    }
}

/// The cgroup(s) of one tool process. Dropping it kills what is left in it and removes it.
#[derive(Debug)]
pub(crate) struct ToolCgroup {
    v2: bool,
    memory_dir: Option<PathBuf>,
    pids_dir: Option<PathBuf>,
    /// `cgroup.procs` of each folder, opened before the fork, written by the child.
    join: Vec<OwnedFd>,
}

impl ToolCgroup {
    /// File descriptors the child writes `0` to (itself) before exec. Raw, for `pre_exec`.
    pub(crate) fn join_fds(&self) -> Vec<i32> {
        self.join.iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// Times the OOM killer killed a process of this cgroup.
    pub(crate) fn oom_kills(&self) -> u64 {
        let Some(dir) = &self.memory_dir else {
            return 0;
        };
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        counter(&dir.join(file), "oom_kill")
    }

    /// Times a fork was refused because the process limit was reached.
    pub(crate) fn pids_refusals(&self) -> u64 {
        self.pids_dir
            .as_ref()
            .map_or(0, |d| counter(&d.join("pids.events"), "max"))
    }

    /// Ends every process left in the cgroup (helpers the tool started), at once.
    pub(crate) fn kill_all(&self) {
        for dir in [&self.pids_dir, &self.memory_dir].into_iter().flatten() {
            if self.v2 && write(dir, "cgroup.kill", "1").is_ok() {
                continue;
            }
            if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
                for pid in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }
}

impl Drop for ToolCgroup {
    fn drop(&mut self) {
        self.join.clear();
        let mut dirs: Vec<PathBuf> = self.memory_dir.iter().cloned().collect();
        if self.pids_dir != self.memory_dir {
            dirs.extend(self.pids_dir.iter().cloned());
        }
        // A cgroup can be removed only once it is empty: whatever the tool left behind is
        // killed first, and the kernel may take a moment to let go of the dead.
        dirs.retain(|d| !remove(d));
        if dirs.is_empty() {
            return;
        }
        self.kill_all();
        let retry = async move {
            for _ in 0..100 {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                dirs.retain(|d| !remove(d));
                if dirs.is_empty() {
                    return;
                }
            }
            for d in dirs {
                debug!("could not remove cgroup {}", d.display());
            }
        };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(retry);
        }
    }
}

/// Removes an empty cgroup folder; whether it is gone.
fn remove(dir: &Path) -> bool {
    match fs::remove_dir(dir) {
        Ok(()) => true,
        Err(e) => e.kind() == io::ErrorKind::NotFound,
    }
}

/// The relay's own v2 cgroup, if it delegates memory and pids; prepared for children.
fn v2(own: &str) -> Result<Cgroups, String> {
    let rel = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or("no cgroup v2 entry in /proc/self/cgroup")?;
    // A pure v2 host mounts it at /sys/fs/cgroup; a hybrid one at /sys/fs/cgroup/unified.
    let mount = [ROOT.to_owned(), format!("{ROOT}/unified")]
        .into_iter()
        .map(PathBuf::from)
        .find(|m| m.join("cgroup.controllers").exists())
        .ok_or("no cgroup v2 mount")?;
    let dir = mount.join(rel.trim().trim_start_matches('/'));
    let controllers = fs::read_to_string(dir.join("cgroup.controllers"))
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
    if !has("memory") || !has("pids") {
        return Err(format!(
            "the relay's cgroup {} does not delegate the memory and pids controllers (it has: \
             {})",
            dir.display(),
            controllers.trim()
        ));
    }
    // Processes may live only in leaves: move the relay into `relay`, enable the controllers
    // for the children, and put tools under `tools`.
    let setup = || -> io::Result<PathBuf> {
        let relay = make(&dir.join("relay"))?;
        write(&relay, "cgroup.procs", &std::process::id().to_string())?;
        write(&dir, "cgroup.subtree_control", "+memory +pids")?;
        let tools = make(&dir.join("tools"))?;
        write(&tools, "cgroup.subtree_control", "+memory +pids")?;
        Ok(tools)
    };
    setup()
        .map(|tools| Cgroups::V2 { tools })
        .map_err(|e| format!("cannot set up cgroups under {}: {e}", dir.display()))
}

/// `/sys/fs/cgroup/<controller>/<own path>/mcp-bridge-<pid>`, made, if that hierarchy is
/// mounted and writable.
fn v1_dir(own: &str, controller: &str) -> Option<PathBuf> {
    let rel = v1_path(own, controller)?;
    let mount = Path::new(ROOT).join(controller);
    let dir = mount
        .join(rel.trim().trim_start_matches('/'))
        .join(format!("mcp-bridge-{}", std::process::id()));
    make(&dir).ok()
}

/// The relay's path in a v1 hierarchy, from `/proc/self/cgroup` (`4:memory:/a/b`).
fn v1_path<'a>(own: &'a str, controller: &str) -> Option<&'a str> {
    own.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, list, path) = (parts.next()?, parts.next()?, parts.next()?);
        list.split(',').any(|c| c == controller).then_some(path)
    })
}

fn make(dir: &Path) -> io::Result<PathBuf> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(dir.to_owned()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(dir.to_owned()),
        Err(e) => Err(e),
    }
}

fn write(dir: &Path, file: &str, value: &str) -> io::Result<()> {
    File::options()
        .write(true)
        .open(dir.join(file))?
        .write_all(value.as_bytes())
}

/// The number after `key ` in a flat-keyed cgroup file.
fn counter(path: &Path, key: &str) -> u64 {
    fs::read_to_string(path)
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == key).then(|| v.trim().parse().ok()).flatten()
            })
        })
        .unwrap_or(0)
}

/// Removes the relay's own v1 folders (at exit; the sessions' are gone by then).
pub(crate) fn remove_base(cg: &Cgroups) {
    if let Cgroups::V1 { memory, pids } = cg {
        for dir in [memory, pids].into_iter().flatten() {
            let _ = fs::remove_dir(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_by_key() {
        let dir = std::env::temp_dir().join(format!("cg-test-{}", std::process::id()));
        let _ = fs::create_dir(&dir);
        let f = dir.join("memory.events");
        fs::write(&f, "low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n").ok();
        assert_eq!(counter(&f, "oom_kill"), 2);
        assert_eq!(counter(&f, "max"), 3);
        assert_eq!(counter(&f, "absent"), 0);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn v1_paths_come_from_the_relays_own_cgroup() {
        let own = "4:memory:/a/b\n8:pids:/\n3:cpu,cpuacct:/c\n0::/\n";
        assert_eq!(v1_path(own, "memory"), Some("/a/b"));
        assert_eq!(v1_path(own, "pids"), Some("/"));
        assert_eq!(v1_path(own, "cpuacct"), Some("/c"));
        assert_eq!(v1_path(own, "hugetlb"), None);
    }
}

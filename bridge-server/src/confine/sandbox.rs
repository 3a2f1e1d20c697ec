//! A tool in a bubblewrap sandbox (`bwrap`, Debian package `bubblewrap`): new namespaces for
//! everything (no network unless the tool's config allows it), no capabilities, the system
//! folders read-only, a private `/tmp`, and only the tool's `cwd` and `writable` paths
//! writable. Other users' folders and the relay's secrets are not there at all.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::config::Sandbox;

use super::template::{self, ExpandError, Vars};

/// The program that makes the sandbox.
pub(crate) const BWRAP: &str = "bwrap";

/// System folders shown read-only (when they exist; symlinks such as `/bin -> usr/bin` are
/// recreated as symlinks).
const SYSTEM: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt",
];

/// Why a sandbox could not be set up for a session.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A per-user value could not be filled in.
    #[error(transparent)]
    Expand(#[from] ExpandError),
    /// A path to show in the sandbox is not there.
    #[error("the sandbox path {0} does not exist: create it, or fix the tool's [tool.sandbox]")]
    Missing(PathBuf),
}

/// The `bwrap` arguments (up to and including `--`) for one session of a tool. `hidden` are
/// paths to cover with an empty folder (the relay's secrets, every user's folders).
pub(crate) fn args(
    sandbox: &Sandbox,
    cwd: Option<&Path>,
    program: &str,
    vars: Vars<'_>,
    hidden: &[PathBuf],
) -> Result<Vec<OsString>, SandboxError> {
    let mut a = Args::default();
    a.flags(sandbox.network);
    a.system();
    for ro in &sandbox.read_only {
        let p = PathBuf::from(template::expand(ro, vars)?);
        if !p.exists() {
            return Err(SandboxError::Missing(p));
        }
        a.push3("--ro-bind", &p, &p);
    }
    // A program given by path outside the system folders is shown read-only.
    if program.starts_with('/') {
        if let Some(dir) = Path::new(program).parent() {
            if !SYSTEM.iter().any(|s| dir.starts_with(s)) && dir.exists() {
                a.push3("--ro-bind", dir, dir);
            }
        }
    }
    // Hidden paths go over the read-only ones and under the writable ones.
    for h in hidden {
        let shown = a.binds.iter().any(|b| h.starts_with(b));
        if shown && h.is_dir() {
            a.push2("--tmpfs", h);
        }
    }
    for h in &sandbox.hide {
        let p = PathBuf::from(template::expand(h, vars)?);
        a.push2("--tmpfs", &p);
    }
    let mut writable: Vec<PathBuf> = cwd.map(Path::to_path_buf).into_iter().collect();
    for w in &sandbox.writable {
        writable.push(PathBuf::from(template::expand(w, vars)?));
    }
    for w in &writable {
        if !w.exists() {
            return Err(SandboxError::Missing(w.clone()));
        }
        a.push3("--bind", w, w);
    }
    if let Some(cwd) = cwd {
        a.push2("--chdir", cwd);
    }
    a.out.push("--".into());
    Ok(a.out)
}

/// Checks that a sandbox can be made on this host, by making one around `true`. The error
/// says what to install or allow.
pub(crate) fn preflight(network: bool) -> Result<(), String> {
    let mut a = Args::default();
    a.flags(network);
    a.system();
    a.out.push("--".into());
    let truth = ["/usr/bin/true", "/bin/true"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("true");
    a.out.push(truth.into());
    // Found on the relay's PATH, as the tools' bwrap will be.
    let mut cmd = std::process::Command::new(BWRAP);
    cmd.args(&a.out).env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "`bwrap` could not make a sandbox ({}): {}; allow user namespaces (sysctl \
             kernel.unprivileged_userns_clone=1) or run the relay where bwrap works",
            crate::child::describe_exit(&o.status),
            shared::log_safe(String::from_utf8_lossy(&o.stderr).trim())
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(
            "`bwrap` is not installed: install the `bubblewrap` package (apt-get install \
             bubblewrap)"
                .to_owned(),
        ),
        Err(e) => Err(format!("cannot run `bwrap`: {e}")),
    }
}

#[derive(Default)]
struct Args {
    out: Vec<OsString>,
    /// Folders shown from the host (to know which hidden paths need covering).
    binds: Vec<PathBuf>,
}

impl Args {
    fn flags(&mut self, network: bool) {
        for f in ["--die-with-parent", "--unshare-all", "--cap-drop", "ALL"] {
            self.out.push(f.into());
        }
        if network {
            self.out.push("--share-net".into());
        }
        for (flag, path) in [("--proc", "/proc"), ("--dev", "/dev"), ("--tmpfs", "/tmp")] {
            self.push2(flag, Path::new(path));
        }
    }

    fn system(&mut self) {
        for dir in SYSTEM {
            let path = Path::new(dir);
            match std::fs::read_link(path) {
                Ok(target) => self.push3("--symlink", &target, path),
                Err(_) if path.is_dir() => self.push3("--ro-bind", path, path),
                Err(_) => {}
            }
        }
    }

    fn push2(&mut self, flag: &str, p: &Path) {
        self.out.push(flag.into());
        self.out.push(p.into());
    }

    fn push3(&mut self, flag: &str, from: &Path, to: &Path) {
        if flag.ends_with("bind") {
            self.binds.push(to.to_owned());
        }
        self.out.push(flag.into());
        self.out.push(from.into());
        self.out.push(to.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[OsString]) -> Vec<String> {
        v.iter().map(|s| s.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn only_the_users_folder_is_writable_and_the_network_is_off() {
        let dir = std::env::temp_dir().join(format!("sb-{}", std::process::id()));
        let alice = dir.join("alice");
        std::fs::create_dir_all(&alice).ok();
        let sb = Sandbox::default();
        let vars = Vars {
            user: "alice",
            tool: "t",
        };
        let a = strings(&args(&sb, Some(&alice), "node", vars, &[]).expect("args"));
        let joined = a.join(" ");
        assert!(joined.contains("--unshare-all"));
        assert!(!joined.contains("--share-net"));
        let rw: Vec<_> = a
            .windows(2)
            .filter(|w| w[0] == "--bind")
            .map(|w| w[1].clone())
            .collect();
        assert_eq!(rw, [alice.to_string_lossy().into_owned()]);
        assert!(joined.contains("--tmpfs /tmp"));
        assert_eq!(a.last().map(String::as_str), Some("--"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn network_on_request_and_missing_paths_refused() {
        let sb = Sandbox {
            network: true,
            writable: vec!["/nonexistent/{user}".into()],
            ..Sandbox::default()
        };
        let vars = Vars {
            user: "bob",
            tool: "t",
        };
        match args(&sb, None, "node", vars, &[]) {
            Err(SandboxError::Missing(p)) => assert_eq!(p, Path::new("/nonexistent/bob")),
            other => panic!("{other:?}"),
        }
        let sb = Sandbox {
            network: true,
            ..Sandbox::default()
        };
        let a = strings(&args(&sb, None, "node", vars, &[]).expect("args"));
        assert!(a.iter().any(|s| s == "--share-net"));
    }
}

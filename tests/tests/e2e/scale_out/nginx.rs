//! The nginx harness: a real nginx on a free loopback port running the committed
//! `deploy/nginx/nginx.conf`, with only its `# @render` lines filled in. Not the relays behind
//! it (the tests start those).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use mcp_bridge_tests::{
    alive, children_of, http_get, repo_root, signal, terminate_and_reap, wait_until, Log, TempDir,
};

use super::T;

/// The committed load-balancer config that these tests run.
pub(super) const NGINX_CONF: &str = "deploy/nginx/nginx.conf";

/// How to get nginx; named in the failure when it is missing.
const NGINX_SETUP: &str =
    "`.ci/run` installs it; by hand: `apt-get install nginx` (Debian/Ubuntu), \
     or set NGINX=/path/to/nginx";

/// The nginx binary: `$NGINX`, else `nginx` on PATH, else /usr/sbin/nginx. Fails the test
/// (never skips it) when there is none.
fn nginx_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("NGINX") {
        let p = PathBuf::from(p);
        assert!(
            p.exists(),
            "NGINX={} does not exist; {NGINX_SETUP}",
            p.display()
        );
        return p;
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("nginx"))
                .find(|p| p.is_file())
        })
        .unwrap_or_default();
    let found = on_path.or_else(|| {
        [
            "/usr/sbin/nginx",
            "/usr/local/sbin/nginx",
            "/usr/local/nginx/sbin/nginx",
        ]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
    });
    match found {
        Some(p) => p,
        None => panic!(
            "nginx is not installed, and these tests run the committed {NGINX_CONF} in a real \
             nginx: {NGINX_SETUP}"
        ),
    }
}

/// Fills in the `# @render` lines of the committed config: the relay nodes (`# @render node N`
/// is `nodes[N - 1]`), the listen address, and every file path inside `dir`. Every other line
/// is kept as it is.
pub(super) fn render_nginx_conf(
    template: &str,
    dir: &Path,
    listen: SocketAddr,
    nodes: &[SocketAddr],
) -> Result<String> {
    let mut out = String::new();
    let mut used = vec![false; nodes.len()];
    for line in template.lines() {
        let marked = line.split_once("# @render");
        let Some((code, tag)) = marked.filter(|_| !line.trim_start().starts_with('#')) else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let code = code.trim_end();
        let indent = &code[..code.len() - code.trim_start().len()];
        let tokens: Vec<&str> = code.split_whitespace().collect();
        ensure!(tokens.len() >= 2, "marked line has no value: {line:?}");
        let directive = tokens[0];
        let path = |name: &str| dir.join(name).display().to_string();
        let value = match directive {
            "pid" => path("nginx.pid"),
            "error_log" => "stderr".to_owned(),
            "access_log" => path("access.log"),
            "client_body_temp_path" => path("body"),
            "proxy_temp_path" => path("proxy"),
            "fastcgi_temp_path" => path("fastcgi"),
            "uwsgi_temp_path" => path("uwsgi"),
            "scgi_temp_path" => path("scgi"),
            "listen" => listen.to_string(),
            "server" => {
                let n: usize = tag
                    .trim()
                    .strip_prefix("node ")
                    .and_then(|n| n.trim().parse().ok())
                    .with_context(|| {
                        format!("a server line without `# @render node N`: {line:?}")
                    })?;
                let node = n
                    .checked_sub(1)
                    .and_then(|i| nodes.get(i))
                    .with_context(|| {
                        format!(
                            "{NGINX_CONF} names relay node {n}; the test started {}",
                            nodes.len()
                        )
                    })?;
                used[n - 1] = true;
                node.to_string()
            }
            other => bail!("{NGINX_CONF}: the test does not know how to render `{other}`"),
        };
        // Keep the rest of the directive (a log format, server parameters, the level).
        let mut rest: Vec<String> = tokens[2..].iter().map(|s| (*s).to_owned()).collect();
        let mut value = value;
        if tokens[1].ends_with(';') {
            value.push(';');
        }
        if directive == "error_log" {
            // Down to "notice": nginx's start-up lines too (next-upstream decisions are "warn",
            // failed connections "error"); shown when a test fails.
            rest = vec!["notice;".to_owned()];
        }
        let mut rendered = format!("{indent}{directive} {value}");
        for r in rest {
            rendered.push(' ');
            rendered.push_str(&r);
        }
        out.push_str(&rendered);
        out.push('\n');
    }
    ensure!(
        used.iter().all(|u| *u),
        "{NGINX_CONF} names fewer relay nodes than the test started ({})",
        nodes.len()
    );
    Ok(out)
}

/// A real nginx on a free loopback port, running the committed config in front of `nodes`.
/// Stopped (and its workers reaped) on drop.
pub(super) struct Nginx {
    child: Option<Child>,
    pub(super) addr: SocketAddr,
    stderr: Log,
    dir: TempDir,
}

impl Nginx {
    pub(super) fn start(nodes: &[SocketAddr]) -> Result<Nginx> {
        let exe = nginx_binary();
        let template = std::fs::read_to_string(repo_root().join(NGINX_CONF))
            .with_context(|| format!("reading {NGINX_CONF}"))?;
        let mut last_err = None;
        // A free port is found by binding port 0 and closing it; another process may take it
        // before nginx binds it, so try a few times.
        for _ in 0..3 {
            match Nginx::try_start(&exe, &template, nodes) {
                Ok(n) => return Ok(n),
                Err(e) if format!("{e:#}").contains("Address already in use") => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap())
    }

    fn try_start(exe: &Path, template: &str, nodes: &[SocketAddr]) -> Result<Nginx> {
        let dir = TempDir::new();
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, render_nginx_conf(template, dir.path(), addr, nodes)?)?;
        let prefix = format!("{}/", dir.path().display());
        let args = |cmd: &mut Command| {
            cmd.arg("-p").arg(&prefix).arg("-c").arg(&conf).args([
                "-e",
                "stderr",
                "-g",
                "daemon off;",
            ]);
        };
        // `nginx -t` first: a config error is reported as such, with nginx's own words.
        let mut check = Command::new(exe);
        args(&mut check);
        let out = check
            .arg("-t")
            .output()
            .with_context(|| format!("running {} -t", exe.display()))?;
        ensure!(
            out.status.success(),
            "nginx -t rejected the rendered {NGINX_CONF} ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let mut cmd = Command::new(exe);
        args(&mut cmd);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let stderr = Log::default();
        stderr.drain_from(child.stderr.take().context("stderr")?, "nginx");
        let mut nginx = Nginx {
            child: Some(child),
            addr,
            stderr,
            dir,
        };
        // Ready when /healthz answers through nginx (from one of the relays).
        let deadline = Instant::now() + T;
        loop {
            if let Some(status) = nginx.child.as_mut().unwrap().try_wait()? {
                nginx.child = None;
                bail!("nginx exited at start ({status}):\n{}", nginx.stderr.text());
            }
            if matches!(http_get(addr, "/healthz"), Ok((200, _))) {
                return Ok(nginx);
            }
            if Instant::now() >= deadline {
                bail!(
                    "nginx did not answer /healthz within {T:?}:\n{}",
                    nginx.stderr.text()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub(super) fn url(&self, tool: &str) -> String {
        format!("ws://{}/mcp/{tool}", self.addr)
    }

    /// The access log: one line per finished request (a WebSocket is logged when it closes).
    pub(super) fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// Access-log lines of WebSocket sessions (status 101).
    fn websocket_lines(&self) -> Vec<String> {
        self.access_log()
            .lines()
            .filter(|l| l.contains("\"GET /mcp/") && l.contains(" 101 "))
            .map(str::to_owned)
            .collect()
    }

    /// Waits until the access log shows at least `n` WebSocket sessions (each is logged when it
    /// closes); returns their lines.
    pub(super) fn wait_websocket_lines(&self, n: usize) -> Result<Vec<String>> {
        wait_until(T, || self.websocket_lines().len() >= n)
            .with_context(|| format!("access log:\n{}", self.access_log()))?;
        Ok(self.websocket_lines())
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let workers: Vec<u32> = children_of(child.id()).iter().map(|c| c.0).collect();
        // TERM: fast shutdown (closes the WebSockets, workers exit, then the master).
        let _ = terminate_and_reap(&mut child, Duration::from_secs(5));
        for w in workers {
            if alive(w) {
                signal(w, "KILL");
            }
        }
        if std::thread::panicking() {
            eprintln!("nginx stderr:\n{}", self.stderr.text());
            eprintln!("nginx access log:\n{}", self.access_log());
        }
    }
}

//! A real Prometheus (the Debian package's `prometheus` binary) on a free loopback port: a
//! generated config that scrapes given targets every second, a temporary storage folder, its
//! HTTP query API, and `promtool`. Ended by its PID when dropped. Not the relays it scrapes
//! (relay.rs), nor what the queries mean (the tests).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::paths::TempDir;
use crate::process::{terminate_and_reap, wait_until, Log};

/// The scrape interval (and evaluation interval) of the generated config.
pub const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);

/// What to install when the binaries are missing.
const INSTALL: &str = "install the Debian package `prometheus` (`apt-get install prometheus`; \
                       scripts/test.sh does it)";

/// A `prometheus` or `promtool` binary: on `PATH`, else where the Debian package puts it.
pub fn prometheus_bin(name: &str) -> Result<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    on_path
        .or_else(|| Some(PathBuf::from("/usr/bin").join(name)).filter(|p| p.is_file()))
        .with_context(|| format!("`{name}` not found: {INSTALL}"))
}

/// Runs `promtool ARGS` and returns its output (status not checked).
pub fn promtool(args: &[&str]) -> Result<Output> {
    Command::new(prometheus_bin("promtool")?)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running promtool")
}

/// A running Prometheus.
pub struct Prometheus {
    child: Option<Child>,
    /// Where its HTTP API listens.
    pub addr: SocketAddr,
    /// Its stderr (Prometheus logs there).
    pub log: Log,
    _dir: TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (`/metrics` over plain HTTP) as job `job`, every
    /// [`SCRAPE_INTERVAL`], evaluating the rule file `rules` (if any) as often, and waits until
    /// it is ready. The port is picked free by binding 127.0.0.1:0 and released for
    /// Prometheus; should another process take it in between, it tries again (three times).
    pub fn start(job: &str, targets: &[SocketAddr], rules: Option<&Path>) -> Result<Prometheus> {
        let mut last = None;
        for _ in 0..3 {
            match Prometheus::try_start(job, targets, rules) {
                Ok(p) => return Ok(p),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("prometheus did not start")))
    }

    fn try_start(job: &str, targets: &[SocketAddr], rules: Option<&Path>) -> Result<Prometheus> {
        let bin = prometheus_bin("prometheus")?;
        let dir = TempDir::new();
        let config = dir.path().join("prometheus.yml");
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let interval = format!("{}s", SCRAPE_INTERVAL.as_secs());
        let rule_files = rules.map_or(String::new(), |r| {
            format!("rule_files:\n  - '{}'\n", r.display())
        });
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: {interval}\n  scrape_timeout: {interval}\n  \
                 evaluation_interval: {interval}\n{rule_files}scrape_configs:\n  - job_name: \
                 '{job}'\n    metrics_path: /metrics\n    static_configs:\n      - targets: \
                 [{}]\n",
                targets.join(", ")
            ),
        )?;
        let addr = {
            let l = TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?
        };
        let mut child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--storage.tsdb.retention.time=1h")
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting prometheus")?;
        let log = Log::default();
        log.drain_from(child.stderr.take().context("stderr")?, "prometheus");
        let mut p = Prometheus {
            child: Some(child),
            addr,
            log,
            _dir: dir,
        };
        let ready = wait_until(Duration::from_secs(20), || {
            p.get("/-/ready").is_ok_and(|(status, _)| status == 200) || p.exited()
        });
        if ready.is_err() || p.exited() {
            bail!("prometheus did not become ready:\n{}", p.log.text());
        }
        Ok(p)
    }

    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| c.try_wait().ok().flatten().is_some())
    }

    /// A GET on the HTTP API: (status, body).
    pub fn get(&self, path_and_query: &str) -> Result<(u16, String)> {
        crate::http_get(self.addr, path_and_query)
    }

    /// Runs an instant query (`/api/v1/query`); the whole answer, or an error carrying
    /// Prometheus's `errorType` and `error` when its status is not `success`.
    pub fn query(&self, expr: &str) -> Result<Value> {
        let (status, body) = self.get(&format!("/api/v1/query?query={}", encode(expr)))?;
        let v: Value = serde_json::from_str(&body)
            .with_context(|| format!("HTTP {status}, not JSON: {body}"))?;
        if v["status"] != "success" {
            bail!(
                "HTTP {status}: {} {}",
                v["errorType"].as_str().unwrap_or("?"),
                v["error"].as_str().unwrap_or(&body)
            );
        }
        Ok(v)
    }

    /// The rules Prometheus evaluates (`/api/v1/rules`: `data.groups[].rules[]`).
    pub fn rules(&self) -> Result<Vec<Value>> {
        let (status, body) = self.get("/api/v1/rules")?;
        let v: Value = serde_json::from_str(&body)
            .with_context(|| format!("HTTP {status}, not JSON: {body}"))?;
        Ok(v["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect())
    }

    /// The series an instant query returns (`data.result`; a scalar or string counts as one).
    pub fn series(&self, expr: &str) -> Result<Vec<Value>> {
        let v = self.query(expr)?;
        Ok(match &v["data"]["result"] {
            Value::Array(a) => a.clone(),
            Value::Null => Vec::new(),
            other => vec![other.clone()],
        })
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = terminate_and_reap(&mut c, Duration::from_secs(10));
        }
    }
}

/// Percent-encodes a query parameter (everything but RFC 3986's unreserved characters).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(
            super::encode(r#"sum by (le) (x{a=~"b|c"}[30s])"#),
            "sum%20by%20%28le%29%20%28x%7Ba%3D~%22b%7Cc%22%7D%5B30s%5D%29"
        );
    }
}

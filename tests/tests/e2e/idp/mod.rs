//! The relay as an OAuth resource server against a real identity provider: oidc-provider
//! (tests/peers/idp_server.mjs) over HTTPS with a test CA, issuing JWT access tokens. The
//! relay finds its keys from the issuer alone (discovery), maps scopes to tools, and answers
//! 401/403 with RFC 9728 challenges; bridge-client signs in knowing only the relay's URL (the
//! test CA is trusted machine-wide, through `SSL_CERT_FILE`, as a user's system would).

#![allow(clippy::print_stdout)]

mod rejections;
mod signin;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use mcp_bridge_tests::pki::Pki;
use mcp_bridge_tests::{bin, demo_tool, fixture_tool, relay_config, Peers, Relay, TempDir};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(60);

/// The identity provider, killed on drop (or by [`Idp::kill`]: the provider going down).
pub(crate) struct Idp {
    child: Child,
    issuer: String,
    admin: String,
    pki: Pki,
    /// Lock files, and the stand-in browser's log (one line per sign-in).
    dir: TempDir,
}

impl Idp {
    pub(crate) fn start() -> Result<Idp> {
        Idp::start_with(&[])
    }

    /// The provider with extra arguments (`--scopes "a b"`: the scopes it grants).
    pub(crate) fn start_with(args: &[&str]) -> Result<Idp> {
        let peers = Peers::require();
        let pki = Pki::new()?;
        let mut child = Command::new("node")
            .arg(peers.script("idp_server.mjs"))
            .args([
                "--cert",
                &pki.path("server.pem"),
                "--key",
                &pki.path("server.key"),
            ])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("node")?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("idp_server.mjs did not start within 20 s");
        };
        let v: Value = serde_json::from_str(&line).with_context(|| format!("{line:?}"))?;
        let s = |k: &str| v[k].as_str().map(str::to_owned).context("field");
        Ok(Idp {
            issuer: s("issuer")?,
            admin: s("admin_url")?,
            child,
            pki,
            dir: TempDir::new(),
        })
    }

    /// The provider goes away (connections to it are refused from now on).
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub(crate) fn ca(&self) -> String {
        self.pki.path("ca.pem")
    }

    /// A relay taking this provider's tokens: tools `demo` (the demo tool) and `time` (the
    /// test fixture, whose `env` tool shows its environment), granted by scopes `mcp:demo` and
    /// `mcp:time`.
    pub(crate) fn relay(&self) -> Result<Relay> {
        let relay = self.relay_unchecked()?;
        relay
            .log
            .wait_for("signing keys fetched from the identity provider", T)?;
        Ok(relay)
    }

    /// [`Idp::relay`], without waiting for its first key fetch.
    pub(crate) fn relay_unchecked(&self) -> Result<Relay> {
        let auth = format!(
            r#"[auth]
mode = "jwt"
[auth.jwt]
issuer = "{}"
ca_file = "{}"
jwks_min_refetch_s = 0
[auth.jwt.scopes]
"mcp:demo" = ["demo"]
"mcp:time" = ["time"]
"#,
            self.issuer,
            self.ca()
        );
        let tools = [demo_tool("demo", ""), fixture_tool("time", &[], "")].join("\n");
        Relay::start_config(&relay_config("", &format!("{auth}\n{tools}")), &[])
    }

    fn browser_log(&self) -> std::path::PathBuf {
        self.dir.path().join("browser.log")
    }

    /// How many times the stand-in browser ran.
    pub(crate) fn sign_ins(&self) -> usize {
        std::fs::read_to_string(self.browser_log())
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    /// `bridge-client ARGS` with the stand-in browser, trusting the test CA as the machine does
    /// (nothing but the URL on bridge-client's command line).
    pub(crate) fn client(&self, args: &[&str]) -> Command {
        let peers = Peers::require();
        let browser = format!(
            "{} {}",
            peers.python.display(),
            peers.script("oauth_browser.py").display()
        );
        let mut cmd = Command::new(bin("bridge-client"));
        cmd.args(args)
            .env("BROWSER", browser)
            .env("OAUTH_BROWSER_LOG", self.browser_log())
            .env("XDG_RUNTIME_DIR", self.dir.path())
            .env("SSL_CERT_FILE", self.ca())
            .env_remove("MCP_BRIDGE_TOKEN");
        cmd
    }

    /// Forgets the sign-in stored for `url` (the keyring is the user's own).
    pub(crate) fn logout(&self, url: &str) {
        let _ = self
            .client(&["logout", url])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    fn admin_call(&self, method: &str, path: &str, body: &str) -> Result<Value> {
        let url = format!("{}{path}", self.admin);
        let rest = url.strip_prefix("http://").context("http")?;
        let (host, target) = rest.split_at(rest.find('/').context("path")?);
        let mut s = TcpStream::connect(host)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "{method} {target} HTTP/1.0\r\nHost: {host}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        let mut resp = String::new();
        s.read_to_string(&mut resp)?;
        let body = resp.split("\r\n\r\n").nth(1).context("body")?;
        Ok(serde_json::from_str(body)?)
    }

    /// A JWT signed by the provider's current key (or, `rogue`, by a key it never publishes),
    /// with `claims` over the defaults (a `null` removes one).
    pub(crate) fn mint(&self, claims: Value, rogue: bool) -> Result<String> {
        let v = self.admin_call(
            "POST",
            "/mint",
            &json!({"claims": claims, "rogue": rogue}).to_string(),
        )?;
        v["token"].as_str().map(str::to_owned).context("token")
    }

    /// The provider rotates its signing key; returns the new `kid`.
    pub(crate) fn rotate(&self) -> Result<String> {
        let v = self.admin_call("POST", "/rotate", "")?;
        ensure!(v["keys"].as_u64() >= Some(2), "{v}");
        v["kid"].as_str().map(str::to_owned).context("kid")
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The sum of a relay metric over its labels.
pub(crate) fn metric(relay: &Relay, name: &str) -> Result<f64> {
    Ok(relay
        .metrics()?
        .iter()
        .filter(|(k, _)| k.split('{').next() == Some(name))
        .map(|(_, v)| v)
        .sum())
}

/// The tool's environment variable `name`, through the fixture's `env` tool.
pub(crate) fn tool_env(ide: &mut mcp_bridge_tests::Ide, id: u64, name: &str) -> Result<String> {
    let r = ide.request(
        json!(id),
        "tools/call",
        json!({"name": "env", "arguments": {"name": name}}),
    )?;
    r.pointer("/result/content/0/text")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .with_context(|| format!("{r}"))
}

/// The principal as the tool sees it, and no credential in its environment.
pub(crate) fn check_principal(
    ide: &mut mcp_bridge_tests::Ide,
    user: &str,
    groups: &str,
) -> Result<()> {
    ensure!(tool_env(ide, 101, "MCP_BRIDGE_USER")? == user);
    ensure!(tool_env(ide, 102, "MCP_BRIDGE_GROUPS")? == groups);
    for var in ["MCP_BRIDGE_TOKEN", "AUTHORIZATION", "HTTP_AUTHORIZATION"] {
        ensure!(
            tool_env(ide, 103, var)?.is_empty(),
            "{var} reached the tool"
        );
    }
    Ok(())
}

/// The payload of a JWT, for checks on what the provider issued.
pub(crate) fn jwt_claims(token: &str) -> Result<Value> {
    use base64::Engine;
    let part = token.split('.').nth(1).context("a JWT")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part)?;
    Ok(serde_json::from_slice(&bytes)?)
}

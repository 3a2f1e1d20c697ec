//! The relay as an OAuth resource server against a real identity provider: oidc-provider
//! (tests/peers/idp_server.mjs) over HTTPS with a test CA, issuing JWT access tokens. The
//! relay finds its keys from the issuer alone (discovery), maps scopes to tools, and answers
//! 401/403 with RFC 9728 challenges; bridge-client signs in knowing only the relay's URL (the
//! test CA is trusted machine-wide, through `SSL_CERT_FILE`, as a user's system would).

#![allow(clippy::print_stdout)]

mod rejections;
mod signin;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use mcp_bridge_tests::http_raw::raw_url;
use mcp_bridge_tests::pki::Pki;
use mcp_bridge_tests::{
    browser_runs, demo_tool, fixture_tool, relay_config, signin_client, start_announcing, Peers,
    Relay, TempDir,
};
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
        let (child, v) = start_announcing(
            Command::new("node")
                .arg(peers.script("idp_server.mjs"))
                .args([
                    "--cert",
                    &pki.path("server.pem"),
                    "--key",
                    &pki.path("server.key"),
                ])
                .args(args),
            "idp_server.mjs",
        )?;
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

    /// How many times the stand-in browser ran.
    pub(crate) fn sign_ins(&self) -> usize {
        browser_runs(self.dir.path())
    }

    /// `bridge-client ARGS` with the stand-in browser, trusting the test CA as the machine does
    /// (nothing but the URL on bridge-client's command line).
    pub(crate) fn client(&self, args: &[&str]) -> Command {
        let mut cmd = signin_client(self.dir.path(), args);
        cmd.env("SSL_CERT_FILE", self.ca());
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
        let resp = raw_url(method, &format!("{}{path}", self.admin), body)?;
        Ok(serde_json::from_str(&resp.body)?)
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

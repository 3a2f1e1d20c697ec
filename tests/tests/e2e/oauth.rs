//! OAuth 2.1 sign-in against a real authorization server: oidc-provider (pinned in
//! tests/peers/package.json) with PKCE, dynamic registration, refresh tokens and resource
//! indicators, in front of a protected test resource (tests/peers/oauth_server.mjs); the
//! "browser" is tests/peers/oauth_browser.py, which fills the provider's login and consent
//! forms. Tokens land in the real user keyring (keyutils) and are read back here.

use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use mcp_bridge_tests::http_raw::raw_url;
use mcp_bridge_tests::{browser_runs, signin_client, start_announcing, wait_child, Peers, TempDir};
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

/// The authorization server and the protected resource, killed on drop.
pub(crate) struct OAuthPeer {
    child: Child,
    issuer: String,
    pub(crate) mcp_url: String,
    admin_url: String,
    /// Lock files, and the stand-in browser's log (one line per sign-in).
    dir: TempDir,
}

impl OAuthPeer {
    pub(crate) fn start(args: &[&str]) -> Result<OAuthPeer> {
        let peers = Peers::require();
        let module = peers.node_modules.join("oidc-provider");
        ensure!(
            module.exists(),
            "oidc-provider is missing: run scripts/install-peers.sh"
        );
        let (child, v) = start_announcing(
            Command::new("node")
                .arg(peers.script("oauth_server.mjs"))
                .args(args),
            "oauth_server.mjs",
        )?;
        let s = |k: &str| v[k].as_str().map(str::to_owned).context("field");
        Ok(OAuthPeer {
            issuer: s("issuer")?,
            mcp_url: s("mcp_url")?,
            admin_url: s("admin_url")?,
            child,
            dir: TempDir::new(),
        })
    }

    /// How many times the stand-in browser ran.
    pub(crate) fn sign_ins(&self) -> usize {
        browser_runs(self.dir.path())
    }

    /// `bridge-client ARGS` with the stand-in browser as `$BROWSER`.
    pub(crate) fn command(&self, args: &[&str]) -> Command {
        signin_client(self.dir.path(), args)
    }

    /// `bridge-client ARGS` with the stand-in browser, not yet waited for.
    fn client(&self, args: &[&str]) -> Result<Child> {
        Ok(self
            .command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?)
    }

    fn run(&self, args: &[&str]) -> Result<Output> {
        let mut child = self.client(args)?;
        wait_child(&mut child, T)?;
        Ok(child.wait_with_output()?)
    }

    pub(crate) fn login(&self) -> Result<Output> {
        self.run(&["login", &self.mcp_url, "--oauth-timeout", "30"])
    }

    /// The stored sign-in, read back from the keyring.
    pub(crate) fn stored(&self) -> Result<Option<Value>> {
        let key = format!("oauth:{} {}", self.issuer, self.mcp_url);
        let raw = bridge_client::credentials::load(&key)?;
        raw.map(|s| serde_json::from_str(s.expose()).context("record"))
            .transpose()
    }

    pub(crate) fn admin(&self, method: &str, path: &str) -> Result<Value> {
        let resp = raw_url(method, &format!("{}{path}", self.admin_url), "")?;
        Ok(serde_json::from_str(&resp.body)?)
    }
}

impl Drop for OAuthPeer {
    fn drop(&mut self) {
        let _ = self.run(&["logout", &self.mcp_url.clone()]);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn said(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// No token of `record` appears in any of `logs`.
pub(crate) fn no_tokens(record: &Value, logs: &[&str]) -> Result<()> {
    for k in ["access_token", "refresh_token"] {
        if let Some(t) = record[k].as_str() {
            for l in logs {
                ensure!(!l.contains(t), "a {k} leaked to stderr: {l}");
            }
        }
    }
    Ok(())
}

#[test]
fn login_signs_in_through_the_browser_and_logout_forgets() -> Result<()> {
    let p = OAuthPeer::start(&[])?;
    let out = p.login()?;
    let log1 = said(&out);
    ensure!(out.status.success(), "login: {log1}");
    ensure!(
        log1.contains("signed in to") && log1.contains("keyutils"),
        "{log1}"
    );
    ensure!(
        log1.contains("code_challenge_method=S256") && log1.contains("resource="),
        "{log1}"
    );
    ensure!(p.sign_ins() == 1, "browser runs: {}", p.sign_ins());
    let rec = p
        .stored()?
        .context("no record in the keyring after login")?;
    ensure!(rec["issuer"] == p.issuer.as_str() && rec["resource"] == p.mcp_url.as_str());
    ensure!(rec["refresh_token"].is_string() && rec["client"]["registered"] == true);

    let out = p.run(&["login", "--check", &p.mcp_url])?;
    let log2 = said(&out);
    ensure!(
        out.status.success() && log2.contains("accepted the token"),
        "{log2}"
    );
    ensure!(log2.contains("signed in 0 time(s)"), "{log2}");
    no_tokens(&rec, &[&log1, &log2])?;

    let out = p.run(&["logout", &p.mcp_url])?;
    ensure!(
        out.status.success() && said(&out).contains("signed out"),
        "{}",
        said(&out)
    );
    ensure!(p.stored()?.is_none(), "tokens still stored after logout");
    let out = p.run(&["logout", &p.mcp_url])?;
    ensure!(said(&out).contains("no token was stored"), "{}", said(&out));
    Ok(())
}

/// The HTTP status the protected resource gives a `tools/list` with `token`.
fn resource_status(p: &OAuthPeer, token: &str) -> Result<u16> {
    let rest = p.mcp_url.strip_prefix("http://").context("http")?;
    let (host, path) = rest.split_at(rest.find('/').context("path")?);
    let bearer = format!("Bearer {token}");
    let r = mcp_bridge_tests::http_raw::raw(
        host.parse()?,
        "POST",
        path,
        &[
            ("Authorization", &bearer),
            ("Content-Type", "application/json"),
            ("Accept", "application/json, text/event-stream"),
        ],
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
    )?;
    Ok(r.status)
}

#[test]
fn logout_revokes_the_tokens_at_the_authorization_server() -> Result<()> {
    let p = OAuthPeer::start(&[])?;
    let out = p.login()?;
    ensure!(out.status.success(), "login: {}", said(&out));
    let rec = p.stored()?.context("no record after login")?;
    let access = rec["access_token"]
        .as_str()
        .context("access token")?
        .to_owned();
    ensure!(
        resource_status(&p, &access)? == 200,
        "the fresh token is refused"
    );
    let out = p.run(&["logout", &p.mcp_url])?;
    let log = said(&out);
    ensure!(out.status.success(), "logout: {log}");
    ensure!(
        log.contains(&format!("revoked at {}/token/revocation", p.issuer)),
        "{log}"
    );
    no_tokens(&rec, &[&log])?;
    ensure!(p.stored()?.is_none(), "tokens still stored after logout");
    // The server no longer accepts the access token: the grant ended with the refresh token.
    ensure!(
        resource_status(&p, &access)? == 401,
        "the access token still works after logout"
    );
    let stats = p.admin("GET", "/stats")?;
    ensure!(stats["revocations"] == 2, "{stats}");
    Ok(())
}

#[test]
fn three_logins_at_once_make_one_sign_in() -> Result<()> {
    let p = OAuthPeer::start(&[])?;
    let url = p.mcp_url.clone();
    let mut children = Vec::new();
    for _ in 0..3 {
        children.push(p.client(&["login", &url, "--oauth-timeout", "30"])?);
    }
    let mut logs = Vec::new();
    for mut c in children {
        wait_child(&mut c, T)?;
        let out = c.wait_with_output()?;
        ensure!(out.status.success(), "login: {}", said(&out));
        logs.push(said(&out));
    }
    ensure!(
        p.sign_ins() == 1,
        "browser ran {} times: {logs:#?}",
        p.sign_ins()
    );
    let reused = logs
        .iter()
        .filter(|l| l.contains("another bridge-client signed in"))
        .count();
    ensure!(reused == 2, "{logs:#?}");
    let stats = p.admin("GET", "/stats")?;
    ensure!(
        stats["authorizations"] == 1 && stats["registrations"] == 1,
        "{stats}"
    );
    let rec = p.stored()?.context("record")?;
    no_tokens(&rec, &logs.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn an_expired_access_token_is_refreshed_without_a_new_sign_in() -> Result<()> {
    let p = OAuthPeer::start(&["--access-ttl", "2"])?;
    let out = p.login()?;
    ensure!(out.status.success(), "login: {}", said(&out));
    let before = p.stored()?.context("record")?;
    // Let the access token expire for real.
    std::thread::sleep(Duration::from_millis(2500));
    let out = p.run(&["login", "--check", &p.mcp_url])?;
    let log = said(&out);
    ensure!(
        out.status.success() && log.contains("accepted the token"),
        "{log}"
    );
    ensure!(
        log.contains("refreshed 1 time(s) and signed in 0 time(s)"),
        "{log}"
    );
    ensure!(p.sign_ins() == 1, "browser ran {} times", p.sign_ins());
    let after = p.stored()?.context("record")?;
    ensure!(
        after["access_token"] != before["access_token"],
        "not refreshed"
    );
    ensure!(p.admin("GET", "/stats")?["refreshes"] == 1);
    no_tokens(&before, &[&log])?;
    no_tokens(&after, &[&log])
}

#[test]
fn a_revoked_refresh_token_leads_to_exactly_one_new_sign_in() -> Result<()> {
    let p = OAuthPeer::start(&["--access-ttl", "2"])?;
    let out = p.login()?;
    ensure!(out.status.success(), "login: {}", said(&out));
    let first = p.stored()?.context("record")?;
    p.admin("POST", "/revoke-refresh-tokens")?;
    std::thread::sleep(Duration::from_millis(2500));
    let out = p.run(&["login", "--check", &p.mcp_url, "--oauth-timeout", "30"])?;
    let log = said(&out);
    ensure!(
        out.status.success() && log.contains("accepted the token"),
        "{log}"
    );
    ensure!(log.contains("invalid_grant"), "{log}");
    ensure!(log.contains("signed in 1 time(s)"), "{log}");
    ensure!(
        p.sign_ins() == 2,
        "browser ran {} times: {log}",
        p.sign_ins()
    );
    let second = p.stored()?.context("record")?;
    no_tokens(&first, &[&log])?;
    no_tokens(&second, &[&log])
}

#[test]
fn an_authorization_server_without_pkce_is_refused() -> Result<()> {
    let p = OAuthPeer::start(&["--no-pkce"])?;
    let out = p.login()?;
    let log = said(&out);
    ensure!(out.status.code() == Some(1), "{log}");
    ensure!(log.contains("PKCE") && log.contains("S256"), "{log}");
    ensure!(p.sign_ins() == 0, "the browser was opened");
    ensure!(p.stored()?.is_none());
    Ok(())
}

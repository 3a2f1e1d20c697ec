//! Signing in to the relay with nothing but its URL: bridge-client over Streamable HTTP and
//! over the WebSocket tunnel (the same OAuth authorizer: a 401 naming protected-resource
//! metadata, discovery, dynamic registration, PKCE in the browser, then the call); and a real
//! host, Claude Code, finding the metadata from the relay's 401 (`! Needs authentication`).

use std::process::Command;

use anyhow::{ensure, Context, Result};
use mcp_bridge_tests::{Ide, Peers, TempDir};
use serde_json::{json, Value};

use super::{check_principal, jwt_claims, tool_env, Idp, T};

/// The access token stored for `resource` (a JWT the provider issued), from the keyring.
fn stored_token(idp: &Idp, resource: &str) -> Result<String> {
    let key = format!("oauth:{} {resource}", idp.issuer);
    let raw = bridge_client::credentials::load(&key)?.context("nothing stored")?;
    let rec: Value = serde_json::from_str(raw.expose())?;
    rec["access_token"]
        .as_str()
        .map(str::to_owned)
        .context("access_token")
}

fn echo(ide: &mut Ide) -> Result<()> {
    let r = ide.request(
        json!(7),
        "tools/call",
        json!({"name": "echo", "arguments": {"text": "signed in"}}),
    )?;
    ensure!(
        r.pointer("/result/content/0/text") == Some(&json!("signed in")),
        "{r}"
    );
    Ok(())
}

#[test]
fn bridge_client_signs_in_with_only_the_relays_url_over_both_carriers() -> Result<()> {
    let idp = Idp::start()?;
    let relay = idp.relay()?;
    let http_url = format!("http://{}/mcp/demo", relay.addr);
    let ws_url = relay.url("time");
    let ws_resource = format!("http://{}/mcp/time", relay.addr);

    // Streamable HTTP: the upstream holds the first request while it signs in.
    let mut ide = Ide::spawn(&mut idp.client(&[&http_url]))?;
    let result = (|| {
        ide.initialize()?;
        echo(&mut ide)
    })();
    let log = ide.stderr.text();
    result.with_context(|| format!("bridge-client's stderr:\n{log}"))?;
    ensure!(idp.sign_ins() == 1, "browser runs: {}", idp.sign_ins());
    let token = stored_token(&idp, &http_url)?;
    let claims = jwt_claims(&token)?;
    ensure!(
        claims["aud"] == json!(http_url) || claims["aud"] == json!([http_url]),
        "{claims}"
    );
    ensure!(
        claims["iss"] == json!(idp.issuer) && claims["sub"] == "alice",
        "{claims}"
    );
    ensure!(
        claims["scope"]
            .as_str()
            .is_some_and(|s| s.split(' ').any(|x| x == "mcp:demo")),
        "{claims}"
    );
    ensure!(!log.contains(&token), "the access token leaked to stderr");
    ide.close_stdin();
    ide.wait(T)?;

    // The provider rotates its key; the next sign-in's token is signed with the new one, and
    // the relay takes it at the first try (it fetches the keys again on the unknown kid).
    let kid = idp.rotate()?;

    // The WebSocket tunnel: the upgrade's 401 starts the same sign-in, for the tool's resource;
    // the tool learns who signed in (the provider's `sub` and `groups`), never the token.
    let mut ide = Ide::spawn(&mut idp.client(&[&ws_url]))?;
    let result = (|| {
        ide.initialize()?;
        check_principal(&mut ide, "alice", "eng,ops")
    })();
    let log = ide.stderr.text();
    result.with_context(|| format!("bridge-client's stderr:\n{log}"))?;
    ensure!(idp.sign_ins() == 2, "browser runs: {}", idp.sign_ins());
    let token = stored_token(&idp, &ws_resource)?;
    let header = jsonwebtoken::decode_header(&token)?;
    ensure!(header.kid.as_deref() == Some(kid.as_str()), "{header:?}");
    ensure!(
        !log.contains("refused the token"),
        "the relay refused the rotated key's token: {log}"
    );
    let claims = jwt_claims(&token)?;
    ensure!(
        claims["aud"] == json!(ws_resource) || claims["aud"] == json!([ws_resource]),
        "{claims}"
    );
    ensure!(!log.contains(&token), "the access token leaked to stderr");
    ide.close_stdin();
    ide.wait(T)?;

    // A second tunnel session uses the stored sign-in: no browser.
    let mut ide = Ide::spawn(&mut idp.client(&[&ws_url]))?;
    ide.initialize()?;
    ensure!(tool_env(&mut ide, 9, "MCP_BRIDGE_USER")? == "alice");
    ensure!(idp.sign_ins() == 2, "browser runs: {}", idp.sign_ins());
    ide.close_stdin();
    ide.wait(T)?;

    idp.logout(&http_url);
    idp.logout(&ws_url);
    Ok(())
}

#[test]
fn a_provider_that_will_not_grant_the_scope_ends_the_sign_in_with_a_clear_error() -> Result<()> {
    // The provider grants only `mcp:time`; bridge-client asks for `mcp:demo` (the scope the
    // relay's challenge names for `demo`), the provider refuses (access_denied), and
    // bridge-client says so once and exits: no second browser, no loop, no tool started.
    let idp = Idp::start_with(&["--scopes", "mcp:time"])?;
    let relay = idp.relay()?;
    let url = relay.url("demo");
    let mut ide = Ide::spawn(&mut idp.client(&[&url]))?;
    let status = ide.wait(T)?;
    let log = ide.stderr.text();
    ensure!(!status.success(), "{log}");
    ensure!(
        log.contains("signing in to") && log.contains("access_denied"),
        "{log}"
    );
    ensure!(
        idp.sign_ins() == 1,
        "browser runs: {} ({log})",
        idp.sign_ins()
    );
    ensure!(relay.children().is_empty(), "a tool started");
    println!(
        "refused as expected: {}",
        log.lines().last().unwrap_or_default()
    );
    idp.logout(&url);
    Ok(())
}

#[test]
fn claude_code_finds_the_sign_in_from_the_relays_401() -> Result<()> {
    let idp = Idp::start()?;
    let relay = idp.relay()?;
    let url = format!("http://{}/mcp/demo", relay.addr);
    let claude = Peers::require().node_modules.join(".bin/claude");
    ensure!(
        claude.exists(),
        "Claude Code is missing: run scripts/install-peers.sh"
    );
    let home = TempDir::new();
    let run = |args: &[&str]| -> Result<String> {
        let out = Command::new(&claude)
            .args(args)
            .current_dir(home.path())
            .env("HOME", home.path())
            .env("NODE_EXTRA_CA_CERTS", idp.ca())
            .env("SSL_CERT_FILE", idp.ca())
            .env_remove("ANTHROPIC_API_KEY")
            .output()?;
        Ok(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    };
    let added = run(&["mcp", "add", "-s", "local", "-t", "http", "relay", &url])?;
    let listed = run(&["mcp", "list"])?;
    println!("claude mcp list:\n{listed}");
    ensure!(
        listed.contains("Needs authentication"),
        "expected `! Needs authentication`; add said:\n{added}\nlist said:\n{listed}"
    );
    ensure!(!listed.contains("Failed to connect"), "{listed}");
    Ok(())
}

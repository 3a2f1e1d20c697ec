//! Every rejection of a token, on both carriers (Streamable HTTP and the WebSocket upgrade),
//! each before a tool process starts; the provider rotating its key during a run (no failed
//! call); the provider going down (cached keys keep working, an unknown key is refused).

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Context, Result};
use base64::Engine;
use mcp_bridge_tests::http_raw::{raw, Resp};
use mcp_bridge_tests::{bin, Ide, Relay};
use serde_json::{json, Value};

use super::{check_principal, jwt_claims, metric, Idp, T};

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A Streamable HTTP `initialize` to `tool`.
fn post(relay: &Relay, tool: &str, token: Option<&str>) -> Result<Resp> {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut h = vec![
        ("Accept", "application/json, text/event-stream"),
        ("Content-Type", "application/json"),
    ];
    if let Some(b) = &bearer {
        h.push(("Authorization", b));
    }
    raw(relay.addr, "POST", &format!("/mcp/{tool}"), &h, INIT)
}

/// A WebSocket upgrade to `tool` (only for refusals: an accepted upgrade stays open).
fn upgrade(relay: &Relay, tool: &str, token: Option<&str>) -> Result<Resp> {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut h = vec![
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Protocol", "mcp"),
    ];
    if let Some(b) = &bearer {
        h.push(("Authorization", b));
    }
    raw(relay.addr, "GET", &format!("/mcp/{tool}"), &h, "")
}

/// A tunnel session with a static token (no sign-in).
fn tunnel(relay: &Relay, tool: &str, token: &str) -> Result<Ide> {
    Ide::spawn(
        std::process::Command::new(bin("bridge-client"))
            .arg(relay.url(tool))
            .arg("--no-keyring")
            .env("MCP_BRIDGE_TOKEN", token),
    )
}

fn echo(ide: &mut Ide, id: u64) -> Result<()> {
    let r = ide.request(
        json!(id),
        "tools/call",
        json!({"name": "echo", "arguments": {"text": "hi"}}),
    )?;
    ensure!(
        r.pointer("/result/content/0/text") == Some(&json!("hi")),
        "{r}"
    );
    Ok(())
}

/// A refusal as expected: status, challenge parts, and no token echoed.
fn check(name: &str, r: &Resp, status: u16, want: &[String], token: Option<&str>) -> Result<()> {
    ensure!(r.status == status, "{name}: expected {status}, got {r:?}");
    let www = r
        .header("www-authenticate")
        .with_context(|| format!("{name}: no WWW-Authenticate: {r:?}"))?;
    for w in want {
        ensure!(www.contains(w.as_str()), "{name}: {www:?} lacks {w:?}");
    }
    if let Some(t) = token {
        ensure!(
            !r.body.contains(t) && !www.contains(t),
            "{name}: the token was echoed"
        );
    }
    Ok(())
}

#[test]
fn relay_refuses_every_bad_token_before_a_tool_starts_and_follows_the_providers_keys() -> Result<()>
{
    let mut idp = Idp::start()?;
    let relay = idp.relay()?;
    let base = format!("http://{}", relay.addr);
    let demo = format!("{base}/mcp/demo");
    let prm_url = format!("{base}/.well-known/oauth-protected-resource/mcp/demo");

    // Protected-resource metadata, per tool and for the relay.
    let r = raw(
        relay.addr,
        "GET",
        "/.well-known/oauth-protected-resource/mcp/demo",
        &[],
        "",
    )?;
    ensure!(r.status == 200, "{r:?}");
    let doc: Value = serde_json::from_str(&r.body)?;
    ensure!(doc["resource"] == demo.as_str(), "{doc}");
    ensure!(doc["authorization_servers"] == json!([idp.issuer]), "{doc}");
    ensure!(doc["scopes_supported"] == json!(["mcp:demo"]), "{doc}");
    let r = raw(
        relay.addr,
        "GET",
        "/.well-known/oauth-protected-resource",
        &[],
        "",
    )?;
    let doc: Value = serde_json::from_str(&r.body)?;
    ensure!(doc["resource"] == base.as_str(), "{doc}");
    ensure!(
        doc["scopes_supported"] == json!(["mcp:demo", "mcp:time"]),
        "{doc}"
    );
    let r = raw(
        relay.addr,
        "GET",
        "/.well-known/oauth-protected-resource/mcp/nope",
        &[],
        "",
    )?;
    ensure!(r.status == 404, "{r:?}");

    let good = json!({"aud": demo, "scope": "mcp:demo"});
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let alg_none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(with("iss", json!(idp.issuer)).to_string().as_bytes())
    );
    let hs256 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"iss": idp.issuer, "aud": demo, "sub": "mallory", "exp": now() + 300, "scope": "mcp:demo"}),
        &jsonwebtoken::EncodingKey::from_secret(b"a guessed secret"),
    )?;
    let invalid = |code: &str| {
        vec![
            format!("resource_metadata=\"{prm_url}\""),
            format!("error=\"invalid_token\", error_description=\"{code}\""),
        ]
    };
    let scope_needed = vec![
        format!("resource_metadata=\"{prm_url}\""),
        "error=\"insufficient_scope\"".to_owned(),
        "scope=\"mcp:demo\"".to_owned(),
    ];
    let cases: Vec<(&str, Option<String>, u16, Vec<String>)> = vec![
        (
            "no token",
            None,
            401,
            vec![
                format!("resource_metadata=\"{prm_url}\""),
                "scope=\"mcp:demo\"".into(),
            ],
        ),
        (
            "wrong audience: another resource",
            Some(idp.mint(
                with("aud", json!("https://elsewhere.example/mcp/demo")),
                false,
            )?),
            401,
            invalid("wrong_audience"),
        ),
        (
            "wrong audience: another tool of this relay",
            Some(idp.mint(with("aud", json!(format!("{base}/mcp/time"))), false)?),
            401,
            invalid("wrong_audience"),
        ),
        (
            "no audience",
            Some(idp.mint(with("aud", Value::Null), false)?),
            401,
            invalid("malformed_token"),
        ),
        (
            "wrong issuer",
            Some(idp.mint(with("iss", json!("https://evil.example")), false)?),
            401,
            invalid("wrong_issuer"),
        ),
        (
            "expired",
            Some(idp.mint(with("exp", json!(now() - 600)), false)?),
            401,
            invalid("expired"),
        ),
        (
            "not yet valid",
            Some(idp.mint(with("nbf", json!(now() + 600)), false)?),
            401,
            invalid("not_yet_valid"),
        ),
        (
            "signed by a key the provider does not publish",
            Some(idp.mint(good.clone(), true)?),
            401,
            invalid("unknown_key"),
        ),
        ("alg none", Some(alg_none), 401, invalid("bad_algorithm")),
        (
            "HS256 with a guessed secret",
            Some(hs256),
            401,
            invalid("bad_algorithm"),
        ),
        (
            "missing scope: another tool's",
            Some(idp.mint(with("scope", json!("mcp:time")), false)?),
            403,
            scope_needed.clone(),
        ),
        (
            "missing scope: none at all",
            Some(idp.mint(with("scope", Value::Null), false)?),
            403,
            scope_needed,
        ),
    ];
    let starts = metric(&relay, "mcp_bridge_tool_starts_total")?;
    for (name, token, status, want) in &cases {
        let t = token.as_deref();
        check(
            &format!("{name} (Streamable HTTP)"),
            &post(&relay, "demo", t)?,
            *status,
            want,
            t,
        )?;
        check(
            &format!("{name} (WebSocket)"),
            &upgrade(&relay, "demo", t)?,
            *status,
            want,
            t,
        )?;
        println!("rejected as expected on both carriers: {name} -> HTTP {status}");
    }
    ensure!(
        metric(&relay, "mcp_bridge_tool_starts_total")? == starts,
        "a refused request started a tool process"
    );

    // Accepted: the tool's audience, and the relay's.
    let token = idp.mint(good.clone(), false)?;
    ensure!(post(&relay, "demo", Some(&token))?.status == 200);
    let relay_aud = idp.mint(with("aud", json!(base)), false)?;
    ensure!(post(&relay, "demo", Some(&relay_aud))?.status == 200);
    let mut ide = tunnel(&relay, "demo", &token)?;
    ide.initialize()?;
    echo(&mut ide, 2)?;
    // Who the user is reaches the tool as environment variables; the token does not.
    let time = format!("{base}/mcp/time");
    let who = idp.mint(
        json!({"aud": time, "scope": "mcp:time", "sub": "carol", "groups": ["sre", "on-call"]}),
        false,
    )?;
    let mut ide_time = tunnel(&relay, "time", &who)?;
    ide_time.initialize()?;
    check_principal(&mut ide_time, "carol", "sre,on-call")?;
    ide_time.close_stdin();
    ide_time.wait(T)?;

    // The provider rotates its key during the run: a token signed with the new key is
    // accepted at the first try (the unknown kid makes the relay fetch the keys again).
    let kid = idp.rotate()?;
    let rotated = idp.mint(good.clone(), false)?;
    let header = jsonwebtoken::decode_header(&rotated)?;
    ensure!(header.kid.as_deref() == Some(kid.as_str()), "{header:?}");
    ensure!(jwt_claims(&rotated)?["sub"] == "alice");
    let r = post(&relay, "demo", Some(&rotated))?;
    ensure!(
        r.status == 200,
        "the first call with the rotated key: {r:?}"
    );
    let mut ide2 = tunnel(&relay, "demo", &rotated)?;
    ide2.initialize()?;
    echo(&mut ide2, 2)?;
    echo(&mut ide, 3)?;
    ensure!(
        post(&relay, "demo", Some(&token))?.status == 200,
        "the old key still published"
    );
    let refetched =
        relay.sample(r#"mcp_bridge_jwks_fetches_total{trigger="unknown_kid",outcome="ok"}"#)?;
    ensure!(
        refetched >= 1.0,
        "re-fetches for an unknown kid: {refetched}"
    );

    // The provider goes down: the keys held keep working; a token signed by an unknown key is
    // refused, and the failed fetch is logged and counted.
    let still_good = idp.mint(good.clone(), false)?;
    let rogue = idp.mint(good, true)?;
    idp.kill();
    ensure!(post(&relay, "demo", Some(&still_good))?.status == 200);
    check(
        "unknown key while the provider is down",
        &post(&relay, "demo", Some(&rogue))?,
        401,
        &invalid("unknown_key"),
        Some(&rogue),
    )?;
    relay
        .log
        .wait_for("cannot fetch the identity provider's signing keys", T)?;
    let failed =
        relay.sample(r#"mcp_bridge_jwks_fetches_total{trigger="unknown_kid",outcome="error"}"#)?;
    ensure!(failed >= 1.0, "failed fetches for an unknown kid: {failed}");
    let keys = relay.sample("mcp_bridge_jwks_keys")?;
    ensure!(keys == 2.0, "keys held: {keys}");
    echo(&mut ide, 4)?;
    echo(&mut ide2, 3)?;
    println!("rejected as expected: a token signed by an unknown key while the provider is down");
    ide.close_stdin();
    ide2.close_stdin();
    ide.wait(T)?;
    ide2.wait(T)?;
    Ok(())
}

#[test]
fn a_provider_down_when_the_relay_starts_means_503_not_a_bad_token() -> Result<()> {
    let mut idp = Idp::start()?;
    let token = idp.mint(json!({"scope": "mcp:demo"}), false)?;
    idp.kill();
    let relay = idp.relay_unchecked()?;
    relay
        .log
        .wait_for("cannot fetch the identity provider's signing keys", T)?;
    relay.log.wait_for("no keys yet", T)?;
    let r = post(&relay, "demo", Some(&token))?;
    ensure!(r.status == 503, "{r:?}");
    ensure!(
        r.header("www-authenticate")
            .is_some_and(|w| w.contains("error_description=\"keys_unavailable\"")),
        "{r:?}"
    );
    let in_a_row = relay.sample("mcp_bridge_jwks_fetch_failures_in_a_row")?;
    ensure!(in_a_row >= 1.0, "fetch failures in a row: {in_a_row}");
    println!("refused as expected: a token while the provider was never reachable -> HTTP 503 keys_unavailable");
    Ok(())
}

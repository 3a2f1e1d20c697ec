//! JWT auth: HS256 and ES256 (from a JWKS file) accepted, and every kind of bad token refused
//! with its own reason, the token never echoed.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mcp_bridge_tests::{demo_tool, relay_config, Relay, TempDir};
use rcgen::KeyPair;
use serde_json::{json, Value};

use super::{client, echo_works, refused, T};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn jwt(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> Result<String> {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    Ok(jsonwebtoken::encode(&header, claims, key)?)
}

#[test]
fn jwt_hs256_and_es256_with_every_rejection() -> Result<()> {
    let dir = TempDir::new();
    // ES256 key, published as a JWKS file.
    let ec = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let raw = ec.public_key_raw();
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
        "x": b64(&raw[1..33]), "y": b64(&raw[33..65])}]});
    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(&jwks_path, jwks.to_string())?;
    let auth = format!(
        r#"[auth]
mode = "jwt"
[auth.jwt]
issuer = "https://idp.test"
audience = "mcp-bridge"
leeway_s = 5
hs256_secret_env = "TEST_JWT_SECRET"
jwks_file = "{}"
tools_claim = "mcp_tools"
"#,
        jwks_path.display()
    );
    let config = relay_config("", &format!("{auth}\n{}", demo_tool("demo", "")));
    let secret = "hs256-secret-for-tests-0123456789";
    let relay = Relay::start_config(&config, &[("TEST_JWT_SECRET", secret)])?;
    let url = relay.url("demo");
    let hs = EncodingKey::from_secret(secret.as_bytes());
    let es = EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes())?;
    let hs_jwt = |claims: &Value| jwt(Algorithm::HS256, &hs, None, claims);
    let good = json!({"sub": "carol", "iss": "https://idp.test", "aud": "mcp-bridge",
        "exp": now() + 600, "nbf": now() - 10, "mcp_tools": ["demo"]});
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };

    let mut ok = client(&url, Some(&hs_jwt(&good)?), &[])?;
    echo_works(&mut ok)?;
    let mut ok_es = client(
        &url,
        Some(&jwt(Algorithm::ES256, &es, Some("k1"), &good)?),
        &[],
    )?;
    echo_works(&mut ok_es)?;

    let none_header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let none_token = format!("{none_header}.{}.", b64(good.to_string().as_bytes()));
    let wrong_key = EncodingKey::from_secret(b"not-the-secret");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            hs_jwt(&with("exp", json!(now() - 600)))?,
            "HTTP 401: token expired",
        ),
        (
            "not yet valid",
            hs_jwt(&with("nbf", json!(now() + 600)))?,
            "HTTP 401: token not yet valid",
        ),
        (
            "wrong issuer",
            hs_jwt(&with("iss", json!("https://evil.test")))?,
            "HTTP 401: wrong token issuer",
        ),
        (
            "wrong audience",
            hs_jwt(&with("aud", json!("someone-else")))?,
            "HTTP 401: wrong token audience",
        ),
        (
            "bad signature",
            jwt(Algorithm::HS256, &wrong_key, None, &good)?,
            "HTTP 401: bad token signature",
        ),
        ("alg none", none_token, "HTTP 401"),
        (
            "tool outside grant",
            hs_jwt(&with("mcp_tools", json!(["other"])))?,
            "HTTP 403",
        ),
    ];
    for (name, token, want) in &cases {
        let err = refused(&url, Some(token), &[])?;
        assert!(err.contains(want), "{name}: {err}");
        assert!(
            !err.contains(token.as_str()),
            "{name}: the token leaked into stderr"
        );
        println!(
            "rejected as expected: {name} -> {}",
            err.lines().last().unwrap_or("")
        );
    }
    // Only the two good clients' tools run.
    assert_eq!(relay.children().len(), 2);
    ok.close_stdin();
    ok_es.close_stdin();
    relay.wait_no_children(T)?;
    Ok(())
}

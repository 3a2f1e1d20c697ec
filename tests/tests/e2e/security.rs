//! Security end to end: TLS and mutual TLS with certificates made here (rcgen), static tokens
//! and JWTs with every rejection, per-tool grants, session binding on resume, Origin checks,
//! the OS keyring (real keyutils), secrets kept out of logs, slowloris, and an HTTP CONNECT
//! proxy on loopback.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use base64::Engine;
use futures_util::StreamExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mcp_bridge_tests::pki::Pki;
use mcp_bridge_tests::proxy::ConnectProxy;
use mcp_bridge_tests::{bin, demo_tool, Ide, Relay, TempDir};
use rcgen::KeyPair;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const T: Duration = Duration::from_secs(15);

fn hash(token: &str) -> Result<String> {
    let out = Command::new(bin("bridge-server"))
        .arg("hash-token")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(token.as_bytes())?;
            c.wait_with_output()
        })?;
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// A relay with two tokens: alice may use `demo`, bob only `other`.
fn token_relay(extra: &str) -> Result<Relay> {
    token_relay_env(extra, &[])
}

fn token_relay_env(extra: &str, envs: &[(&str, &str)]) -> Result<Relay> {
    let config = format!(
        r#"listen = "127.0.0.1:0"
[limits]
kill_grace_ms = 500
{extra}
[auth]
mode = "tokens"
[[auth.token]]
user = "alice"
sha256 = "{}"
tools = ["demo"]
[[auth.token]]
user = "bob"
sha256 = "{}"
tools = ["other"]

{}
{}"#,
        hash("alice-token-7f3a")?,
        hash("bob-token-91c2")?,
        demo_tool("demo", ""),
        demo_tool("other", "")
    );
    Relay::start_config(&config, envs)
}

fn client(url: &str, token: Option<&str>, extra: &[&str]) -> Result<Ide> {
    let mut cmd = Command::new(bin("bridge-client"));
    cmd.arg(url)
        .arg("--no-keyring")
        .args(extra)
        .env_remove("MCP_BRIDGE_TOKEN");
    if let Some(t) = token {
        cmd.env("MCP_BRIDGE_TOKEN", t);
    }
    Ide::spawn(&mut cmd)
}

/// Starts a client that must be refused; returns its stderr.
fn refused(url: &str, token: Option<&str>, extra: &[&str]) -> Result<String> {
    let mut ide = client(url, token, extra)?;
    let status = ide.wait(T)?;
    anyhow::ensure!(!status.success(), "expected a refusal");
    Ok(ide.stderr.text())
}

fn echo_works(ide: &mut Ide) -> Result<()> {
    ide.initialize()?;
    let r = ide.request(
        json!(1),
        "tools/call",
        json!({"name": "echo", "arguments": {"text": "hi"}}),
    )?;
    anyhow::ensure!(
        r.pointer("/result/content/0/text") == Some(&json!("hi")),
        "{r}"
    );
    Ok(())
}

#[test]
fn tokens_grants_and_their_rejections() -> Result<()> {
    let relay = token_relay("")?;
    let demo = relay.url("demo");

    let err = refused(&demo, None, &[])?;
    assert!(
        err.contains("HTTP 401") && err.contains("missing bearer token"),
        "{err}"
    );
    let err = refused(&demo, Some("not-a-real-token"), &[])?;
    assert!(
        err.contains("HTTP 401") && err.contains("unknown token"),
        "{err}"
    );
    let err = refused(&demo, Some("bob-token-91c2"), &[])?;
    assert!(
        err.contains("HTTP 403") && err.contains("not granted tool `demo`"),
        "{err}"
    );
    assert!(
        relay.children().is_empty(),
        "no tool was started for a refused request"
    );

    let mut alice = client(&demo, Some("alice-token-7f3a"), &[])?;
    echo_works(&mut alice)?;
    let log = relay.log.text();
    for reason in [
        "reason=\"missing\"",
        "reason=\"unknown_token\"",
        "reason=\"not_granted\"",
    ] {
        assert!(log.contains(reason), "audit log lacks {reason}:\n{log}");
    }
    assert!(
        log.contains("event=\"call\"")
            && log.contains("user=alice")
            && log.contains("tool_name=\"echo\""),
        "{log}"
    );
    alice.close_stdin();
    assert!(alice.wait(T)?.success());
    relay.wait_no_children(T)?;
    Ok(())
}

/// A 401 carries `WWW-Authenticate: Bearer` and never becomes a WebSocket that then closes.
#[test]
fn unauthenticated_upgrade_gets_401_with_a_challenge() -> Result<()> {
    let relay = token_relay("")?;
    let mut s = TcpStream::connect(relay.addr)?;
    s.set_read_timeout(Some(T))?;
    write!(
        s,
        "GET /mcp/demo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: mcp\r\n\r\n"
    )?;
    let mut buf = [0u8; 2048];
    let n = s.read(&mut buf)?;
    let resp = String::from_utf8_lossy(&buf[..n]).to_lowercase();
    assert!(resp.starts_with("http/1.1 401"), "{resp}");
    assert!(resp.contains("www-authenticate: bearer"), "{resp}");
    assert!(relay.children().is_empty());
    Ok(())
}

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
    let config = format!(
        r#"listen = "127.0.0.1:0"
[limits]
kill_grace_ms = 500
[auth]
mode = "jwt"
[auth.jwt]
issuer = "https://idp.test"
audience = "mcp-bridge"
leeway_s = 5
hs256_secret_env = "TEST_JWT_SECRET"
jwks_file = "{}"
tools_claim = "mcp_tools"

{}"#,
        jwks_path.display(),
        demo_tool("demo", "")
    );
    let secret = "hs256-secret-for-tests-0123456789";
    let relay = Relay::start_config(&config, &[("TEST_JWT_SECRET", secret)])?;
    let url = relay.url("demo");
    let hs = EncodingKey::from_secret(secret.as_bytes());
    let es = EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes())?;
    let good = json!({"sub": "carol", "iss": "https://idp.test", "aud": "mcp-bridge",
        "exp": now() + 600, "nbf": now() - 10, "mcp_tools": ["demo"]});
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };

    let mut ok = client(&url, Some(&jwt(Algorithm::HS256, &hs, None, &good)?), &[])?;
    echo_works(&mut ok)?;
    let mut ok_es = client(
        &url,
        Some(&jwt(Algorithm::ES256, &es, Some("k1"), &good)?),
        &[],
    )?;
    echo_works(&mut ok_es)?;

    let none_header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let none_token = format!("{none_header}.{}.", b64(good.to_string().as_bytes()));
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            jwt(
                Algorithm::HS256,
                &hs,
                None,
                &with("exp", json!(now() - 600)),
            )?,
            "HTTP 401: token expired",
        ),
        (
            "not yet valid",
            jwt(
                Algorithm::HS256,
                &hs,
                None,
                &with("nbf", json!(now() + 600)),
            )?,
            "HTTP 401: token not yet valid",
        ),
        (
            "wrong issuer",
            jwt(
                Algorithm::HS256,
                &hs,
                None,
                &with("iss", json!("https://evil.test")),
            )?,
            "HTTP 401: wrong token issuer",
        ),
        (
            "wrong audience",
            jwt(
                Algorithm::HS256,
                &hs,
                None,
                &with("aud", json!("someone-else")),
            )?,
            "HTTP 401: wrong token audience",
        ),
        (
            "bad signature",
            jwt(
                Algorithm::HS256,
                &EncodingKey::from_secret(b"not-the-secret"),
                None,
                &good,
            )?,
            "HTTP 401: bad token signature",
        ),
        ("alg none", none_token, "HTTP 401"),
        (
            "tool outside grant",
            jwt(
                Algorithm::HS256,
                &hs,
                None,
                &with("mcp_tools", json!(["other"])),
            )?,
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

/// The session id a relay gives a new `mcp-bridge.v1` connection, read from its welcome.
async fn open_v1(url: &str, token: &str, resume: Option<&str>) -> Result<Result<String, u16>> {
    let mut req = url.into_client_request()?;
    let h = req.headers_mut();
    h.insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("mcp-bridge.v1"),
    );
    h.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}"))?,
    );
    if let Some(id) = resume {
        h.insert("mcp-bridge-session", HeaderValue::from_str(id)?);
        h.insert("mcp-bridge-last-seq", HeaderValue::from_static("0"));
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((mut ws, _)) => {
            let first = tokio::time::timeout(T, ws.next())
                .await?
                .context("closed")??;
            let data = first.into_data();
            let welcome: Value = serde_json::from_slice(&data[1..])?;
            let id = welcome["session"].as_str().context("session")?.to_owned();
            // Keep the connection open a little, then drop it (the session waits for a resume).
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                drop(ws);
            });
            Ok(Ok(id))
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Ok(Err(resp.status().as_u16())),
        Err(e) => Err(e.into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_bound_to_their_principal() -> Result<()> {
    // bob may use every tool here, so only the session binding can stop him.
    let config = format!(
        r#"listen = "127.0.0.1:0"
[limits]
kill_grace_ms = 500
[auth]
mode = "tokens"
[[auth.token]]
user = "alice"
sha256 = "{}"
tools = ["*"]
[[auth.token]]
user = "bob"
sha256 = "{}"
tools = ["*"]

{}"#,
        hash("alice-token-7f3a")?,
        hash("bob-token-91c2")?,
        demo_tool("demo", "")
    );
    let relay = Relay::start_config(&config, &[])?;
    let url = relay.url("demo");
    let session = open_v1(&url, "alice-token-7f3a", None)
        .await?
        .map_err(|s| anyhow::anyhow!("HTTP {s}"))?;
    let children = relay.children().len();
    // bob presents alice's session id: refused like an unknown session, nothing spawned.
    let bob = open_v1(&url, "bob-token-91c2", Some(&session)).await?;
    assert_eq!(bob, Err(404));
    assert_eq!(relay.children().len(), children, "no child spawned for bob");
    // alice herself may resume it.
    let again = open_v1(&url, "alice-token-7f3a", Some(&session)).await?;
    assert_eq!(again.as_deref(), Ok(session.as_str()));
    Ok(())
}

#[test]
fn origin_must_be_allowed() -> Result<()> {
    let config = format!(
        "listen = \"127.0.0.1:0\"\n[security]\nallowed_origins = [\"https://ide.example\"]\n\n{}",
        demo_tool("demo", "")
    );
    let relay = Relay::start_config(&config, &[])?;
    let err = refused(
        &relay.url("demo"),
        None,
        &["-H", "Origin: https://evil.example"],
    )?;
    assert!(
        err.contains("HTTP 403") && err.contains("origin `https://evil.example` is not allowed"),
        "{err}"
    );
    let mut ok = client(
        &relay.url("demo"),
        None,
        &["-H", "Origin: https://ide.example"],
    )?;
    echo_works(&mut ok)?;
    // No Origin at all (bridge-client's default) is fine.
    let mut plain = client(&relay.url("demo"), None, &[])?;
    echo_works(&mut plain)?;
    Ok(())
}

#[test]
fn no_auth_is_refused_off_loopback() -> Result<()> {
    let dir = TempDir::new();
    let cfg = dir.path().join("relay.toml");
    std::fs::write(
        &cfg,
        format!("listen = \"0.0.0.0:0\"\n{}", demo_tool("demo", "")),
    )?;
    let out = Command::new(bin("bridge-server"))
        .arg("--config")
        .arg(&cfg)
        .output()?;
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("auth.mode") && err.contains("loopback"),
        "{err}"
    );
    Ok(())
}

fn tls_relay(pki: &Pki, mtls: bool) -> Result<Relay> {
    let client_ca = if mtls {
        format!("client_ca = \"{}\"\n", pki.path("ca.pem"))
    } else {
        String::new()
    };
    let config = format!(
        "listen = \"127.0.0.1:0\"\n[limits]\nkill_grace_ms = 500\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n{client_ca}\n{}",
        pki.path("server.pem"),
        pki.path("server.key"),
        demo_tool("demo", "")
    );
    Relay::start_config(&config, &[])
}

fn wss(relay: &Relay) -> String {
    format!("wss://127.0.0.1:{}/mcp/demo", relay.addr.port())
}

#[test]
fn tls_and_mutual_tls_end_to_end() -> Result<()> {
    let pki = Pki::new()?;
    let relay = tls_relay(&pki, false)?;
    let mut ok = client(&wss(&relay), None, &["--ca-file", &pki.path("ca.pem")])?;
    echo_works(&mut ok)?;
    ok.close_stdin();
    assert!(ok.wait(T)?.success());
    let err = refused(
        &wss(&relay),
        None,
        &["--ca-file", &pki.path("other-ca.pem")],
    )?;
    assert!(
        err.contains("TLS") && err.contains("certificate"),
        "wrong CA: {err}"
    );

    let mtls = tls_relay(&pki, true)?;
    let err = refused(&wss(&mtls), None, &["--ca-file", &pki.path("ca.pem")])?;
    assert!(err.contains("bridge-client:"), "missing client cert: {err}");
    let mut ok = client(
        &wss(&mtls),
        None,
        &[
            "--ca-file",
            &pki.path("ca.pem"),
            "--client-cert",
            &pki.path("client.pem"),
            "--client-key",
            &pki.path("client.key"),
        ],
    )?;
    echo_works(&mut ok)?;
    assert!(
        mtls.children().len() == 1,
        "only the authenticated client got a tool"
    );
    Ok(())
}

#[test]
fn connect_proxy_with_credentials_and_no_proxy() -> Result<()> {
    let pki = Pki::new()?;
    let relay = tls_relay(&pki, false)?;
    let proxy = ConnectProxy::start(Some("user:pa ss"))?;
    let ca = pki.path("ca.pem");
    let through = |proxy_url: &str, no_proxy: &str| -> Result<Ide> {
        let mut cmd = Command::new(bin("bridge-client"));
        cmd.arg(wss(&relay))
            .args(["--no-keyring", "--ca-file", &ca])
            .env("HTTPS_PROXY", proxy_url)
            .env("NO_PROXY", no_proxy)
            .env_remove("https_proxy")
            .env_remove("no_proxy");
        Ide::spawn(&mut cmd)
    };
    let url = format!("http://user:pa%20ss@{}", proxy.addr);
    let mut ide = through(&url, "")?;
    echo_works(&mut ide)?;
    assert_eq!(proxy.tunnels(), 1, "the session went through the proxy");
    // Wrong credentials: a clear error naming the proxy's answer.
    let mut bad = through(&format!("http://user:wrong@{}", proxy.addr), "")?;
    assert!(!bad.wait(T)?.success());
    assert!(bad.stderr.text().contains("407"), "{}", bad.stderr.text());
    // NO_PROXY bypasses it.
    let mut direct = through(&url, "127.0.0.1")?;
    echo_works(&mut direct)?;
    assert_eq!(proxy.tunnels(), 1);
    Ok(())
}

#[test]
fn keyring_login_connect_logout_round_trip() -> Result<()> {
    let relay = token_relay("")?;
    let url = relay.url("demo");
    let login = |token: &str| -> Result<String> {
        let mut child = Command::new(bin("bridge-client"))
            .args(["login", &url])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{token}\n").as_bytes())?;
        let out = child.wait_with_output()?;
        anyhow::ensure!(
            out.status.success(),
            "login failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let said = login("alice-token-7f3a")?;
    assert!(
        said.contains("keyutils"),
        "says where it stored the token: {said}"
    );
    // A separate process, as the IDE starts it: no env var, the token comes from the keyring.
    let mut cmd = Command::new(bin("bridge-client"));
    cmd.arg(&url).env_remove("MCP_BRIDGE_TOKEN");
    let mut ide = Ide::spawn(&mut cmd)?;
    echo_works(&mut ide)?;
    ide.close_stdin();
    assert!(ide.wait(T)?.success());
    let out = Command::new(bin("bridge-client"))
        .args(["logout", &url])
        .output()?;
    assert!(out.status.success());
    let mut cmd = Command::new(bin("bridge-client"));
    cmd.arg(&url).env_remove("MCP_BRIDGE_TOKEN");
    let mut after = Ide::spawn(&mut cmd)?;
    assert!(!after.wait(T)?.success());
    assert!(
        after.stderr.text().contains("HTTP 401"),
        "{}",
        after.stderr.text()
    );
    Ok(())
}

#[test]
fn secrets_never_reach_the_logs() -> Result<()> {
    let relay = token_relay_env("", &[("RUST_LOG", "trace")])?;
    let token = "alice-token-7f3a";
    let mut cmd = Command::new(bin("bridge-client"));
    cmd.arg(relay.url("demo"))
        .args(["--no-keyring", "-vv"])
        .env("MCP_BRIDGE_TOKEN", token)
        // The most specific directive, for the module that prints the raw upgrade request.
        .env("RUST_LOG", "trace,tungstenite::handshake::client=trace");
    let mut ide = Ide::spawn(&mut cmd)?;
    echo_works(&mut ide)?;
    let _ = refused(&relay.url("demo"), Some("wrong-secret-55aa"), &["-vv"])?;
    ide.close_stdin();
    assert!(ide.wait(T)?.success());
    relay.wait_no_children(T)?;
    let (client_log, relay_log) = (ide.stderr.text(), relay.log.text());
    assert!(
        relay_log.contains("event=\"call\""),
        "the relay did log the session"
    );
    for secret in [token, "wrong-secret-55aa"] {
        assert!(!client_log.contains(secret), "client log leaks {secret}");
        assert!(!relay_log.contains(secret), "relay log leaks {secret}");
    }
    Ok(())
}

#[test]
fn slowloris_is_cut_off_while_others_are_served() -> Result<()> {
    let relay = Relay::start_with(
        "header_read_timeout_ms = 1000",
        &demo_tool("demo", ""),
        None,
    )?;
    let mut slow = TcpStream::connect(relay.addr)?;
    slow.set_read_timeout(Some(Duration::from_millis(200)))?;
    let started = Instant::now();
    let request = b"GET /healthz HTTP/1.1\r\nHost: slow\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaa";
    let mut cut_after = None;
    for (i, byte) in request.iter().enumerate().take(40) {
        if slow.write_all(&[*byte]).is_err() {
            cut_after = Some(started.elapsed());
            break;
        }
        // Others are served meanwhile.
        if i % 5 == 0 {
            let mut other = TcpStream::connect(relay.addr)?;
            other.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
            let mut resp = String::new();
            other.read_to_string(&mut resp)?;
            assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        }
        let mut buf = [0u8; 256];
        match slow.read(&mut buf) {
            Ok(0) => {
                cut_after = Some(started.elapsed());
                break;
            }
            Ok(_) => {
                cut_after = Some(started.elapsed()); // an error answer (408) counts as cut off
                break;
            }
            Err(_) => {} // read timeout: still open; send the next byte
        }
    }
    let cut = cut_after.context("the slow client was never cut off")?;
    println!("slowloris cut off after {cut:?} (header timeout 1 s)");
    assert!(cut < Duration::from_secs(4), "{cut:?}");
    Ok(())
}

#[test]
fn hash_token_and_check_config_agree() -> Result<()> {
    let h = hash("abc")?;
    assert_eq!(
        h,
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let dir = TempDir::new();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, format!("[auth]\nmode = \"tokens\"\n[[auth.token]]\nuser = \"a\"\nsha256 = \"plaintext\"\ntools = [\"*\"]\n{}", demo_tool("demo", "")))?;
    let out = Command::new(bin("bridge-server"))
        .arg("check-config")
        .arg(&bad)
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("auth.token[0].sha256") && err.contains("hash-token"),
        "{err}"
    );
    let _ = Path::new(".");
    Ok(())
}

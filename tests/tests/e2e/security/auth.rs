//! Who may connect: static tokens and per-tool grants with every rejection (401 with a
//! challenge, never an upgrade), sessions bound to their principal, Origin checks, no auth only
//! on loopback, and `hash-token` agreeing with `check-config`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use mcp_bridge_tests::ws::{self, Upgrade, V1Frame};
use mcp_bridge_tests::{
    bin, demo_tool, hash_token, relay_config, token_auth, wait_until, Relay, TempDir,
};

use super::{client, echo_works, refused, token_relay, T};

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
    // The call's audit line is written once its answer is on its way, so it may follow the
    // answer into the log by a moment.
    let _ = wait_until(T, || relay.log.text().contains("event=\"call\""));
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

/// The session id a relay gives a new `mcp-bridge.v1` connection, read from its welcome; the
/// status when the upgrade is refused.
async fn open_v1(url: &str, token: &str, resume: Option<&str>) -> Result<Result<String, u16>> {
    let bearer = format!("Bearer {token}");
    let mut headers = vec![("authorization", bearer.as_str())];
    if let Some(id) = resume {
        headers.extend([("mcp-bridge-session", id), ("mcp-bridge-last-seq", "0")]);
    }
    let mut ws = match ws::connect(url, Some("mcp-bridge.v1"), &headers).await? {
        Upgrade::Open(ws) => ws,
        Upgrade::Refused(status, _) => return Ok(Err(status)),
    };
    let welcome = match ws::next_frame(&mut ws, T).await? {
        Some(V1Frame::Control(c)) => c,
        other => bail!("expected the welcome, got {other:?}"),
    };
    let id = welcome["session"].as_str().context("session")?.to_owned();
    // Keep the connection open a little, then drop it (the session waits for a resume).
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(ws);
    });
    Ok(Ok(id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_bound_to_their_principal() -> Result<()> {
    // bob may use every tool here, so only the session binding can stop him.
    let auth = token_auth(&[
        ("alice", "alice-token-7f3a", &["*"]),
        ("bob", "bob-token-91c2", &["*"]),
    ])?;
    let config = relay_config("", &format!("{auth}\n{}", demo_tool("demo", "")));
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

#[test]
fn hash_token_and_check_config_agree() -> Result<()> {
    let h = hash_token("abc")?;
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
    Ok(())
}

//! Streamable HTTP over HTTP/2: Node's own HTTP/2 stack (nghttp2) against the relay, by prior
//! knowledge on cleartext and by ALPN on TLS, many calls multiplexed on one connection; and
//! bridge-client's HTTP upstream (which offers h2) through the relay's TLS. WebSocket clients
//! on the same TLS listener still get HTTP/1.1 (security::transport covers them).

use std::process::Command;

use anyhow::Result;
use mcp_bridge_tests::pki::Pki;
use mcp_bridge_tests::{assert_checks, bin, demo_tool, relay_config, run_driver, Peers, Relay};

use super::{http_url, DRIVER_LIMIT};

fn h2_client(peers: &Peers, url: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new("node");
    cmd.arg(peers.script("h2_client.mjs"))
        .args(["--url", url, "--calls", "50"])
        .args(extra);
    cmd
}

#[test]
fn http2_by_prior_knowledge_on_cleartext() -> Result<()> {
    let peers = Peers::require();
    let relay = Relay::start(&demo_tool("demo", ""))?;
    let summary = run_driver(
        &mut h2_client(&peers, &http_url(&relay, "demo"), &[]),
        DRIVER_LIMIT,
    )?;
    assert_checks(
        &summary,
        &["initialize", "initialized", "concurrent_calls", "delete"],
    );
    relay.wait_idle("demo", std::time::Duration::from_secs(10))?;
    Ok(())
}

fn tls_relay(pki: &Pki) -> Result<Relay> {
    let tls = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        pki.path("server.pem"),
        pki.path("server.key")
    );
    Relay::start_config(
        &relay_config("", &format!("{tls}\n{}", demo_tool("demo", ""))),
        &[],
    )
}

#[test]
fn http2_by_alpn_on_tls() -> Result<()> {
    let peers = Peers::require();
    let pki = Pki::new()?;
    let relay = tls_relay(&pki)?;
    let url = format!("https://{}/mcp/demo", relay.addr);
    let ca = pki.path("ca.pem");
    let summary = run_driver(&mut h2_client(&peers, &url, &["--ca", &ca]), DRIVER_LIMIT)?;
    assert_checks(
        &summary,
        &[
            "alpn_h2",
            "initialize",
            "initialized",
            "concurrent_calls",
            "delete",
        ],
    );

    // bridge-client's HTTP upstream offers h2 by ALPN too: the Python SDK through it.
    let mut cmd = Command::new(&peers.python);
    cmd.arg(peers.script("py_client.py"))
        .args(["--scenario", "demo", "--"])
        .arg(bin("bridge-client"))
        .arg(&url)
        .args(["--no-keyring", "--ca-file", &ca]);
    let summary = run_driver(&mut cmd, DRIVER_LIMIT)?;
    assert_checks(
        &summary,
        &[
            "connect",
            "list_tools",
            "echo",
            "slow_progress",
            "cancel",
            "ping",
        ],
    );
    // (/metrics is behind TLS here: the tool processes tell.)
    relay.wait_no_children(std::time::Duration::from_secs(10))?;
    Ok(())
}

//! The transport's defences: TLS and mutual TLS with certificates made here (rcgen), an HTTP
//! CONNECT proxy with credentials and NO_PROXY, and slowloris cut off while others are served.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mcp_bridge_tests::pki::Pki;
use mcp_bridge_tests::proxy::ConnectProxy;
use mcp_bridge_tests::{bin, demo_tool, relay_config, Ide, Relay};

use super::{client, echo_works, refused, T};

fn tls_relay(pki: &Pki, mtls: bool) -> Result<Relay> {
    let client_ca = if mtls {
        format!("client_ca = \"{}\"\n", pki.path("ca.pem"))
    } else {
        String::new()
    };
    let tls = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n{client_ca}",
        pki.path("server.pem"),
        pki.path("server.key")
    );
    Relay::start_config(
        &relay_config("", &format!("{tls}\n{}", demo_tool("demo", ""))),
        &[],
    )
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

//! Relay memory with many idle `mcp-bridge.v1` sessions, plain and TLS, opened straight from
//! this process (no bridge-client per session) and ended on purpose afterwards.

use std::future::Future;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use mcp_bridge_tests::pki::Pki;
use mcp_bridge_tests::{proc_status_bytes, Relay};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A process's resident memory (VmRSS), in KiB.
pub(crate) fn rss_kib(pid: u32) -> Result<u64> {
    proc_status_bytes(pid, "VmRSS")
        .map(|b| b / 1024)
        .context("VmRSS")
}

/// An upgrade request for a new `mcp-bridge.v1` session.
fn v1_request(url: &str) -> Result<Request> {
    let mut req = url.into_client_request()?;
    req.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("mcp-bridge.v1"),
    );
    Ok(req)
}

/// Opens `n` idle sessions with `connect` (plain or TLS) straight from this process, returns the
/// relay's RSS once every one is welcomed (no errors allowed), then ends them on purpose.
async fn idle_sessions<S, F, Fut>(relay: &Relay, n: usize, connect: F) -> Result<u64>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn() -> Fut,
    Fut: Future<Output = Result<WebSocketStream<S>>> + Send + 'static,
{
    let mut tasks = Vec::new();
    for _ in 0..n {
        let connecting = connect();
        tasks.push(tokio::spawn(async move {
            let mut ws = connecting.await?;
            let first = tokio::time::timeout(Duration::from_secs(30), ws.next())
                .await?
                .context("closed")??;
            if first.into_data().first() != Some(&3) {
                bail!("no welcome");
            }
            Ok::<_, anyhow::Error>(ws)
        }));
        if tasks.len() % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut open = Vec::new();
    for t in tasks {
        open.push(t.await??);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss = rss_kib(relay.pid())?;
    for ws in &mut open {
        end_session(ws).await;
    }
    Ok(rss)
}

/// Ends a v1 session on purpose (so the relay does not keep it for a resume).
async fn end_session<S>(ws: &mut WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let end = shared::tunnel::encode_control(&shared::tunnel::Control::End {
        reason: "bench done".into(),
    });
    let _ = ws.send(Message::Binary(end)).await;
    let _ = ws.close(None).await;
}

/// Idle sessions over plain WebSocket.
pub(crate) async fn idle_plain(relay: &Relay, n: usize) -> Result<u64> {
    let url = relay.url("idle");
    idle_sessions(relay, n, || {
        let url = url.clone();
        async move { Ok(tokio_tungstenite::connect_async(v1_request(&url)?).await?.0) }
    })
    .await
}

/// Idle sessions over TLS, through bridge-client's own TLS settings (rustls, the test CA).
pub(crate) async fn idle_tls(relay: &Relay, pki: &Pki, n: usize) -> Result<u64> {
    let config = shared::tls::client_config(Some(std::path::Path::new(&pki.path("ca.pem"))), None)?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let addr = relay.addr;
    idle_sessions(relay, n, move || {
        let connector = connector.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?;
            let tls = connector.connect(name, tcp).await?;
            let req = v1_request(&format!("wss://127.0.0.1:{}/mcp/idle", addr.port()))?;
            Ok(tokio_tungstenite::client_async(req, tls).await?.0)
        }
    })
    .await
}

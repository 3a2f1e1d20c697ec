//! The relay's Streamable HTTP carrier over HTTP/2: one connection (prior knowledge on
//! cleartext), one session, many calls in flight as streams of that connection — how an
//! HTTP/2 host multiplexes. Each answer is read to its end (the SSE stream ends with it).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::target::{live_children, CpuMark, CpuPerOp, Procs};
use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;

async fn post(
    sender: &mut SendRequest<Full<Bytes>>,
    path: &str,
    session: Option<&str>,
    body: String,
) -> Result<(u16, Option<String>, Bytes)> {
    let mut req = hyper::Request::post(path)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .header("mcp-protocol-version", "2025-11-25");
    if let Some(s) = session {
        req = req.header("mcp-session-id", s);
    }
    let resp = sender
        .send_request(req.body(Full::new(Bytes::from(body)))?)
        .await?;
    let status = resp.status().as_u16();
    let sid = resp
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, sid, body))
}

/// Calls per second with `window` calls in flight in one session, on one HTTP/2 connection.
pub(crate) fn pipelined(
    addr: SocketAddr,
    relay: u32,
    tool: &str,
    total: usize,
    window: usize,
) -> Result<(f64, CpuPerOp)> {
    let tools_before = live_children(relay);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let path = Arc::new(format!("/mcp/{tool}"));
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .max_concurrent_reset_streams(0)
            .handshake(TokioIo::new(stream))
            .await?;
        tokio::spawn(conn);
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "bench-h2", "version": "1"}}});
        let (status, sid, _) = post(&mut sender, &path, None, init.to_string()).await?;
        ensure!(status == 200, "initialize over HTTP/2: {status}");
        let sid = Arc::new(sid.context("no Mcp-Session-Id")?);
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let (status, _, _) = post(&mut sender, &path, Some(&sid), note.to_string()).await?;
        ensure!(status == 202, "initialized over HTTP/2: {status}");
        let per = total / window;
        let cpu = CpuMark::now(Procs::relay_session(relay, &tools_before));
        let start = Instant::now();
        let mut tasks = Vec::with_capacity(window);
        for w in 0..window {
            let (mut sender, path, sid) = (sender.clone(), path.clone(), sid.clone());
            tasks.push(tokio::spawn(async move {
                for k in 0..per {
                    let id = (w * per + k + 1) as u64;
                    let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                        "params": {"name": "echo", "arguments": {"text": "x".repeat(10)}}});
                    let (status, _, body) =
                        post(&mut sender, &path, Some(&sid), call.to_string()).await?;
                    ensure!(
                        status == 200 && body.windows(6).any(|w| w == b"result"),
                        "call {id}: {status} {}",
                        String::from_utf8_lossy(&body)
                    );
                }
                Ok::<_, anyhow::Error>(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        let rate = (per * window) as f64 / start.elapsed().as_secs_f64();
        let cpu = cpu.per_op(per * window);
        let bye = hyper::Request::delete(path.as_str())
            .header("mcp-session-id", sid.as_str())
            .header("mcp-protocol-version", "2025-11-25")
            .body(Full::new(Bytes::new()))?;
        let _ = sender.send_request(bye).await;
        Ok((rate, cpu))
    })
}

/// The floor under [`pipelined`]: requests per second for `GET /healthz` (no session, no tool)
/// with `window` in flight on one HTTP/2 connection — what the HTTP stack alone costs on this
/// machine, the bench's client included.
pub(crate) fn healthz(addr: SocketAddr, total: usize, window: usize) -> Result<f64> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(stream))
            .await?;
        tokio::spawn(conn);
        let per = total / window;
        let start = Instant::now();
        let mut tasks = Vec::with_capacity(window);
        for _ in 0..window {
            let mut sender = sender.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..per {
                    let req = hyper::Request::get("/healthz").body(Full::new(Bytes::new()))?;
                    let resp = sender.send_request(req).await?;
                    ensure!(resp.status() == 200, "/healthz: {}", resp.status());
                    resp.into_body().collect().await?;
                }
                Ok::<_, anyhow::Error>(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        Ok((per * window) as f64 / start.elapsed().as_secs_f64())
    })
}

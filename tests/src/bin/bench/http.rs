//! The relay's Streamable HTTP carrier driven as an HTTP host drives it: each call a POST
//! answered by an SSE stream that ends with the response, on kept-alive HTTP/1.1 connections.
//! Sequential round trips on one connection; and calls in flight at once in one session, one
//! per connection of a pool (HTTP/1.1 carries one request at a time per connection).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use mcp_bridge_tests::http_raw::{sse_events, Conn};
use serde_json::json;

const ACCEPT: (&str, &str) = ("Accept", "application/json, text/event-stream");
const JSON: (&str, &str) = ("Content-Type", "application/json");
const VERSION: (&str, &str) = ("MCP-Protocol-Version", "2025-11-25");

fn pct(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() - 1) * p / 100]
}

/// p50, p90 and p99 of `n` sequential small `tools/call` round trips to `tool`.
pub(crate) fn sequential(addr: SocketAddr, tool: &str, n: usize) -> Result<[Duration; 3]> {
    let path = format!("/mcp/{tool}");
    let mut conn = Conn::open(addr)?;
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "bench", "version": "1"}}});
    let r = conn.send("POST", &path, &[ACCEPT, JSON], &init.to_string())?;
    ensure!(r.status == 200, "initialize: HTTP {} {}", r.status, r.body);
    let sid = r
        .header("mcp-session-id")
        .context("no Mcp-Session-Id on the initialize answer")?
        .to_owned();
    let session = ("Mcp-Session-Id", sid.as_str());
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let r = conn.send(
        "POST",
        &path,
        &[ACCEPT, JSON, session, VERSION],
        &initialized.to_string(),
    )?;
    ensure!(r.status == 202, "initialized: HTTP {} {}", r.status, r.body);
    let warm = (n / 10).max(5);
    let mut times = Vec::with_capacity(n);
    for id in 1..=(warm + n) as u64 {
        let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                          "params": {"name": "echo", "arguments": {"text": "x".repeat(10)}}});
        let t = Instant::now();
        let r = conn.send(
            "POST",
            &path,
            &[ACCEPT, JSON, session, VERSION],
            &call.to_string(),
        )?;
        let elapsed = t.elapsed();
        let answered = sse_events(&r.body)
            .iter()
            .any(|(_, m)| m["id"] == id && m.get("result").is_some());
        ensure!(
            r.status == 200 && answered,
            "call {id}: HTTP {} {}",
            r.status,
            r.body
        );
        if id > warm as u64 {
            times.push(elapsed);
        }
    }
    let _ = conn.send("DELETE", &path, &[session, VERSION], "");
    times.sort();
    Ok([pct(&times, 50), pct(&times, 90), pct(&times, 99)])
}

/// Opens a session on `conn`; its id.
fn open_session(conn: &mut Conn, path: &str) -> Result<String> {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "bench", "version": "1"}}});
    let r = conn.send("POST", path, &[ACCEPT, JSON], &init.to_string())?;
    ensure!(r.status == 200, "initialize: HTTP {} {}", r.status, r.body);
    let sid = r
        .header("mcp-session-id")
        .context("no Mcp-Session-Id on the initialize answer")?
        .to_owned();
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let r = conn.send(
        "POST",
        path,
        &[ACCEPT, JSON, ("Mcp-Session-Id", sid.as_str()), VERSION],
        &initialized.to_string(),
    )?;
    ensure!(r.status == 202, "initialized: HTTP {} {}", r.status, r.body);
    Ok(sid)
}

/// Calls per second with `window` calls in flight in one session: `window` kept-alive
/// HTTP/1.1 connections (a host's connection pool), each sending its share of `total` small
/// `tools/call`s one after another.
pub(crate) fn pipelined(addr: SocketAddr, tool: &str, total: usize, window: usize) -> Result<f64> {
    let path = format!("/mcp/{tool}");
    let mut first = Conn::open(addr)?;
    let sid = open_session(&mut first, &path)?;
    let per = total / window;
    let mut conns = (0..window)
        .map(|_| Conn::open(addr))
        .collect::<Result<Vec<_>>>()?;
    let start = Instant::now();
    std::thread::scope(|s| {
        let handles: Vec<_> = conns
            .iter_mut()
            .enumerate()
            .map(|(w, conn)| {
                let (path, sid) = (&path, &sid);
                s.spawn(move || -> Result<()> {
                    for k in 0..per {
                        let id = (w * per + k + 1) as u64;
                        let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                            "params": {"name": "echo", "arguments": {"text": "x".repeat(10)}}});
                        let r = conn.send(
                            "POST",
                            path,
                            &[ACCEPT, JSON, ("Mcp-Session-Id", sid.as_str()), VERSION],
                            &call.to_string(),
                        )?;
                        ensure!(r.status == 200, "call {id}: HTTP {} {}", r.status, r.body);
                    }
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .map_err(|_| anyhow::anyhow!("a bench client panicked"))?
        })
    })?;
    let rate = (per * window) as f64 / start.elapsed().as_secs_f64();
    let _ = first.send(
        "DELETE",
        &path,
        &[("Mcp-Session-Id", sid.as_str()), VERSION],
        "",
    );
    Ok(rate)
}

//! The relay's Streamable HTTP carrier driven as an HTTP host drives it: each call a POST
//! answered by one JSON body (an answer within 50 ms) or an SSE stream that ends with it, on
//! kept-alive HTTP/1.1 connections.
//! Sequential round trips on one connection; calls in flight at once in one session, one per
//! connection of a pool (HTTP/1.1 carries one request at a time per connection); and a new
//! connection to the first `initialize` answer (the baseline of a shim's start-up).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::target::{live_children, CpuMark, CpuPerOp, Procs};
use anyhow::{ensure, Context, Result};
use mcp_bridge_tests::http_raw::Conn;
use serde_json::json;

const ACCEPT: (&str, &str) = ("Accept", "application/json, text/event-stream");
const JSON: (&str, &str) = ("Content-Type", "application/json");
const VERSION: (&str, &str) = ("MCP-Protocol-Version", "2025-11-25");

pub(crate) fn pct(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() - 1) * p / 100]
}

/// A new connection and session: the `initialize` exchange; returns the session id.
fn open_session(addr: SocketAddr, path: &str) -> Result<(Conn, String)> {
    let mut conn = Conn::open(addr)?;
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "bench", "version": "1"}}});
    let r = conn.send("POST", path, &[ACCEPT, JSON], &init.to_string())?;
    ensure!(r.status == 200, "initialize: HTTP {} {}", r.status, r.body);
    let sid = r
        .header("mcp-session-id")
        .context("no Mcp-Session-Id on the initialize answer")?
        .to_owned();
    Ok((conn, sid))
}

/// A new connection to the first `initialize` answer, median of `n` (each session is ended
/// with DELETE).
pub(crate) fn start_to_answer(addr: SocketAddr, tool: &str, n: usize) -> Result<Duration> {
    let path = format!("/mcp/{tool}");
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let (mut conn, sid) = open_session(addr, &path)?;
        times.push(t.elapsed());
        let _ = conn.send("DELETE", &path, &[("Mcp-Session-Id", &sid), VERSION], "");
    }
    times.sort();
    Ok(pct(&times, 50))
}

/// One session on one kept-alive connection, past the handshake.
pub(crate) struct HttpSession {
    conn: Conn,
    sid: String,
    path: String,
    next_id: u64,
}

impl HttpSession {
    pub(crate) fn open(addr: SocketAddr, tool: &str) -> Result<HttpSession> {
        let path = format!("/mcp/{tool}");
        let (mut conn, sid) = open_session(addr, &path)?;
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let session = ("Mcp-Session-Id", sid.as_str());
        let r = conn.send(
            "POST",
            &path,
            &[ACCEPT, JSON, session, VERSION],
            &initialized.to_string(),
        )?;
        ensure!(r.status == 202, "initialized: HTTP {} {}", r.status, r.body);
        Ok(HttpSession {
            conn,
            sid,
            path,
            next_id: 1,
        })
    }

    /// One small `echo` call: the time to its answer.
    pub(crate) fn call(&mut self) -> Result<Duration> {
        let id = self.next_id;
        self.next_id += 1;
        let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                          "params": {"name": "echo", "arguments": {"text": "x".repeat(10)}}});
        let session = ("Mcp-Session-Id", self.sid.as_str());
        let t = Instant::now();
        let r = self.conn.send(
            "POST",
            &self.path,
            &[ACCEPT, JSON, session, VERSION],
            &call.to_string(),
        )?;
        let elapsed = t.elapsed();
        let answered = r
            .messages()
            .iter()
            .any(|(_, m)| m["id"] == id && m.get("result").is_some());
        ensure!(
            r.status == 200 && answered,
            "call {id}: HTTP {} {}",
            r.status,
            r.body
        );
        Ok(elapsed)
    }

    /// Ends the session (DELETE).
    pub(crate) fn close(mut self) {
        let session = ("Mcp-Session-Id", self.sid.as_str());
        let _ = self
            .conn
            .send("DELETE", &self.path, &[session, VERSION], "");
    }
}

/// p50, p90 and p99 of `n` sequential small `tools/call` round trips to `tool`.
pub(crate) fn sequential(addr: SocketAddr, tool: &str, n: usize) -> Result<[Duration; 3]> {
    let mut s = HttpSession::open(addr, tool)?;
    for _ in 0..(n / 10).max(5) {
        s.call()?;
    }
    let mut times = (0..n).map(|_| s.call()).collect::<Result<Vec<_>>>()?;
    s.close();
    times.sort();
    Ok([pct(&times, 50), pct(&times, 90), pct(&times, 99)])
}

/// Calls per second with `window` calls in flight in one session: `window` kept-alive
/// HTTP/1.1 connections (a host's connection pool), each sending its share of `total` small
/// `tools/call`s one after another.
pub(crate) fn pipelined(
    addr: SocketAddr,
    relay: u32,
    tool: &str,
    total: usize,
    window: usize,
) -> Result<(f64, CpuPerOp)> {
    let tools_before = live_children(relay);
    let path = format!("/mcp/{tool}");
    let (mut first, sid) = open_session(addr, &path)?;
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let r = first.send(
        "POST",
        &path,
        &[ACCEPT, JSON, ("Mcp-Session-Id", sid.as_str()), VERSION],
        &initialized.to_string(),
    )?;
    ensure!(r.status == 202, "initialized: HTTP {} {}", r.status, r.body);
    let per = total / window;
    let mut conns = (0..window)
        .map(|_| Conn::open(addr))
        .collect::<Result<Vec<_>>>()?;
    let cpu = CpuMark::now(Procs::relay_session(relay, &tools_before));
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
    let cpu = cpu.per_op(per * window);
    let _ = first.send(
        "DELETE",
        &path,
        &[("Mcp-Session-Id", sid.as_str()), VERSION],
        "",
    );
    Ok((rate, cpu))
}

//! The session-less revision (2026-07-28) at `/mcp/<tool>`: [`calls`] — the Python SDK in
//! `auto` mode against mcp-server-time (modern era, no `initialize`) and in `legacy` mode, raw
//! HTTP for the header checks (-32020), an unsupported version (-32022 with the list),
//! GET/DELETE (405), the same id from two clients at once, per-user processes and their limit,
//! a handshake-era tool (modern clients are told to fall back); [`params`] — `Mcp-Param-*`
//! headers checked against the body (raw HTTP and the Python SDK); [`streams`] — a stream closed
//! before its answer (the tool gets `notifications/cancelled`), `subscriptions/listen`, a
//! drain, the idle end. Shared here: the request helpers.

mod calls;
mod params;
mod streams;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use mcp_bridge_tests::http_raw::{raw, sse_events, Resp};
use mcp_bridge_tests::{fixture_tool, tool_table, Peers, Relay, TempDir};
use serde_json::Value;

pub(super) const MODERN: &str = "2026-07-28";

/// A relay hosting the pinned `mcp-server-time` as `time` (a tool that speaks 2026-07-28),
/// with `extra` in its `[[tool]]` table.
pub(super) fn time_relay(extra: &str) -> Result<Relay> {
    let peers = Peers::require();
    Relay::start(&tool_table(
        "time",
        &peers.venv_bin.join("mcp-server-time"),
        &[],
        extra,
    ))
}

/// A relay hosting the test fixture in its 2026-07-28 mode as `fx`, writing each
/// `notifications/cancelled` it reads to the returned file (in the returned folder).
pub(super) fn fixture_relay_with_cancels() -> Result<(Relay, TempDir, PathBuf)> {
    let dir = TempDir::new();
    let cancels = dir.path().join("cancels");
    let cancels_arg = cancels.display().to_string();
    let relay = Relay::start(&fixture_tool(
        "fx",
        &["--modern", "--cancels", &cancels_arg],
        "",
    ))?;
    Ok((relay, dir, cancels))
}

/// A 2026-07-28 request body: `params` (a JSON object's members, may be empty) plus `_meta`.
pub(super) fn body(id: &str, method: &str, params: &str, version: &str) -> String {
    let sep = if params.is_empty() { "" } else { "," };
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{{{params}{sep}"_meta":{{"io.modelcontextprotocol/protocolVersion":"{version}","io.modelcontextprotocol/clientCapabilities":{{}}}}}}}}"#
    )
}

/// POSTs a modern request with its metadata headers (`name`: `Mcp-Name`), on its own
/// connection; `extra` headers after them.
pub(super) fn post(
    addr: SocketAddr,
    tool: &str,
    body: &str,
    method: &str,
    name: Option<&str>,
    extra: &[(&str, &str)],
) -> Result<Resp> {
    let mut h = vec![
        ("Accept", "application/json, text/event-stream"),
        ("Content-Type", "application/json"),
        ("MCP-Protocol-Version", MODERN),
        ("Mcp-Method", method),
    ];
    if let Some(n) = name {
        h.push(("Mcp-Name", n));
    }
    h.extend_from_slice(extra);
    raw(addr, "POST", &format!("/mcp/{tool}"), &h, body)
}

/// POSTs a modern `tools/call` of `name` with `args` (a JSON object) as request `id`, its
/// `Mcp-Method`/`Mcp-Name` headers matching the body, no other header.
pub(super) fn tool_call(
    addr: SocketAddr,
    tool: &str,
    id: &str,
    name: &str,
    args: &str,
) -> Result<Resp> {
    let params = format!(r#""name":"{name}","arguments":{args}"#);
    let call = body(id, "tools/call", &params, MODERN);
    post(addr, tool, &call, "tools/call", Some(name), &[])
}

/// The JSON-RPC message of an answer, JSON or the last SSE event.
pub(super) fn answer(r: &Resp) -> Result<Value> {
    if r.header("content-type")
        .is_some_and(|c| c.starts_with("text/event-stream"))
    {
        let events = sse_events(&r.body);
        return events
            .last()
            .map(|(_, v)| v.clone())
            .context("no SSE event");
    }
    Ok(serde_json::from_str(&r.body)?)
}

pub(super) fn text_of(v: &Value) -> String {
    v["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// An open SSE answer on a raw connection, read as events arrive.
pub(super) struct Listening {
    s: std::net::TcpStream,
    seen: String,
}

impl Listening {
    pub(super) fn open(
        addr: SocketAddr,
        tool: &str,
        body: &str,
        method: &str,
    ) -> Result<Listening> {
        let mut s = std::net::TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        let req = format!(
            "POST /mcp/{tool} HTTP/1.1\r\nHost: test\r\nAccept: application/json, text/event-stream\r\nContent-Type: application/json\r\nMCP-Protocol-Version: {MODERN}\r\nMcp-Method: {method}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes())?;
        Ok(Listening {
            s,
            seen: String::new(),
        })
    }

    /// The next message whose `method` is `method` (each SSE event is one chunk: its `data:`
    /// line is whole).
    pub(super) fn next(&mut self, method: &str) -> Result<Value> {
        self.next_where(method, |v| v["method"] == method)
    }

    /// The next message `wanted` accepts (`what` names it in errors).
    pub(super) fn next_where(
        &mut self,
        what: &str,
        wanted: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let mut lines = self.seen.split_inclusive('\n');
            let mut used = 0;
            let found = lines.find_map(|l| {
                used += l.len();
                let v = serde_json::from_str::<Value>(l.strip_prefix("data: ")?.trim_end()).ok()?;
                wanted(&v).then_some(v)
            });
            if let Some(v) = found {
                // Forget what was read up to it.
                self.seen.drain(..used);
                return Ok(v);
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "no {what} on the stream: {}",
                self.seen
            );
            let mut buf = [0u8; 4096];
            let n = self.s.read(&mut buf)?;
            anyhow::ensure!(n > 0, "the stream ended before {what}: {}", self.seen);
            self.seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
}

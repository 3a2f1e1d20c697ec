//! Abuse: clients and tools that misbehave on purpose — flood without reading, overrun the
//! window, stop reading stdin, hold pipes open, send huge names, forge log lines, resume at an
//! impossible point. Each test measures what the relay does (its resident memory from
//! /proc/<pid>/status, its process table, /metrics, its log) against a stated bound, and prints
//! the figure.
//!
//! Attack loops run for a fixed time; a loop also stops early when the relay's memory has
//! grown far past the bound (the test has then failed anyway, and the machine is shared).
//!
//! This module holds what the tests share: the relays they attack, the memory baseline and
//! growth, and the flood loop. The tests are in one module a theme.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod floods;
mod logs;
mod processes;
mod wedged;
mod worst_case;

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::SinkExt;
use mcp_bridge_tests::ws::{self, Ws};
use mcp_bridge_tests::{demo_tool, mib, Ide, Relay};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

const MIB: u64 = 1024 * 1024;

/// The memory bound of one session carrying messages of 2-4 MiB: docs/architecture.md,
/// "Bounds": the resume buffer (`resume_buffer_bytes`, 16 MiB), plus room for a dozen 4 MiB
/// messages in flight between socket, session and tool.
const GROWTH_BOUND: u64 = 64 * MIB;

/// Attack loops stop once the relay has grown by this much (far past every bound).
const SAFETY_CAP: u64 = 256 * MIB;

/// A relay hosting the demo tool as `demo`, with extra `[limits]` lines.
fn demo_relay(limits: &str) -> Result<Relay> {
    Relay::start_with(limits, &demo_tool("demo", ""), None)
}

/// The same at the relay's default log level (`info`, as deployed) instead of the harness's
/// `debug`: for floods, where a debug line per message would have the relay spend its time
/// writing its log rather than doing what is measured. Returns the relay, its [`baseline`]
/// and the demo tool's URL.
fn quiet_demo_relay(limits: &str) -> Result<(Relay, u64, String)> {
    let config = format!(
        "listen = \"127.0.0.1:0\"\n[limits]\nkill_grace_ms = 500\n{limits}\n\n{}",
        demo_tool("demo", "")
    );
    let relay = Relay::start_config(&config, &[("RUST_LOG", "info")])?;
    let base = baseline(&relay, "demo")?;
    let url = relay.url("demo");
    Ok((relay, base, url))
}

/// One ordinary session through bridge-client: initialize, then `echo`, each answered within
/// `limit`. Returns how long it took.
fn normal_session(relay: &Relay, limit: Duration) -> Result<Duration> {
    let started = Instant::now();
    let mut ide = Ide::connect(&relay.url("demo"), &[])?;
    ide.send(
        &json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "abuse-tests", "version": "0"}}}),
    )?;
    ide.recv_until(limit, |m| m["id"] == json!(0))
        .context("initialize unanswered")?;
    ide.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))?;
    ide.send(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": "still serving"}}}))?;
    let echo = ide
        .recv_until(limit, |m| m["id"] == json!(1))
        .context("echo unanswered")?;
    if echo.pointer("/result/content/0/text") != Some(&json!("still serving")) {
        bail!("echo answered {echo}");
    }
    ide.close_stdin();
    let _ = ide.wait(Duration::from_secs(5));
    Ok(started.elapsed())
}

/// The relay's resident memory after one ordinary session has come and gone (threads,
/// allocator arenas and the demo tool's pipes warmed up). The relay's peak (VmHWM) is reset to
/// it, so that [`growth`] measures what happens after this point only, not a peak of start-up
/// or of the warm-up session.
fn baseline(relay: &Relay, tool: &str) -> Result<u64> {
    if tool == "demo" {
        normal_session(relay, Duration::from_secs(10))?;
    }
    relay.wait_idle(tool, Duration::from_secs(10))?;
    let peak_before = relay.peak_rss();
    // Linux: writing 5 to clear_refs resets VmHWM to the current VmRSS.
    std::fs::write(format!("/proc/{}/clear_refs", relay.pid()), "5")
        .context("resetting the relay's peak RSS")?;
    let rss = relay.rss();
    println!(
        "relay baseline RSS {:.1} MiB (peak reset from {:.1} MiB)",
        mib(rss),
        mib(peak_before)
    );
    Ok(rss)
}

/// A wait's outcome in one line, for messages.
fn outcome<T: std::fmt::Debug>(r: &Result<T>) -> String {
    match r {
        Ok(v) => format!("yes ({v:?})"),
        Err(e) => format!("no ({e:#})"),
    }
}

/// How far the relay's peak memory (VmHWM) has grown past `base`.
fn growth(relay: &Relay, base: u64) -> u64 {
    relay.peak_rss().saturating_sub(base)
}

/// Whether the relay's resident memory has grown past [`SAFETY_CAP`]: when an attack loop stops.
fn past_safety_cap(relay: &Relay, base: u64) -> bool {
    relay.rss().saturating_sub(base) > SAFETY_CAP
}

/// Waits up to `limit` for the relay to hold no session of `tool` and no tool process; returns
/// the outcome and how long it waited.
fn wait_freed(relay: &Relay, tool: &str, limit: Duration) -> (Result<()>, Duration) {
    let left = Instant::now();
    let freed = relay.wait_idle(tool, limit);
    (freed, left.elapsed())
}

/// What a flood did: how many messages went into the socket, and whether the relay cut the
/// connection (a relay may drop an abusive client; that is not a failure of these tests).
struct Flooded {
    sent: u64,
    cut: Option<String>,
}

impl std::fmt::Display for Flooded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.sent)?;
        if let Some(why) = &self.cut {
            write!(f, " (then the relay closed the connection: {why})")?;
        }
        Ok(())
    }
}

/// Feeds messages made by `next` into `ws` for `duration` (or until `next` has no more, or
/// `stop` says so, or the relay closes the connection), never reading. A send blocked by
/// backpressure just waits for the deadline.
async fn flood(
    ws: &mut Ws,
    duration: Duration,
    mut next: impl FnMut(u64) -> Option<Message>,
    mut stop: impl FnMut() -> bool,
) -> Flooded {
    let until = tokio::time::Instant::now() + duration;
    let mut sent = 0u64;
    let mut checked = Instant::now();
    let mut cut = None;
    while tokio::time::Instant::now() < until {
        let Some(msg) = next(sent) else { break };
        match tokio::time::timeout_at(until, ws.feed(msg)).await {
            Err(_) => break,
            Ok(Err(e)) => {
                cut = Some(e.to_string());
                break;
            }
            Ok(Ok(())) => {}
        }
        sent += 1;
        if checked.elapsed() >= Duration::from_millis(50) {
            checked = Instant::now();
            match tokio::time::timeout_at(until, ws.flush()).await {
                Err(_) => break,
                Ok(Err(e)) => {
                    cut = Some(e.to_string());
                    break;
                }
                Ok(Ok(())) => {}
            }
            if stop() {
                break;
            }
        }
    }
    if cut.is_none() {
        if let Ok(Err(e)) = tokio::time::timeout_at(until, ws.flush()).await {
            cut = Some(e.to_string());
        }
    }
    Flooded { sent, cut }
}

/// Connects with `connect`, [`flood`]s the connection with `next` for `duration` (stopping
/// early past [`SAFETY_CAP`]), then leaves by dropping it.
fn flood_and_leave(
    relay: &Relay,
    base: u64,
    connect: impl Future<Output = Result<Ws>>,
    duration: Duration,
    next: impl FnMut(u64) -> Option<Message>,
) -> Result<Flooded> {
    ws::runtime().block_on(async {
        let mut ws = connect.await?;
        let sent = flood(&mut ws, duration, next, || past_safety_cap(relay, base)).await;
        drop(ws);
        anyhow::Ok(sent)
    })
}

//! Abuse: clients and tools that misbehave on purpose — flood without reading, overrun the
//! window, stop reading stdin, hold pipes open, send huge names, forge log lines, resume at an
//! impossible point. Each test measures what the relay does (its resident memory from
//! /proc/<pid>/status, its process table, /metrics, its log) against a stated bound, and prints
//! the figure.
//!
//! Attack loops run for a fixed time; a loop also stops early when the relay's memory has
//! grown far past the bound (the test has then failed anyway, and the machine is shared).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::SinkExt;
use mcp_bridge_tests::ws::{self, Upgrade, V1Frame, Ws};
use mcp_bridge_tests::{
    children_of, demo_tool, fixture_tool, http_get, mib, signal, wait_until, Ide, Relay, TempDir,
};
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

const MIB: u64 = 1024 * 1024;

/// The memory bound of one session carrying messages of 2-4 MiB: docs/architecture.md,
/// "Bounds": the resume buffer (`resume_buffer_bytes`, 16 MiB), plus room for a dozen 4 MiB
/// messages in flight between socket, session and tool.
const GROWTH_BOUND: u64 = 64 * MIB;

/// Attack loops stop once the relay has grown by this much (far past every bound).
const SAFETY_CAP: u64 = 256 * MIB;

/// The memory bound of the A1 floods of one session: docs/architecture.md, "Bounds": what the
/// relay queues for the client, "the relay's own replies included", is bounded by
/// `resume_buffer_bytes` (16 MiB); plus 8 MiB for everything else (as in A4). The answers to
/// `x` are ~100 bytes: the resume buffer's 1024 messages of them are ~100 KiB.
const A1_BOUND: u64 = 24 * MIB;

/// CPU time the relay has used, in clock ticks (utime + stime of /proc/<pid>/stat).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rfind(')').map_or("", |i| &stat[i + 1..]);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

/// After a flood: lets the relay work through what is already in its socket buffers, i.e.
/// waits until its CPU time stops advancing (under 3 ticks in 300 ms), or its peak memory has
/// grown past `stop_at` (the test has clearly failed), or `limit` passes. Returns how long it
/// waited.
fn settle(relay: &Relay, base: u64, stop_at: u64, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut window = std::collections::VecDeque::from([(Instant::now(), cpu_ticks(relay.pid()))]);
    while started.elapsed() < limit && growth(relay, base) <= stop_at {
        std::thread::sleep(Duration::from_millis(50));
        let now = (Instant::now(), cpu_ticks(relay.pid()));
        window.push_back(now);
        while window.len() > 1 && now.0 - window[0].0 > Duration::from_millis(300) {
            window.pop_front();
        }
        if now.0 - window[0].0 >= Duration::from_millis(250) && now.1 - window[0].1 < 3 {
            break;
        }
    }
    started.elapsed()
}

/// A relay hosting the demo tool as `demo`, with extra `[limits]` lines.
fn demo_relay(limits: &str) -> Result<Relay> {
    Relay::start_with(limits, &demo_tool("demo", ""), None)
}

/// The same at the relay's default log level (`info`, as deployed) instead of the harness's
/// `debug`: for floods, where a debug line per message would have the relay spend its time
/// writing its log rather than doing what is measured.
fn quiet_demo_relay(limits: &str) -> Result<Relay> {
    let config = format!(
        "listen = \"127.0.0.1:0\"\n[limits]\nkill_grace_ms = 500\n{limits}\n\n{}",
        demo_tool("demo", "")
    );
    Relay::start_config(&config, &[("RUST_LOG", "info")])
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

/// Runs an A1-style flood on `ws` for 5 s, then checks a second, ordinary session is served
/// while the flooding connection is still open, and the memory bound.
fn flood_then_check(
    relay: &Relay,
    base: u64,
    what: &str,
    connect: impl std::future::Future<Output = Result<Ws>>,
    next: impl FnMut(u64) -> Option<Message>,
) -> Result<()> {
    let rt = ws::runtime();
    let (ws, sent) = rt.block_on(async {
        let mut ws = connect.await?;
        let sent = flood(&mut ws, Duration::from_secs(5), next, || {
            relay.rss().saturating_sub(base) > SAFETY_CAP
        })
        .await;
        anyhow::Ok((ws, sent))
    })?;
    let flooded = growth(relay, base);
    let settled = settle(relay, base, 2 * A1_BOUND, Duration::from_secs(6));
    let grown = growth(relay, base);
    let served = normal_session(relay, Duration::from_secs(10));
    let grown_after = growth(relay, base);
    println!(
        "{what}: {sent} messages sent in 5 s, never reading; relay peak RSS grew {:.1} MiB by \
         then, {:.1} MiB {settled:?} later, {:.1} MiB after a second session (bound {:.0} MiB); \
         second session: {served:?}",
        mib(flooded),
        mib(grown),
        mib(grown_after),
        mib(A1_BOUND),
    );
    drop(ws);
    let served = served.context("the relay did not serve a second, ordinary session")?;
    assert!(
        grown_after <= A1_BOUND,
        "{what}: the relay's peak RSS grew {:.1} MiB over its {:.1} MiB baseline (bound {:.0} \
         MiB) from {sent} messages sent in 5 s by a client that never reads (second session \
         served in {served:?})",
        mib(grown_after),
        mib(base),
        mib(A1_BOUND)
    );
    Ok(())
}

/// A1 (plain). docs/security.md, threat model: an unauthenticated network attacker "should not
/// be able to … exhaust the relay's memory"; and "Every queue between WebSocket, session and
/// tool is bounded (backpressure)". Each `x` is answered with a parse error (docs/protocol.md,
/// bad input), and a client that never reads must not make those answers pile up.
///
/// Bound: relay peak RSS ≤ baseline + 24 MiB ([`A1_BOUND`]) after 5 s of `x` text frames on a
/// plain `mcp` connection that is never read, and while the relay works through what it has
/// received (at most 6 s more); a second session is served meanwhile.
#[test]
fn a1_plain_client_flooding_invalid_frames_without_reading_is_bounded() -> Result<()> {
    let relay = quiet_demo_relay("")?;
    let base = baseline(&relay, "demo")?;
    let url = relay.url("demo");
    flood_then_check(
        &relay,
        base,
        "plain `mcp` client sending `x`",
        ws::connect_plain(&url),
        |_| Some(Message::text("x")),
    )
}

/// A1 (v1). As above on `mcp-bridge.v1`: DATA frames (seq 1, 2, …, ack 0) whose payload is `x`.
/// docs/protocol.md: the relay's buffer of unacknowledged messages is bounded by
/// `resume_buffer_messages` / `resume_buffer_bytes` (1024 messages, 16 MiB).
///
/// Bound: relay peak RSS ≤ baseline + 24 MiB ([`A1_BOUND`]) after 5 s and while the relay
/// works through what it has received (at most 6 s more); a second session is served meanwhile.
#[test]
fn a1_v1_client_flooding_invalid_data_frames_without_reading_is_bounded() -> Result<()> {
    let relay = quiet_demo_relay("")?;
    let base = baseline(&relay, "demo")?;
    let url = relay.url("demo");
    flood_then_check(
        &relay,
        base,
        "v1 client sending DATA `x`",
        async { Ok(ws::connect_v1(&url).await?.0) },
        |n| Some(ws::data(n + 1, 0, b"x")),
    )
}

/// A1 (batches). docs/protocol.md, bad input: "a batch (JSON array) → an array of `-32600`
/// errors, one per request inside". A 4 MiB batch of tiny requests is ~110,000 requests, whose
/// errors (~150 bytes each) make an answer of ~16 MiB, four times the batch; a client that
/// sends such batches and never reads must not make the relay hold the answers without bound.
///
/// Bound: relay peak RSS ≤ baseline + 24 MiB ([`A1_BOUND`]) after 5 s of batches (just under
/// the 4 MiB message limit) on a plain connection never read, and while the relay works
/// through them (at most 6 s more); a second session is served meanwhile.
#[test]
fn a1_batch_amplification_without_reading_is_bounded() -> Result<()> {
    let relay = quiet_demo_relay("")?;
    let base = baseline(&relay, "demo")?;
    let url = relay.url("demo");
    let one = r#"{"jsonrpc":"2.0","id":1,"method":"a"}"#;
    let count = (4 * MIB as usize - 4096) / (one.len() + 1);
    let batch = format!("[{}]", vec![one; count].join(","));
    println!("batch: {count} requests, {} bytes", batch.len());
    flood_then_check(
        &relay,
        base,
        "plain `mcp` client sending 4 MiB batches",
        ws::connect_plain(&url),
        |_| Some(Message::text(batch.clone())),
    )
}

/// A2. docs/protocol.md, sequence numbers and acks: "A client never has more than its window
/// (1024 messages) unacknowledged, so the stash (4096 messages, 64 MiB …) is never full for a
/// compliant client; one that overruns it ends its session." And the session lifecycle: a
/// detached session ends when `resume_window_ms` passes, its tool ended and reaped.
///
/// A v1 client sends 10,000 DATA frames (calls to the demo tool's `slow`, 100 s each) and never
/// reads, so it never learns of the relay's acks; then it disconnects.
///
/// Bound: within 5 s of the disconnect (resume window 1.5 s + 2 × kill grace 0.5 s + 2.5 s)
/// the relay holds no session (`mcp_bridge_sessions_active`) and no tool process; relay peak
/// RSS ≤ baseline + 64 MiB.
#[test]
fn a2_v1_client_overrunning_its_window_without_reading_acks_is_freed() -> Result<()> {
    let relay = quiet_demo_relay("resume_window_ms = 1500\nshutdown_grace_ms = 1000")?;
    let base = baseline(&relay, "demo")?;
    let url = relay.url("demo");
    let rt = ws::runtime();
    let sent = rt.block_on(async {
        let (mut ws, _welcome) = ws::connect_v1(&url).await?;
        let sent = flood(
            &mut ws,
            Duration::from_secs(4),
            |n| {
                (n < 10_000).then(|| {
                    let call = json!({"jsonrpc": "2.0", "id": n + 1, "method": "tools/call",
                        "params": {"name": "slow", "arguments": {"steps": 1000, "delay_ms": 100}}});
                    ws::data(n + 1, 0, call.to_string().as_bytes())
                })
            },
            || relay.rss().saturating_sub(base) > SAFETY_CAP,
        )
        .await;
        drop(ws);
        anyhow::Ok(sent)
    })?;
    let left = Instant::now();
    let freed = relay.wait_idle("demo", Duration::from_secs(5));
    let took = left.elapsed();
    let grown = growth(&relay, base);
    println!(
        "v1 client sent {sent} of 10000 frames in ≤ 4 s without reading, then left; freed: {} \
         after {took:?}; relay peak RSS grew {:.1} MiB",
        outcome(&freed),
        mib(grown)
    );
    freed.context(format!(
        "the wedged session was not freed within 5 s of its client leaving ({sent} frames sent; \
         relay peak RSS grew {:.1} MiB)",
        mib(grown)
    ))?;
    assert!(
        grown <= GROWTH_BOUND,
        "relay peak RSS grew {:.1} MiB (bound {:.0} MiB)",
        mib(grown),
        mib(GROWTH_BOUND)
    );
    Ok(())
}

/// A3. docs/protocol.md, subprotocol `mcp`: "There is no resume: when the connection ends, the
/// session ends and its tool is ended"; docs/security.md: a malicious or buggy tool "should not
/// be able to … wedge the relay"; "Every queue between WebSocket, session and tool is bounded
/// (backpressure)".
///
/// A tool that never reads its stdin; a plain client sends up to 48 requests of 2 MiB (for at
/// most 4 s), then leaves.
///
/// Bound: within 4 s of the client leaving the relay holds no session and no tool process
/// (plain sessions end with their connection; + 2 × kill grace 0.5 s); relay peak RSS ≤
/// baseline + 64 MiB.
#[test]
fn a3_tool_that_never_reads_stdin_is_ended_when_the_client_leaves() -> Result<()> {
    let relay = Relay::start(&fixture_tool("deaf", &["--never-read"], ""))?;
    let base = baseline(&relay, "deaf")?;
    let url = relay.url("deaf");
    let blob = "a".repeat(2 * MIB as usize);
    let rt = ws::runtime();
    let sent = rt.block_on(async {
        let mut ws = ws::connect_plain(&url).await?;
        let sent = flood(
            &mut ws,
            Duration::from_secs(4),
            |n| {
                (n < 48).then(|| {
                    Message::text(format!(
                        r#"{{"jsonrpc":"2.0","id":{},"method":"tools/call","params":{{"name":"anything","arguments":{{"blob":"{blob}"}}}}}}"#,
                        n + 1
                    ))
                })
            },
            || relay.rss().saturating_sub(base) > SAFETY_CAP,
        )
        .await;
        drop(ws);
        anyhow::Ok(sent)
    })?;
    let left = Instant::now();
    let freed = relay.wait_idle("deaf", Duration::from_secs(4));
    let took = left.elapsed();
    let grown = growth(&relay, base);
    println!(
        "plain client sent {sent} requests of 2 MiB to a tool that never reads, then left; \
         freed: {} after {took:?}; relay peak RSS grew {:.1} MiB",
        outcome(&freed),
        mib(grown)
    );
    let freed = freed.map_err(|e| {
        e.context(format!(
            "the session was not ended within 4 s of its client leaving ({sent} requests of \
             2 MiB sent; relay peak RSS grew {:.1} MiB)",
            mib(grown)
        ))
    });
    assert!(
        grown <= GROWTH_BOUND,
        "relay peak RSS grew {:.1} MiB (bound {:.0} MiB) from {sent} requests of 2 MiB to a \
         tool that never reads; session freed: {}",
        mib(grown),
        mib(GROWTH_BOUND),
        outcome(&freed)
    );
    freed
}

/// A4. docs/architecture.md, "Bounds": what waits for the client is bounded by
/// `resume_buffer_bytes` (16 MiB) and one message past it; what waits for the tool by its
/// queue (4 MiB); then one message waits in the client's window, one is being written, one line
/// of the tool's is being read.
///
/// Two plain sessions each call the demo tool's `echo` with 1 MiB of text, over and over, for
/// 4 s, and never read the answers.
///
/// Bound: relay peak RSS growth per session ≤ 16 MiB (the resume buffer) + 8 MiB (the queue to
/// the tool and a few messages in flight) = 24 MiB.
#[test]
fn a4_large_answers_never_read_stay_within_the_documented_per_session_bound() -> Result<()> {
    const SESSIONS: u64 = 2;
    const PER_SESSION: u64 = 24 * MIB;
    let relay = quiet_demo_relay("")?;
    let base = baseline(&relay, "demo")?;
    let url = relay.url("demo");
    let text = "a".repeat(MIB as usize);
    let rt = ws::runtime();
    let sent = rt.block_on(async {
        let attack = || {
            let url = url.clone();
            let text = text.clone();
            let relay = &relay;
            async move {
                let mut ws = ws::connect_plain(&url).await?;
                let sent = flood(
                    &mut ws,
                    Duration::from_secs(4),
                    |n| {
                        Some(Message::text(format!(
                            r#"{{"jsonrpc":"2.0","id":{},"method":"tools/call","params":{{"name":"echo","arguments":{{"text":"{text}"}}}}}}"#,
                            n + 1
                        )))
                    },
                    || relay.rss().saturating_sub(base) > SAFETY_CAP,
                )
                .await;
                anyhow::Ok((ws, sent))
            }
        };
        let (a, b) = tokio::join!(attack(), attack());
        let (a, b) = (a?, b?);
        let grown = growth(&relay, base);
        drop((a.0, b.0));
        anyhow::Ok((a.1.sent + b.1.sent, grown))
    })?;
    let (sent, grown) = sent;
    let per = grown / SESSIONS;
    println!(
        "{SESSIONS} plain sessions sent {sent} echo calls of 1 MiB in 4 s, never reading; relay \
         peak RSS grew {:.1} MiB, {:.1} MiB per session (bound {:.0} MiB per session)",
        mib(grown),
        mib(per),
        mib(PER_SESSION)
    );
    relay.wait_idle("demo", Duration::from_secs(10))?;
    assert!(
        per <= PER_SESSION,
        "the relay grew {:.1} MiB per session ({:.1}x the documented 16 MiB; bound {:.0} MiB) \
         holding 1 MiB echo answers for {SESSIONS} clients that never read ({sent} calls sent)",
        mib(per),
        per as f64 / (16 * MIB) as f64,
        mib(PER_SESSION)
    );
    Ok(())
}

/// A5. docs/security.md: "Session limits … `max_sessions_per_user` (429) — checked before a
/// process is spawned", and the checklist: "Each session is a process; a user may hold
/// `max_sessions_per_user` of them."
///
/// max_sessions_per_user = 8, kill grace 1 s, and a tool that ignores SIGTERM and EOF on stdin
/// for 4 s (so it is slow to exit); 4 clients connect (plain) and drop the connection at once,
/// in a loop, for 3 s.
///
/// Bound: the relay never has more than 8 live (non-zombie) tool processes, sampled every 5 ms.
#[test]
fn a5_session_limits_bound_tool_processes_under_connect_reset_churn() -> Result<()> {
    const LIMIT: usize = 8;
    let config = format!(
        "listen = \"127.0.0.1:0\"\n[limits]\nkill_grace_ms = 1000\nmax_sessions_per_user = \
         {LIMIT}\n\n{}",
        fixture_tool("stubborn", &["--linger", "4"], "")
    );
    let relay = Relay::start_config(&config, &[])?;
    let pid = relay.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let max_live = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (stop, max_live) = (stop.clone(), max_live.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(6);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let live = children_of(pid).iter().filter(|c| c.1 != 'Z').count();
                max_live.fetch_max(live, Ordering::Relaxed);
                if live > 3 * LIMIT {
                    // Proven; do not pile up more processes on a shared machine.
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let url = relay.url("stubborn");
    let rt = ws::runtime();
    let (opened, refused) = rt.block_on(async {
        let until = tokio::time::Instant::now() + Duration::from_secs(3);
        let churn = || async {
            let (mut opened, mut refused) = (0u32, 0u32);
            while tokio::time::Instant::now() < until
                && max_live.load(Ordering::Relaxed) <= 3 * LIMIT
            {
                match ws::connect(&url, Some("mcp"), &[]).await? {
                    Upgrade::Open(ws) => {
                        opened += 1;
                        drop(ws);
                    }
                    Upgrade::Refused(429, _) => {
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    Upgrade::Refused(status, body) => bail!("refused {status}: {body}"),
                }
            }
            anyhow::Ok((opened, refused))
        };
        let (a, b, c, d) = tokio::join!(churn(), churn(), churn(), churn());
        let all = [a?, b?, c?, d?];
        anyhow::Ok((
            all.iter().map(|x| x.0).sum::<u32>(),
            all.iter().map(|x| x.1).sum::<u32>(),
        ))
    })?;
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let max = max_live.load(Ordering::Relaxed);
    println!(
        "connect/reset churn for 3 s: {opened} sessions opened, {refused} refused with 429; at \
         most {max} live tool processes (limit {LIMIT})"
    );
    relay.wait_no_children(Duration::from_secs(10))?;
    assert!(
        max <= LIMIT,
        "the relay had {max} live tool processes at once with max_sessions_per_user = {LIMIT} \
         ({opened} sessions opened, {refused} refused in 3 s)"
    );
    Ok(())
}

/// A6. docs/protocol.md, session lifecycle: when the tool exits, the relay "answers every
/// client request in flight with `-32010`"; docs/security.md, promise 14: tool processes are
/// "always reaped".
///
/// A tool that, on its first request, starts `sleep 20` in the background (which inherits its
/// stdout and keeps it open) and exits with status 3 without answering.
///
/// Bound: the request is answered with -32010 within 3 s of being sent, and the relay has no
/// zombie child 2 s later.
#[test]
fn a6_a_tool_exiting_while_its_child_holds_stdout_is_answered_and_reaped() -> Result<()> {
    let dir = TempDir::new();
    let pidfile = dir.path().join("background.pid");
    let relay = Relay::start_with(
        "shutdown_grace_ms = 1000",
        &fixture_tool(
            "forker",
            &["--fork-and-exit", pidfile.to_str().unwrap()],
            "",
        ),
        None,
    )?;
    let mut ide = Ide::connect(&relay.url("forker"), &[])?;
    let sent = Instant::now();
    ide.send(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}))?;
    let answer = ide.recv_until(Duration::from_secs(3), |m| m["id"] == json!(1));
    let took = sent.elapsed();
    let zombies_gone = wait_until(Duration::from_secs(2), || {
        !relay.children().iter().any(|c| c.1 == 'Z')
    });
    let children = relay.children();
    // The background `sleep` is this test's doing: end it (by its pid, checked to be `sleep`).
    if let Ok(bg) = std::fs::read_to_string(&pidfile) {
        let bg = bg.trim();
        let cmd = std::fs::read(format!("/proc/{bg}/cmdline")).unwrap_or_default();
        if cmd.starts_with(b"sleep") {
            signal(bg.parse()?, "KILL");
        }
    }
    println!(
        "tool exited with its child holding stdout: answered: {} after {took:?}; relay \
         children then {children:?}",
        outcome(&answer)
    );
    let answer = answer.map_err(|e| {
        e.context(format!(
            "the request was not answered within 3 s of the tool's exit ({took:?}); relay \
             children: {children:?}"
        ))
    })?;
    assert_eq!(
        answer["error"]["code"],
        json!(-32010),
        "answered after {took:?} with {answer}"
    );
    assert!(
        zombies_gone.is_ok(),
        "the exited tool is left a zombie: relay children {children:?}"
    );
    Ok(())
}

/// Bytes the relay has logged so far.
fn log_len(relay: &Relay) -> usize {
    relay.log.text().len()
}

/// Makes sure everything the relay logged before now has reached `relay.log`: asks for an
/// unknown tool with a unique name and waits for that request's log line.
fn log_barrier(relay: &Relay, tag: &str) -> Result<()> {
    let name = format!("barrier-{tag}-{}", std::process::id());
    let (status, _) = http_get(relay.addr, &format!("/mcp/{name}"))?;
    assert_eq!(status, 404);
    relay.log.wait_for(&name, Duration::from_secs(5))
}

/// A7. docs/security.md, "What is logged": the audit event `call` names "the method and tool,
/// not the arguments"; the relay must not let a client's method name blow up its log or its
/// memory. (The limits: 4 MiB per message.)
///
/// 20 requests, each with a method name of ~4 MiB, to a tool that reads them and never answers;
/// then the client leaves (the session ends, failing the 20 calls).
///
/// Bound: the relay writes ≤ 1 MiB of log for the whole session; relay peak RSS ≤ baseline +
/// 64 MiB.
#[test]
fn a7_huge_method_names_do_not_blow_up_the_log_or_memory() -> Result<()> {
    const LOG_BOUND: usize = 1024 * 1024;
    let relay = Relay::start(&fixture_tool("mute", &["--silent"], ""))?;
    let base = baseline(&relay, "mute")?;
    log_barrier(&relay, "before")?;
    let logged_before = log_len(&relay);
    let url = relay.url("mute");
    let method = "m".repeat(4 * MIB as usize - 128);
    let rt = ws::runtime();
    let sent = rt.block_on(async {
        let mut ws = ws::connect_plain(&url).await?;
        let sent = flood(
            &mut ws,
            Duration::from_secs(6),
            |n| {
                (n < 20).then(|| {
                    Message::text(format!(
                        r#"{{"jsonrpc":"2.0","id":{},"method":"{method}"}}"#,
                        n + 1
                    ))
                })
            },
            || relay.rss().saturating_sub(base) > SAFETY_CAP,
        )
        .await;
        // Leave: the plain session ends, with the 20 calls unanswered.
        let _ = tokio::time::timeout(Duration::from_secs(5), ws.close(None)).await;
        anyhow::Ok(sent)
    })?;
    relay.wait_idle("mute", Duration::from_secs(5))?;
    log_barrier(&relay, "after")?;
    let logged = log_len(&relay) - logged_before;
    let grown = growth(&relay, base);
    println!(
        "{sent} requests with 4 MiB method names: relay logged {:.2} MiB (bound {:.0} MiB); \
         relay peak RSS grew {:.1} MiB (bound {:.0} MiB)",
        mib(logged as u64),
        mib(LOG_BOUND as u64),
        mib(grown),
        mib(GROWTH_BOUND)
    );
    assert!(
        sent.sent == 20 || sent.cut.is_some(),
        "only {sent} of the 20 requests could be sent in 6 s"
    );
    assert!(
        logged <= LOG_BOUND && grown <= GROWTH_BOUND,
        "20 requests with 4 MiB method names made the relay log {:.2} MiB (bound {:.0} MiB) and \
         grow {:.1} MiB (bound {:.0} MiB)",
        mib(logged as u64),
        mib(LOG_BOUND as u64),
        mib(grown),
        mib(GROWTH_BOUND)
    );
    Ok(())
}

/// A fake log line as the human log format writes them, with a date no real line has.
const FORGED: &str = "1999-01-01T00:00:00.000000Z  WARN forged:";

/// A8. docs/security.md, limitation 4 says log lines "can be forged by an authenticated client"
/// through the audit event's method and a client's session-end reason; these three inputs must
/// not do it: a v1 close frame's reason, a v1 control message's `type`, and an `Origin` header
/// (logged on the audit event `refused`).
///
/// Bound: no line of the relay's log starts with the injected fake log line's prefix.
#[test]
fn a8_client_text_cannot_forge_relay_log_lines() -> Result<()> {
    let relay = demo_relay("")?;
    let url = relay.url("demo");
    let rt = ws::runtime();
    let mut seen = Vec::new();
    rt.block_on(async {
        // A close frame's reason (at most 123 bytes).
        let (mut a, _) = ws::connect_v1(&url).await?;
        a.send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: format!("bye\n{FORGED} close reason").into(),
        })))
        .await?;
        let got = ws::next_frame(&mut a, Duration::from_secs(5)).await;
        seen.push(format!("close reason: relay answered {got:?}"));
        // A control message with an unknown `type` (a protocol error: the relay drops us).
        let (mut b, _) = ws::connect_v1(&url).await?;
        let bad = json!({"type": format!("x\n{FORGED} control type")}).to_string();
        b.send(ws::control(&bad)).await?;
        let got = ws::next_frame(&mut b, Duration::from_secs(2)).await;
        seen.push(format!("control type: relay answered {got:?}"));
        anyhow::Ok(())
    })?;
    // An Origin header with a line break in it: LF, CR, and an obsolete line folding.
    for (name, value) in [
        ("LF", format!("https://evil.example\n{FORGED} origin LF")),
        ("CR", format!("https://evil.example\r{FORGED} origin CR")),
        (
            "CRLF fold",
            format!("https://evil.example\r\n {FORGED} origin fold"),
        ),
    ] {
        let mut s = std::net::TcpStream::connect(relay.addr)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            s,
            "GET /mcp/demo HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: {value}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )?;
        let mut resp = Vec::new();
        let _ = s.read_to_end(&mut resp);
        let status = String::from_utf8_lossy(&resp)
            .lines()
            .next()
            .unwrap_or("")
            .to_owned();
        seen.push(format!("Origin with {name}: relay answered {status:?}"));
    }
    log_barrier(&relay, "a8")?;
    let log = relay.log.text();
    let forged: Vec<&str> = log.lines().filter(|l| l.starts_with(FORGED)).collect();
    println!("{}", seen.join("\n"));
    println!("forged lines in the relay's log: {forged:#?}");
    assert!(
        forged.is_empty(),
        "client input produced {} line(s) in the relay's log that start like a real log line:\n\
         {}\n(what was sent: {})",
        forged.len(),
        forged.join("\n"),
        seen.join("; ")
    );
    Ok(())
}

/// A9. docs/protocol.md, resume: "A client whose `mcp-bridge-last-seq` is beyond what the relay
/// ever sent gets `end {"reason": "cannot resume: …"}` and a close (1000) on that connection;
/// the session itself stays on the relay, waiting, until its resume window passes." (and the
/// lifecycle table: live → detached on a resume with an impossible `mcp-bridge-last-seq`).
///
/// Bound: after a resume with `mcp-bridge-last-seq: 18446744073709551615`, a correct resume
/// (within 5 s) gets `welcome {resumed: true}` and a request on it is answered.
#[test]
fn a9_an_impossible_resume_point_does_not_end_the_session() -> Result<()> {
    let relay = demo_relay("")?;
    let url = relay.url("demo");
    let rt = ws::runtime();
    rt.block_on(async {
        let t = Duration::from_secs(5);
        let (mut ws1, welcome) = ws::connect_v1(&url).await?;
        let session = welcome["session"]
            .as_str()
            .context("session id")?
            .to_owned();
        ws1.send(ws::data(
            1,
            0,
            br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
        ))
        .await?;
        let (seq, answer) = ws::recv_answer(&mut ws1, &json!(1), t).await?;
        assert_eq!(answer["result"], json!({}), "{answer}");
        drop(ws1);

        let bad = ws::connect(
            &url,
            Some("mcp-bridge.v1"),
            &[
                ("mcp-bridge-session", session.as_str()),
                ("mcp-bridge-last-seq", "18446744073709551615"),
            ],
        )
        .await?;
        let bad_outcome = match bad {
            Upgrade::Refused(status, body) => format!("refused {status}: {body}"),
            Upgrade::Open(mut ws) => {
                let mut frames = Vec::new();
                while let Ok(Some(f)) = ws::next_frame(&mut ws, t).await {
                    let last = matches!(f, V1Frame::Close(_));
                    frames.push(format!("{f:?}"));
                    if last {
                        break;
                    }
                }
                format!("101, then {frames:?}")
            }
        };
        println!("resume at last-seq 2^64-1: {bad_outcome}");

        let last_seq = seq.to_string();
        let good = ws::connect(
            &url,
            Some("mcp-bridge.v1"),
            &[
                ("mcp-bridge-session", session.as_str()),
                ("mcp-bridge-last-seq", last_seq.as_str()),
            ],
        )
        .await?;
        let mut ws2 = match good {
            Upgrade::Open(ws) => *ws,
            Upgrade::Refused(status, body) => bail!(
                "a correct resume (last-seq {seq}) after the impossible one was refused: HTTP \
                 {status}: {} (the impossible one: {bad_outcome})",
                body.trim()
            ),
        };
        let welcome = match ws::next_frame(&mut ws2, t).await? {
            Some(V1Frame::Control(c)) => c,
            other => bail!(
                "a correct resume after the impossible one got {other:?} instead of welcome \
                 (the impossible one: {bad_outcome})"
            ),
        };
        assert_eq!(
            (welcome["type"].as_str(), welcome["resumed"].as_bool()),
            (Some("welcome"), Some(true)),
            "a correct resume after the impossible one got {welcome} (the impossible one: \
             {bad_outcome})"
        );
        ws2.send(ws::data(
            2,
            seq,
            br#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#,
        ))
        .await?;
        let (_, answer) = ws::recv_answer(&mut ws2, &json!(2), t).await?;
        assert_eq!(answer["result"], json!({}), "{answer}");
        println!("correct resume after it: {welcome}; ping answered");
        anyhow::Ok(())
    })
}

/// The per-session worst case of docs/architecture.md, "Bounds" (and docs/security.md's
/// checklist), at the default limits.
const WORST_CASE: u64 = 70 * MIB;

/// A10. docs/architecture.md, "Bounds": "Worst case at the defaults is therefore about 70 MiB
/// per session".
///
/// One v1 session pushed towards it. The client never reads and never acknowledges. It sends
/// echo calls of almost 4 MiB (the message limit) to the demo tool, first one every 0.6 s, so
/// that the answers fill the relay's resume buffer (16 MiB, and one message past it); then as
/// fast as it can: the tool, blocked writing an answer nobody takes, stops reading, its queue
/// fills, then the client's window (16 MiB), until the client overruns the window and the
/// session ends.
///
/// Bound: relay peak RSS growth ≤ 70 MiB; the session is freed.
#[test]
fn a10_one_session_at_its_worst_stays_within_the_documented_bound() -> Result<()> {
    let relay = quiet_demo_relay("")?;
    let base = baseline(&relay, "demo")?;
    let url = relay.url("demo");
    let text = "a".repeat(4 * MIB as usize - 4096);
    let call = |n: u64| {
        let call = format!(
            r#"{{"jsonrpc":"2.0","id":{n},"method":"tools/call","params":{{"name":"echo","arguments":{{"text":"{text}"}}}}}}"#
        );
        ws::data(n, 0, call.as_bytes())
    };
    const PACED: u64 = 6;
    let rt = ws::runtime();
    let sent = rt.block_on(async {
        let (mut ws, _welcome) = ws::connect_v1(&url).await?;
        for n in 1..=PACED {
            ws.send(call(n)).await?;
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        let filled = growth(&relay, base);
        let sent = flood(
            &mut ws,
            Duration::from_secs(6),
            |n| (n < 10).then(|| call(PACED + 1 + n)),
            || relay.rss().saturating_sub(base) > SAFETY_CAP,
        )
        .await;
        drop(ws);
        anyhow::Ok((filled, sent))
    })?;
    let (filled, sent) = sent;
    let freed = relay.wait_idle("demo", Duration::from_secs(10));
    let grown = growth(&relay, base);
    println!(
        "v1 client sent {PACED} echo calls of 4 MiB 0.6 s apart (relay peak RSS then grown by \
         {:.1} MiB), then {sent} more at once, never reading or acknowledging; relay peak RSS \
         grew {:.1} MiB (documented worst case {:.0} MiB); freed: {}",
        mib(filled),
        mib(grown),
        mib(WORST_CASE),
        outcome(&freed)
    );
    freed?;
    assert!(
        grown <= WORST_CASE,
        "one session made the relay grow {:.1} MiB, past the documented worst case of {:.0} MiB \
         ({PACED} + {sent} calls of 4 MiB sent)",
        mib(grown),
        mib(WORST_CASE)
    );
    Ok(())
}

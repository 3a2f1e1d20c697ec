//! Floods from clients that never read: invalid frames, batches that amplify, large answers.
//! Each is measured against the memory bound of one session; not what happens to the session
//! after its client leaves (see `wedged`).

use std::collections::VecDeque;
use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mcp_bridge_tests::ws::{self, Ws};
use mcp_bridge_tests::{mib, Relay};
use tokio_tungstenite::tungstenite::Message;

use super::{flood, growth, normal_session, past_safety_cap, quiet_demo_relay, MIB};

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
    let mut window = VecDeque::from([(Instant::now(), cpu_ticks(relay.pid()))]);
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

/// Runs an A1-style flood on `ws` for 5 s, then checks a second, ordinary session is served
/// while the flooding connection is still open, and the memory bound.
fn flood_then_check(
    relay: &Relay,
    base: u64,
    what: &str,
    connect: impl Future<Output = Result<Ws>>,
    next: impl FnMut(u64) -> Option<Message>,
) -> Result<()> {
    let rt = ws::runtime();
    let (ws, sent) = rt.block_on(async {
        let mut ws = connect.await?;
        let sent = flood(&mut ws, Duration::from_secs(5), next, || {
            past_safety_cap(relay, base)
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
    let (relay, base, url) = quiet_demo_relay("")?;
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
    let (relay, base, url) = quiet_demo_relay("")?;
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
    let (relay, base, url) = quiet_demo_relay("")?;
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
    let (relay, base, url) = quiet_demo_relay("")?;
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
                    || past_safety_cap(relay, base),
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

//! Wedged sessions: a v1 client that overruns its window and a tool that never reads its
//! stdin. What is checked is that the session is freed once its client leaves, within the
//! memory bound; not the bound of a session that goes on (see `floods`).

use std::time::Duration;

use anyhow::{Context, Result};
use mcp_bridge_tests::ws;
use mcp_bridge_tests::{fixture_tool, mib, Relay};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use super::{
    baseline, flood_and_leave, growth, outcome, quiet_demo_relay, wait_freed, GROWTH_BOUND, MIB,
};

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
    let (relay, base, url) = quiet_demo_relay("resume_window_ms = 1500\nshutdown_grace_ms = 1000")?;
    let sent = flood_and_leave(
        &relay,
        base,
        async { Ok(ws::connect_v1(&url).await?.0) },
        Duration::from_secs(4),
        |n| {
            (n < 10_000).then(|| {
                let call = json!({"jsonrpc": "2.0", "id": n + 1, "method": "tools/call",
                    "params": {"name": "slow", "arguments": {"steps": 1000, "delay_ms": 100}}});
                ws::data(n + 1, 0, call.to_string().as_bytes())
            })
        },
    )?;
    let (freed, took) = wait_freed(&relay, "demo", Duration::from_secs(5));
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
    let sent = flood_and_leave(
        &relay,
        base,
        ws::connect_plain(&url),
        Duration::from_secs(4),
        |n| {
            (n < 48).then(|| {
                Message::text(format!(
                    r#"{{"jsonrpc":"2.0","id":{},"method":"tools/call","params":{{"name":"anything","arguments":{{"blob":"{blob}"}}}}}}"#,
                    n + 1
                ))
            })
        },
    )?;
    let (freed, took) = wait_freed(&relay, "deaf", Duration::from_secs(4));
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

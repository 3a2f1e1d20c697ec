//! One session pushed to the documented per-session worst case at the default limits; the
//! bounds of its parts are checked one by one in `floods` and `wedged`.

use std::time::Duration;

use anyhow::Result;
use futures_util::SinkExt;
use mcp_bridge_tests::{mib, ws};

use super::{flood, growth, outcome, past_safety_cap, quiet_demo_relay, MIB};

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
    let (relay, base, url) = quiet_demo_relay("")?;
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
            || past_safety_cap(&relay, base),
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

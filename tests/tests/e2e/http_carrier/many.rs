//! 1,000 Streamable HTTP sessions at once, each with its own tool process: opened from eight
//! clients in parallel, each answered by its own tool, then ended with DELETE; the relay's
//! memory per session printed, and no process left behind.

use std::thread;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use mcp_bridge_tests::http_raw::raw;
use mcp_bridge_tests::{demo_tool, mib, relay_config, wait_until, Relay};
use serde_json::Value;

use super::{open_session, ACCEPT_BOTH, JSON};

const SESSIONS: usize = 1_000;
const CLIENTS: usize = 8;
const VERSION: (&str, &str) = ("MCP-Protocol-Version", "2025-11-25");

fn echo(relay: &Relay, sid: &str, text: &str) -> Result<()> {
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"echo","arguments":{{"text":"{text}"}}}}}}"#
    );
    let r = raw(
        relay.addr,
        "POST",
        "/mcp/demo",
        &[ACCEPT_BOTH, JSON, VERSION, ("Mcp-Session-Id", sid)],
        &body,
    )?;
    let answer = r
        .messages()
        .into_iter()
        .map(|(_, v)| v)
        .find(|v| v["id"] == 2)
        .with_context(|| format!("no answer: {r:?}"))?;
    ensure!(
        answer
            .pointer("/result/content/0/text")
            .and_then(Value::as_str)
            == Some(text),
        "{sid}: {answer}"
    );
    Ok(())
}

/// Runs `work` on every session, the sessions split over `CLIENTS` threads.
fn each(sessions: &[String], work: impl Fn(&str) -> Result<()> + Sync) -> Result<()> {
    thread::scope(|s| {
        let handles: Vec<_> = sessions
            .chunks(SESSIONS.div_ceil(CLIENTS))
            .map(|part| s.spawn(|| part.iter().try_for_each(|sid| work(sid))))
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().map_err(|_| anyhow::anyhow!("a client panicked"))?)
    })
}

#[test]
fn a_thousand_http_sessions_at_once_each_with_its_own_tool() -> Result<()> {
    let relay = Relay::start_config(
        &relay_config(
            "max_sessions = 1100\nmax_sessions_per_user = 1100",
            &demo_tool("demo", ""),
        ),
        &[],
    )?;
    let rss_before = relay.rss();
    let started = Instant::now();
    let ids: Vec<usize> = (0..SESSIONS).collect();
    let sessions: Vec<String> = thread::scope(|s| {
        let handles: Vec<_> = ids
            .chunks(SESSIONS / CLIENTS)
            .map(|part| {
                s.spawn(|| {
                    part.iter()
                        .map(|_| open_session(&relay))
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            all.extend(
                h.join()
                    .map_err(|_| anyhow::anyhow!("a client panicked"))??,
            );
        }
        Ok::<_, anyhow::Error>(all)
    })?;
    let opened = started.elapsed();
    assert_eq!(sessions.len(), SESSIONS);
    let live = || relay.children().iter().filter(|c| c.1 != 'Z').count();
    wait_until(Duration::from_secs(30), || live() == SESSIONS)
        .with_context(|| format!("{} tool processes, want {SESSIONS}", live()))?;
    assert_eq!(relay.sessions_active("demo")?, SESSIONS as f64);

    each(&sessions, |sid| echo(&relay, sid, &format!("hello {sid}")))?;
    let rss = relay.rss();
    let per_session = rss.saturating_sub(rss_before) / SESSIONS as u64;

    each(&sessions, |sid| {
        let r = raw(
            relay.addr,
            "DELETE",
            "/mcp/demo",
            &[VERSION, ("Mcp-Session-Id", sid)],
            "",
        )?;
        ensure!(r.status == 200, "DELETE {sid}: {r:?}");
        Ok(())
    })?;
    relay.wait_idle("demo", Duration::from_secs(60))?;
    println!(
        "{SESSIONS} HTTP sessions opened in {opened:.2?} from {CLIENTS} clients, one call each \
         answered by its own tool; relay RSS {:.1} MiB with all open ({} KiB per session), \
         every tool reaped after DELETE",
        mib(rss),
        per_session / 1024
    );
    Ok(())
}

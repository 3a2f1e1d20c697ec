//! 1,000 calls over Streamable HTTP, three of every four (calls with progress, so answered on
//! an SSE stream) with their answer stream broken and resumed with `Last-Event-ID`: at the
//! priming event (before anything else came), after the first progress notification, or after
//! the last, with the answer possibly already in flight; the fourth a quick call, answered as
//! a JSON body. Every call gets its answer exactly once, and every progress notification comes
//! exactly once, in order.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mcp_bridge_tests::http_raw::{raw, SseStream};
use mcp_bridge_tests::{demo_tool, Relay};
use serde_json::Value;

use super::{open_session, ACCEPT_BOTH, JSON};

const CALLS: u64 = 1_000;

/// How a call's answer stream is read.
#[derive(Clone, Copy, Debug)]
enum Cut {
    /// Read to the end: no break.
    None,
    /// Broken right after the priming event.
    AtPriming,
    /// Broken after the first progress notification.
    AfterProgress,
    /// Broken after the last progress notification (the answer may be on its way).
    AfterAllProgress,
}

/// What one call's streams delivered, before and after the break.
#[derive(Default)]
struct Seen {
    progress: Vec<i64>,
    answers: Vec<Value>,
}

impl Seen {
    fn take(&mut self, id: u64, event: &Value) {
        if event["method"] == "notifications/progress" {
            if let Some(p) = event["params"]["progress"].as_i64() {
                self.progress.push(p);
            }
        } else if event["id"] == id {
            self.answers.push(event.clone());
        }
    }
}

#[test]
fn a_thousand_calls_with_broken_streams_each_answered_once() -> Result<()> {
    let relay = Relay::start(&demo_tool("demo", ""))?;
    let sid = open_session(&relay)?;
    let session = ("Mcp-Session-Id", sid.as_str());
    let version = ("MCP-Protocol-Version", "2025-11-25");
    let started = Instant::now();
    let mut resumes = 0;
    for i in 0..CALLS {
        let id = 1_000 + i;
        let cut = match i % 4 {
            0 => Cut::None,
            1 => Cut::AtPriming,
            2 => Cut::AfterProgress,
            _ => Cut::AfterAllProgress,
        };
        if matches!(cut, Cut::None) {
            // A quick call: its answer is the whole body (JSON; SSE if it was slow to come).
            let body = format!(
                r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"text":"c{id}"}}}}}}"#
            );
            let r = raw(
                relay.addr,
                "POST",
                "/mcp/demo",
                &[ACCEPT_BOTH, JSON, version, session],
                &body,
            )?;
            anyhow::ensure!(r.status == 200, "call {id}: {r:?}");
            let answers: Vec<Value> = r
                .messages()
                .into_iter()
                .map(|(_, m)| m)
                .filter(|m| m["id"] == id)
                .collect();
            assert_eq!(answers.len(), 1, "call {id}: {r:?}");
            assert_eq!(
                answers[0]
                    .pointer("/result/content/0/text")
                    .and_then(Value::as_str),
                Some(format!("c{id}").as_str()),
                "call {id}: {r:?}"
            );
            continue;
        }
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"slow","arguments":{{"steps":3,"delay_ms":2}},"_meta":{{"progressToken":"p{id}"}}}}}}"#
        );
        let mut stream = SseStream::open(
            relay.addr,
            "POST",
            "/mcp/demo",
            &[ACCEPT_BOTH, JSON, version, session],
            &body,
        )?;
        anyhow::ensure!(stream.status == 200, "call {id}: status {}", stream.status);
        let mut seen = Seen::default();
        let mut last_id = None;
        let broke = loop {
            let Some((event_id, event)) = stream.next_event()? else {
                break false;
            };
            if event_id.is_some() {
                last_id = event_id;
            }
            seen.take(id, &event);
            let at_cut = match cut {
                Cut::None => false,
                Cut::AtPriming => true,
                Cut::AfterProgress => !seen.progress.is_empty(),
                Cut::AfterAllProgress => seen.progress.len() == 3,
            };
            if at_cut && seen.answers.is_empty() {
                break true;
            }
        };
        drop(stream);
        if broke {
            resumes += 1;
            let last =
                last_id.with_context(|| format!("call {id}: no event id before the break"))?;
            let mut resumed = SseStream::open(
                relay.addr,
                "GET",
                "/mcp/demo",
                &[
                    ("Accept", "text/event-stream"),
                    version,
                    session,
                    ("Last-Event-ID", last.as_str()),
                ],
                "",
            )?;
            anyhow::ensure!(
                resumed.status == 200,
                "call {id}: resume status {}",
                resumed.status
            );
            // A replayed stream that was already answered stays open and silent: read up to
            // the answer, no further.
            while seen.answers.is_empty() {
                match resumed.next_event()? {
                    Some((_, event)) => seen.take(id, &event),
                    None => bail!("call {id}: the resumed stream ended without the answer"),
                }
            }
        }
        assert_eq!(
            seen.answers.len(),
            1,
            "call {id} ({cut:?}): {:?}",
            seen.answers
        );
        let answer = &seen.answers[0];
        assert!(answer["result"].is_object(), "call {id}: {answer}");
        assert_eq!(seen.progress, [1, 2, 3], "call {id} ({cut:?}): progress");
    }
    let elapsed = started.elapsed();
    let r = raw(relay.addr, "DELETE", "/mcp/demo", &[session, version], "")?;
    assert_eq!(r.status, 200, "{r:?}");
    relay.wait_idle("demo", Duration::from_secs(10))?;
    println!(
        "{CALLS} calls, {resumes} broken and resumed with Last-Event-ID, each answered once, in {elapsed:.2?}"
    );
    Ok(())
}

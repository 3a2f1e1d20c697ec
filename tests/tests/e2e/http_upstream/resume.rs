//! SSE streams cut mid-call (tests/peers/sse_cut_server.py): the server answers a call with an
//! SSE stream, sends a progress notification with an event id, cuts the connection, and sends
//! the result on the GET that carries `Last-Event-ID`. The IDE must see the notification and
//! the result exactly once each — for one call, and for many calls with some of them cut.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mcp_bridge_tests::Peers;
use serde_json::{json, Value};

use super::{bridge, text_of, Server};

fn cut_server(peers: &Peers) -> Result<Server> {
    Server::script(peers, "sse_cut_server.py", &[], 0)
}

fn call(id: i64, cut: bool) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
        "name": "work", "arguments": {"text": format!("done {id}"), "cut": cut},
        "_meta": {"progressToken": format!("p{id}")}}})
}

/// Reads until every call in `ids` has its progress and its result, failing on a duplicate
/// or an error; then expects silence.
fn expect_each_once(ide: &mut mcp_bridge_tests::Ide, ids: &[i64], limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    let mut progress: BTreeMap<String, u32> = BTreeMap::new();
    let mut results: BTreeMap<i64, u32> = BTreeMap::new();
    while progress.len() < ids.len() || results.len() < ids.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = ide
            .recv(left)
            .with_context(|| format!("{} results, {} progress", results.len(), progress.len()))?;
        if m["method"] == "notifications/progress" {
            let token = m["params"]["progressToken"].as_str().context("token")?;
            let n = progress.entry(token.to_owned()).or_default();
            *n += 1;
            if *n > 1 {
                bail!("progress {token} delivered twice");
            }
            continue;
        }
        let id = m["id"]
            .as_i64()
            .with_context(|| format!("unexpected {m}"))?;
        assert_eq!(text_of(&m)?, format!("done {id}"), "{m}");
        let n = results.entry(id).or_default();
        *n += 1;
        if *n > 1 {
            bail!("result {id} delivered twice");
        }
    }
    for id in ids {
        assert!(
            progress.contains_key(&format!("p{id}")),
            "no progress for {id}"
        );
        assert!(results.contains_key(id), "no result for {id}");
    }
    ide.expect_silence(Duration::from_millis(300))
}

#[test]
fn sse_cut_mid_call_is_resumed_and_delivers_each_message_once() -> Result<()> {
    let peers = Peers::require();
    let server = cut_server(&peers)?;
    let mut ide = bridge(&server.url())?;
    ide.initialize()?;
    ide.send(&call(1, true))?;
    let first = ide.recv(Duration::from_secs(10))?;
    assert_eq!(first["method"], "notifications/progress", "{first}");
    let resp = ide.recv(Duration::from_secs(10))?;
    assert_eq!(resp["id"], 1, "{resp}");
    assert_eq!(text_of(&resp)?, "done 1");
    ide.expect_silence(Duration::from_millis(300))?;
    // The result came on the resumed GET, not by luck on the cut stream.
    server
        .stderr
        .wait_for("resumed stream 1 after 1-1", Duration::from_secs(5))?;
    Ok(())
}

#[test]
fn two_hundred_calls_with_every_tenth_cut_lose_and_duplicate_nothing() -> Result<()> {
    let peers = Peers::require();
    let server = cut_server(&peers)?;
    let mut ide = bridge(&server.url())?;
    ide.initialize()?;
    let ids: Vec<i64> = (1..=200).collect();
    let started = Instant::now();
    for &id in &ids {
        ide.send(&call(id, id % 10 == 0))?;
    }
    expect_each_once(&mut ide, &ids, Duration::from_secs(30))
        .with_context(|| format!("server stderr: {}", server.stderr.text()))?;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(30), "took {took:?}");
    let cuts = server.stderr.text().matches("resumed stream").count();
    assert_eq!(cuts, 20, "{}", server.stderr.text());
    ide.close_stdin();
    assert!(ide.wait(Duration::from_secs(3))?.success());
    Ok(())
}

//! Scale-out behind a real load balancer: nginx (the Debian package, installed by `.ci/run`)
//! runs `deploy/nginx/nginx.conf` on loopback in front of two relay nodes. The config is the
//! committed file, with only its `# @render` lines (addresses and paths) filled in.
//!
//! - clients spread over both nodes, each talking to its own session;
//! - a client whose connection is cut comes back, through nginx, to the node holding its
//!   session and resumes it;
//! - when a node dies, its clients open new sessions on the other node and keep working (the
//!   Rust IDE harness, and the Python SDK as a real MCP client);
//! - when a node drains (SIGTERM, as in a rolling upgrade), calls in flight finish and its
//!   clients move to the other node without a single error;
//! - Streamable HTTP: each request of a session reaches the node named at the start of its
//!   `Mcp-Session-Id` (the relay's `node_id`); when that node is gone, the other answers 404
//!   and the host's new session works (raw HTTP and the Python SDK);
//! - the deploy examples' relay configs pass `bridge-server check-config`.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod affinity;
mod deploy;
mod failover;
mod forward;
mod nginx;
mod streamable;

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use mcp_bridge_tests::{wait_until, Ide, Relay};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(15);

/// Tool processes of a relay (its children that are not zombies): one per session.
fn sessions(relay: &Relay) -> usize {
    relay.children().iter().filter(|c| c.1 != 'Z').count()
}

/// How many sessions a relay has started (from its log).
fn sessions_started(relay: &Relay) -> usize {
    relay.log.text().matches("session started").count()
}

fn text_of(resp: &Value) -> &str {
    resp.pointer("/result/content/0/text")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn echo(ide: &mut Ide, id: u64, text: &str) -> Result<Value> {
    ide.request(
        json!(id),
        "tools/call",
        json!({"name": "echo", "arguments": {"text": text}}),
    )
}

/// Asserts an echo answer is exactly `text` (not an error, not another client's text).
fn assert_echo(resp: &Value, text: &str) {
    assert!(resp.get("error").is_none(), "error answer: {resp}");
    assert_eq!(text_of(resp), text, "{resp}");
}

/// A client through `url`, initialized; returns it and the index of the relay its session
/// landed on (seen as the relay whose tool-process count grew).
fn connect_and_locate(url: &str, relays: &[&Relay]) -> Result<(Ide, usize)> {
    let before: Vec<usize> = relays.iter().map(|r| sessions(r)).collect();
    let mut ide = Ide::connect(url, &[])?;
    ide.initialize()?;
    // The tool process is started before the upgrade completes, so it is there by now.
    let mut grew = None;
    wait_until(T, || {
        let now: Vec<usize> = relays.iter().map(|r| sessions(r)).collect();
        grew = (0..relays.len()).find(|&i| now[i] > before[i]);
        grew.is_some()
    })
    .context("no relay got the new session")?;
    Ok((ide, grew.unwrap()))
}

/// Opens clients one at a time until every relay holds at least `each` of their sessions (at
/// most `max` clients). Returns each client with the index of its relay.
fn clients_on_every_node(
    url: &str,
    relays: &[&Relay],
    each: usize,
    max: usize,
) -> Result<Vec<(Ide, usize)>> {
    let mut out: Vec<(Ide, usize)> = Vec::new();
    while (0..relays.len()).any(|i| out.iter().filter(|c| c.1 == i).count() < each) {
        ensure!(
            out.len() < max,
            "{max} clients did not give every node {each} session(s): the hash put {:?}",
            (0..relays.len())
                .map(|i| out.iter().filter(|c| c.1 == i).count())
                .collect::<Vec<_>>()
        );
        out.push(connect_and_locate(url, relays)?);
    }
    Ok(out)
}

fn two_relays(limits: &str, body: &str) -> Result<(Relay, Relay)> {
    Ok((
        Relay::start_with(limits, body, None)?,
        Relay::start_with(limits, body, None)?,
    ))
}

/// Closes every client's stdin (all first, so they end together) and waits for each to exit 0.
fn end_clients<'a>(ides: impl IntoIterator<Item = &'a mut Ide>) -> Result<()> {
    let mut ides: Vec<&mut Ide> = ides.into_iter().collect();
    for ide in &mut ides {
        ide.close_stdin();
    }
    for ide in &mut ides {
        assert!(ide.wait(T)?.success(), "{}", ide.stderr.text());
    }
    Ok(())
}

//! The client core against a relay-side [`Endpoint`] over a link that drops connections (and
//! whatever was in flight) at random: every IDE request reaches the tool exactly once and in
//! order, every answer and every tool notification reaches the IDE exactly once and in order.

use std::collections::VecDeque;

use proptest::prelude::*;
use serde_json::{json, Value};

use super::super::*;
use super::{cfg, output, relay_ep, welcome};

/// The relay's end of the simulation: its endpoint and a tool that answers each request.
struct Relay {
    ep: Endpoint,
    /// Requests the tool received, in order.
    got: Vec<u64>,
    notes: u64,
}

impl Relay {
    /// The tool takes what arrived and answers each request.
    fn serve(&mut self, now: Instant) {
        while let Some(b) = self.ep.poll_receive(now) {
            let v: Value = serde_json::from_slice(&b).expect("json");
            let id = v["id"].as_u64().expect("a request");
            self.got.push(id);
            self.ep.send(Bytes::from(
                json!({"jsonrpc": "2.0", "id": id, "result": {"n": id}}).to_string(),
            ));
        }
    }
}

fn fail(e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

/// Opens the connection the core asks for, if it asks; the relay resumes its one session.
fn maybe_connect(core: &mut Core, relay: &mut Relay, now: Instant) -> Result<(), TestCaseError> {
    let Some(req) = core.poll_connect(now) else {
        return Ok(());
    };
    match req.resume {
        None => {
            relay.ep.connect(0).map_err(fail)?;
            core.on_connected(welcome("s", false, 0), now);
        }
        Some((_, last)) => {
            relay.ep.connect(last).map_err(fail)?;
            core.on_connected(welcome("s", true, relay.ep.last_received()), now);
        }
    }
    prop_assert!(core.is_connected());
    Ok(())
}

fn simulate(ops: Vec<u8>) -> Result<(), TestCaseError> {
    let t0 = Instant::now();
    let mut now = t0;
    let mut core = Core::new(cfg(), t0);
    let mut relay = Relay {
        ep: relay_ep(),
        got: Vec::new(),
        notes: 0,
    };
    let mut sent = 0u64;
    let mut stdout: Vec<Value> = Vec::new();
    let mut to_relay: VecDeque<Bytes> = VecDeque::new();
    let mut to_client: VecDeque<Bytes> = VecDeque::new();
    maybe_connect(&mut core, &mut relay, now)?;
    for op in ops {
        match op {
            0 if core.wants_stdin() => {
                sent += 1;
                let line = json!({"jsonrpc": "2.0", "id": sent, "method": "tools/call"});
                core.on_stdin(shared::framing::Frame::Line(Bytes::from(line.to_string())));
            }
            1 if relay.ep.has_room(64) => {
                relay.notes += 1;
                let note = json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": relay.notes}});
                relay.ep.send(Bytes::from(note.to_string()));
            }
            2 => {
                if let Some(Transmit::Binary(f)) = core.poll_transmit(now) {
                    to_relay.push_back(f);
                }
                if let Some(Transmit::Binary(f)) = relay.ep.poll_transmit(now) {
                    to_client.push_back(f);
                }
            }
            3 => {
                if let Some(f) = to_relay.pop_front() {
                    relay.ep.on_message(f).map_err(fail)?;
                }
                if core.wants_relay() {
                    if let Some(f) = to_client.pop_front() {
                        core.on_relay_message(f, now);
                    }
                }
            }
            4 => relay.serve(now),
            5 if core.is_connected() => {
                // The connection drops with whatever was in flight.
                to_relay.clear();
                to_client.clear();
                relay.ep.disconnect();
                core.on_connection_lost("connection reset", now);
            }
            6 => stdout.extend(output(&mut core, now)),
            _ => {
                now += Duration::from_millis(30);
                core.on_timeout(now);
                maybe_connect(&mut core, &mut relay, now)?;
            }
        }
    }
    // Settle: what is on the wire is lost; then a clean connection until both sides are done.
    relay.ep.disconnect();
    core.on_connection_lost("connection reset", now);
    for _ in 0..10_000 {
        now += Duration::from_millis(5);
        core.on_timeout(now);
        if !core.is_connected() {
            to_relay.clear();
            to_client.clear();
            relay.ep.disconnect();
            now += Duration::from_secs(1);
            maybe_connect(&mut core, &mut relay, now)?;
        }
        let mut moved = false;
        while let Some(Transmit::Binary(f)) = core.poll_transmit(now) {
            relay.ep.on_message(f).map_err(fail)?;
            moved = true;
        }
        relay.serve(now);
        while let Some(Transmit::Binary(f)) = relay.ep.poll_transmit(now) {
            core.on_relay_message(f, now);
            moved = true;
        }
        let out = output(&mut core, now);
        moved |= !out.is_empty();
        stdout.extend(out);
        if !moved && core.ep.all_acked() && relay.ep.all_acked() && core.pending.is_empty() {
            break;
        }
    }
    prop_assert_eq!(relay.got, (1..=sent).collect::<Vec<_>>());
    let answers: Vec<u64> = stdout.iter().filter_map(|m| m["id"].as_u64()).collect();
    prop_assert_eq!(answers, (1..=sent).collect::<Vec<_>>());
    prop_assert!(
        stdout.iter().all(|m| m.get("error").is_none()),
        "no errors: {:?}",
        stdout
    );
    let notes: Vec<u64> = stdout
        .iter()
        .filter_map(|m| m["params"]["progress"].as_u64())
        .collect();
    prop_assert_eq!(notes, (1..=relay.notes).collect::<Vec<_>>());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn exactly_once_in_order_over_a_dropping_link(ops in proptest::collection::vec(0u8..8, 1..400)) {
        simulate(ops)?;
    }
}

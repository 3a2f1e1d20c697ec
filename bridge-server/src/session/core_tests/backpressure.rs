//! Backpressure between client, core and tool: what waits where when one side stops reading,
//! and that acks and the relay's own answers keep flowing meanwhile.

use super::*;
use shared::jsonrpc;

/// The deadlock case: while the tool takes nothing, the client's data waits unacknowledged,
/// but its acks still get through, so the relay's own output keeps flowing.
#[test]
fn acks_flow_while_the_tool_is_busy() {
    let t0 = Instant::now();
    let (mut core, mut client) = v1(t0);
    let big = Bytes::from(format!(
        r#"{{"jsonrpc":"2.0","method":"n","params":"{}"}}"#,
        "a".repeat(200_000)
    ));
    for _ in 0..20 {
        client.send(big.clone());
    }
    to_core(&mut client, &mut core, t0);
    assert!(core.wants_client(), "a v1 connection is always read");
    assert!(core.held_bytes() <= 20 * 200_100);
    // The tool writes; the client acks it; the core takes the ack although the tool is busy.
    core.on_tool_frame(
        Frame::Line(Bytes::from_static(br#"{"jsonrpc":"2.0","method":"note"}"#)),
        t0,
    );
    let got = to_client(&mut core, &mut client, t0);
    assert_eq!(got.len(), 1);
    let later = t0 + Duration::from_millis(10);
    to_core(&mut client, &mut core, later);
    assert_eq!(core.ep.unacked(), 0, "the client's ack was taken");
    // The tool takes its input: what waited moves on, exactly once.
    let mut n = 0;
    for _ in 0..100 {
        n += drain_tool(&mut core, later).len();
    }
    assert_eq!(n, 20);
}

#[test]
fn a_client_past_its_window_ends_the_session() {
    let t0 = Instant::now();
    let (mut core, mut client) = v1(t0);
    for i in 0..1100 {
        client.send(request(i));
    }
    // Nothing is taken by the tool, and replies fill nothing: the client ignores acks.
    let mut tool_q_full = false;
    while let Some(Transmit::Binary(f)) = client.poll_transmit(t0) {
        core.on_client_message(f, t0);
        tool_q_full |= core.tool_q.held() > 0;
        if core.check_done() {
            break;
        }
    }
    assert!(tool_q_full);
    // The tool queue took some; the rest waited within the window of 1,024, then overran.
    let reason = core.end_reason().cloned();
    assert!(
        matches!(reason, Some(EndReason::ClientBrokeLimit(_)) | None),
        "{reason:?}"
    );
}

/// What the tool's queue cannot hold waits in the client's window, unacknowledged: the relay
/// stops acknowledging when the tool stops reading.
#[test]
fn input_waits_unacknowledged_while_the_tool_queue_is_full() {
    let t0 = Instant::now();
    let (mut core, mut client) = v1(t0);
    let cap = core.cfg.tool_queue_bytes();
    for i in 1..=8 {
        client.send(big_request(i, 300_000));
    }
    to_core(&mut client, &mut core, t0);
    assert!(core.tool_q.held() <= cap, "{} > {cap}", core.tool_q.held());
    assert!(core.ep.received_bytes() > 0, "the rest waits in the window");
    let later = t0 + Duration::from_millis(10);
    to_client(&mut core, &mut client, later);
    assert_eq!(
        client.unacked(),
        8 - core.pending.len(),
        "only what the tool's queue took is acknowledged"
    );
    // The tool reads: the rest moves on, in order.
    let mut ids = Vec::new();
    for _ in 0..20 {
        for m in drain_tool(&mut core, later) {
            let v: serde_json::Value = serde_json::from_slice(&m).expect("json");
            ids.push(v["id"].as_u64().unwrap_or(0));
        }
    }
    assert_eq!(ids, (1..=8).collect::<Vec<u64>>());
}

/// A tool that takes none of its input: after `shed_after`, requests are answered at once
/// (so a plain connection is read again and a client that leaves is noticed); notifications
/// still wait; once the tool reads again, requests are queued again.
#[test]
fn requests_are_answered_while_the_tool_reads_nothing() {
    let t0 = Instant::now();
    let mut core = Core::new(cfg(Framing::Plain), t0);
    let mut fed = 0;
    while core.wants_client() && fed < 10 {
        fed += 1;
        core.on_client_message(big_request(fed, 400_000), t0);
    }
    // The driver hands out what it can write; the tool takes nothing.
    let _ = core.poll_tool_transmit();
    assert!(!core.wants_client(), "the queue is full: backpressure");
    let shed = t0 + Duration::from_secs(1);
    assert!(core.poll_timeout().is_some_and(|t| t <= shed));
    core.on_timeout(shed - Duration::from_millis(1));
    assert!(!core.wants_client(), "not yet");
    core.on_timeout(shed);
    assert!(std::iter::from_fn(|| core.poll_event()).any(|e| matches!(e, Event::Shedding { .. })));
    assert!(core.wants_client(), "read again");
    core.on_client_message(big_request(99, 400_000), shed);
    let got = errors_to(&mut core, shed);
    let codes: Vec<_> = got.iter().map(|v| &v["error"]["code"]).collect();
    assert_eq!(codes, vec![jsonrpc::TOO_MANY_REQUESTS; 2], "{got:?}");
    assert_eq!(got[1]["id"], 99);
    assert!(
        core.poll_timeout().is_some_and(|t| t > shed),
        "no busy wake-up"
    );
    // A notification is not refused: it waits.
    let note = format!(
        r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":"{}"}}"#,
        "p".repeat(400_000)
    );
    core.on_client_message(Bytes::from(note), shed);
    assert!(!core.wants_client());
    // The tool reads again: what waited moves on, and requests queue again.
    let after = shed + Duration::from_millis(5);
    drain_tool(&mut core, after);
    drain_tool(&mut core, after);
    assert!(core.wants_client());
    core.on_client_message(request(100), after);
    assert!(errors_to(&mut core, after).is_empty());
    assert!(core.end_reason().is_none());
}

/// A batch's answer counts against the client's queue: with no room for it, the batch waits
/// (and a plain connection is not read) until the client reads.
#[test]
fn a_batch_waits_for_room_for_its_answer() {
    let t0 = Instant::now();
    let mut core = plain(16 * 1024, t0);
    // The tool's output fills the client's queue (a plain client that does not read).
    let note = format!(
        r#"{{"jsonrpc":"2.0","method":"n","params":"{}"}}"#,
        "x".repeat(15_000)
    );
    core.on_tool_frame(Frame::Line(Bytes::from(note)), t0);
    let batch: Vec<String> = (0..20)
        .map(|i| format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"a"}}"#))
        .collect();
    core.on_client_message(Bytes::from(format!("[{}]", batch.join(","))), t0);
    assert!(
        !core.wants_client(),
        "the answer does not fit: the batch waits"
    );
    assert!(core.held_bytes() <= 16 * 1024 + 2000);
    let got = errors_to(&mut core, t0);
    assert_eq!(got.len(), 2, "the note, then the batch's answer");
    assert_eq!(got[1].as_array().map(Vec::len), Some(20));
    assert!(core.wants_client());
}

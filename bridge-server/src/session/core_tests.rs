//! Unit tests of the relay session core, with explicit time.

use super::*;
use crate::session::pending::{MAX_PENDING, MAX_PENDING_BYTES};
use shared::endpoint::{Endpoint, Limits as EpLimits};
use shared::framing::Frame;
use shared::jsonrpc;
use shared::tunnel;

fn cfg(framing: Framing) -> CoreConfig {
    CoreConfig {
        id: "0123456789abcdef".into(),
        tool: "demo".into(),
        framing,
        max_message: 1 << 20,
        resume_window: Duration::from_secs(60),
        resume_buffer_messages: 1024,
        resume_buffer_bytes: 1 << 20,
        idle_timeout: None,
        stall_timeout: Duration::from_secs(10),
        shed_after: Duration::from_secs(1),
        access: crate::policy::Access::default(),
    }
}

/// A v1 client endpoint connected to a fresh core; the welcome consumed.
fn v1(now: Instant) -> (Core, Endpoint) {
    let mut core = Core::new(cfg(Framing::V1), now);
    let mut client = Endpoint::new(
        Framing::V1,
        EpLimits {
            send_messages: 100_000,
            send_bytes: 1 << 30,
            recv_messages: 100_000,
            recv_bytes: 1 << 30,
        },
    );
    client.connect(0).expect("connect");
    match core.poll_client_transmit(now) {
        Some(Transmit::Binary(f)) => {
            let c = client.on_message(f).expect("welcome");
            assert!(matches!(c, Some(Control::Welcome { resumed: false, .. })));
        }
        other => panic!("expected the welcome, got {other:?}"),
    }
    (core, client)
}

fn to_core(client: &mut Endpoint, core: &mut Core, now: Instant) {
    while let Some(Transmit::Binary(f)) = client.poll_transmit(now) {
        core.on_client_message(f, now);
    }
}

fn to_client(core: &mut Core, client: &mut Endpoint, now: Instant) -> Vec<serde_json::Value> {
    while let Some(Transmit::Binary(f)) = core.poll_client_transmit(now) {
        let _ = client.on_message(f);
    }
    std::iter::from_fn(|| client.poll_receive(now))
        .map(|b| serde_json::from_slice(&b).expect("json"))
        .collect()
}

fn request(id: u64) -> Bytes {
    Bytes::from(format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo"}}}}"#
    ))
}

fn drain_tool(core: &mut Core, now: Instant) -> Vec<Bytes> {
    let out: Vec<Bytes> = std::iter::from_fn(|| core.poll_tool_transmit()).collect();
    let n: usize = out.iter().map(|b| b.len() + 1).sum();
    if n > 0 {
        core.on_tool_wrote(n, now);
    }
    out
}

#[test]
fn a_call_goes_through_and_is_audited() {
    let t0 = Instant::now();
    let (mut core, mut client) = v1(t0);
    client.send(request(1));
    to_core(&mut client, &mut core, t0);
    assert_eq!(drain_tool(&mut core, t0), vec![request(1)]);
    core.on_tool_frame(
        Frame::Line(Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
        )),
        t0,
    );
    let got = to_client(&mut core, &mut client, t0);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["id"], 1);
    let calls: Vec<Event> = std::iter::from_fn(|| core.poll_event())
        .filter(|e| matches!(e, Event::Call { .. }))
        .collect();
    assert!(
        matches!(&calls[..], [Event::Call { outcome: Outcome::Ok, call }] if call.tool_name.as_deref() == Some("echo")),
        "{calls:?}"
    );
}

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

#[test]
fn replies_the_relay_makes_are_bounded_too() {
    let t0 = Instant::now();
    let mut c = cfg(Framing::Plain);
    c.resume_buffer_bytes = 64 * 1024;
    let mut core = Core::new(c, t0);
    let mut taken = 0;
    // A client that sends garbage and never reads: the core stops wanting more.
    while core.wants_client() && taken < 100_000 {
        core.on_client_message(Bytes::from_static(b"x"), t0);
        taken += 1;
    }
    assert!(
        taken < 100_000,
        "the core kept taking input it cannot answer"
    );
    // The bound, plus the one message that may cross it.
    assert!(
        core.held_bytes() <= 64 * 1024 + 200,
        "{}",
        core.held_bytes()
    );
}

#[test]
fn resume_points_and_an_impossible_one() {
    let t0 = Instant::now();
    let (mut core, mut client) = v1(t0);
    for i in 0..3 {
        core.on_tool_frame(
            Frame::Line(Bytes::from(format!(
                r#"{{"jsonrpc":"2.0","method":"n{i}"}}"#
            ))),
            t0,
        );
    }
    // Only the first reaches the client before the connection drops.
    if let Some(Transmit::Binary(f)) = core.poll_client_transmit(t0) {
        client.on_message(f).expect("frame");
    }
    let _ = core.poll_client_transmit(t0);
    assert!(client.poll_receive(t0).is_some());
    core.on_client_gone("connection reset", t0);
    assert!(!core.check_done(), "v1 waits for a resume");
    // An impossible resume point is refused; the session waits on.
    assert!(core.on_attach(u64::MAX, t0).is_err());
    assert!(!core.check_done());
    assert!(core.end_reason().is_none());
    // A right one replays exactly what was missed.
    client.disconnect();
    client.connect(0).expect("connect");
    core.on_attach(client.last_received(), t0).expect("resume");
    let mut welcome = false;
    while let Some(Transmit::Binary(f)) = core.poll_client_transmit(t0) {
        if let Ok(Some(Control::Welcome { resumed, .. })) = client.on_message(f) {
            welcome = resumed;
        }
    }
    assert!(welcome);
    let got: Vec<Bytes> = std::iter::from_fn(|| client.poll_receive(t0)).collect();
    assert_eq!(got.len(), 2);
    // Away past the window: the session ends.
    core.on_client_gone("gone again", t0);
    core.on_timeout(t0 + Duration::from_secs(61));
    assert!(matches!(core.end_reason(), Some(EndReason::ClientAway(_))));
}

#[test]
fn a_crash_answers_every_call_in_flight() {
    let t0 = Instant::now();
    let (mut core, mut client) = v1(t0);
    for i in 1..=3 {
        client.send(request(i));
    }
    to_core(&mut client, &mut core, t0);
    drain_tool(&mut core, t0);
    core.on_tool_exit("exited with status 3".into(), false, t0);
    assert!(!core.tool_is_gone(), "stdout may still hold its last lines");
    core.on_tool_frame(
        Frame::Line(Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
        )),
        t0,
    );
    core.on_tool_stdout_closed(t0);
    assert!(core.tool_is_gone());
    let got = to_client(&mut core, &mut client, t0);
    assert_eq!(got.len(), 3);
    assert!(got[0].get("result").is_some());
    for e in &got[1..] {
        assert_eq!(e["error"]["code"], jsonrpc::TOOL_EXITED);
        assert!(e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("exited with status 3")));
    }
    assert!(core.check_done());
    assert_eq!(core.end_reason().map(EndReason::label), Some("tool_gone"));
}

#[test]
fn a_tool_that_exits_while_its_stdout_is_held_open_is_noticed() {
    let t0 = Instant::now();
    let (mut core, mut client) = v1(t0);
    client.send(request(7));
    to_core(&mut client, &mut core, t0);
    drain_tool(&mut core, t0);
    core.on_tool_exit("exited with status 0".into(), true, t0);
    assert!(core.poll_timeout().is_some_and(|t| t <= t0 + EXIT_SETTLE));
    core.on_timeout(t0 + EXIT_SETTLE);
    let got = to_client(&mut core, &mut client, t0 + EXIT_SETTLE);
    assert_eq!(got[0]["error"]["code"], jsonrpc::TOOL_EXITED);
}

#[test]
fn drain_ends_once_calls_are_answered() {
    let t0 = Instant::now();
    let (mut core, mut client) = v1(t0);
    client.send(request(1));
    to_core(&mut client, &mut core, t0);
    drain_tool(&mut core, t0);
    core.on_drain();
    assert!(!core.check_done());
    let mut drain = false;
    while let Some(Transmit::Binary(f)) = core.poll_client_transmit(t0) {
        drain |= matches!(client.on_message(f), Ok(Some(Control::Drain { .. })));
    }
    assert!(drain, "the client is told");
    core.on_tool_frame(
        Frame::Line(Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
        )),
        t0,
    );
    assert!(core.check_done());
    assert_eq!(core.end_reason(), Some(&EndReason::RelayShutdown));
}

#[test]
fn a_tool_that_stops_reading_its_stdin_ends_the_session() {
    let t0 = Instant::now();
    let (mut core, mut client) = v1(t0);
    client.send(request(1));
    to_core(&mut client, &mut core, t0);
    let _ = core.poll_tool_transmit();
    let stall = t0 + Duration::from_secs(10);
    assert!(core.poll_timeout().is_some_and(|t| t <= stall));
    core.on_timeout(stall - Duration::from_millis(1));
    assert!(core.end_reason().is_none());
    core.on_timeout(stall);
    assert!(matches!(
        core.end_reason(),
        Some(EndReason::ToolStalled { .. })
    ));
    let got = {
        core.finish();
        to_client(&mut core, &mut client, stall)
    };
    assert_eq!(got[0]["error"]["code"], jsonrpc::TOOL_EXITED);
}

#[test]
fn calls_in_flight_are_bounded_and_names_cut() {
    let t0 = Instant::now();
    let mut core = Core::new(cfg(Framing::Plain), t0);
    let long = "m".repeat(100_000);
    for i in 0..MAX_PENDING + 1 {
        let line = format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"{long}"}}"#);
        core.on_client_message(Bytes::from(line), t0);
        while core.poll_tool_transmit().is_some() {}
        core.on_tool_wrote(usize::MAX, t0);
        while core.poll_client_transmit(t0).is_some() {}
    }
    assert_eq!(core.pending.len(), MAX_PENDING);
    assert!(core.pending.calls().all(|c| c.method.len() <= 128));
    let refused = std::iter::from_fn(|| core.poll_event())
        .filter(|e| {
            matches!(
                e,
                Event::Call {
                    outcome: Outcome::Refused,
                    ..
                }
            )
        })
        .count();
    assert_eq!(refused, 1);
}

#[test]
fn end_notice_text_comes_from_the_reason() {
    let t0 = Instant::now();
    let (mut core, _client) = v1(t0);
    core.on_client_message(
        tunnel::encode_control(&Control::End {
            reason: "bye\nfake log line".into(),
        }),
        t0,
    );
    assert!(core.check_done());
    let text = core
        .end_reason()
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(!text.contains('\n'), "{text}");
}

fn big_request(id: u64, len: usize) -> Bytes {
    Bytes::from(format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"put","arguments":{{"blob":"{}"}}}}}}"#,
        "a".repeat(len)
    ))
}

fn errors_to(core: &mut Core, now: Instant) -> Vec<serde_json::Value> {
    std::iter::from_fn(|| core.poll_client_transmit(now))
        .map(|t| match t {
            Transmit::Text(b) => serde_json::from_slice(&b).expect("json"),
            other => panic!("plain transmits text, got {other:?}"),
        })
        .collect()
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
    let mut c = cfg(Framing::Plain);
    c.resume_buffer_bytes = 16 * 1024;
    let mut core = Core::new(c, t0);
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

/// Ids are kept while their calls are in flight: the table is bounded in bytes too, and a
/// request past it is answered at once.
#[test]
fn huge_ids_do_not_grow_the_calls_table() {
    let t0 = Instant::now();
    let mut c = cfg(Framing::Plain);
    c.max_message = 4 << 20;
    c.resume_buffer_bytes = 16 << 20;
    let mut core = Core::new(c, t0);
    let id = "i".repeat(700_000);
    let mut refused = Vec::new();
    for n in 0..5 {
        let line = format!(r#"{{"jsonrpc":"2.0","id":"{n}{id}","method":"m"}}"#);
        core.on_client_message(Bytes::from(line), t0);
        drain_tool(&mut core, t0);
        refused.extend(errors_to(&mut core, t0));
    }
    assert!(core.pending.bytes() <= MAX_PENDING_BYTES);
    assert_eq!(core.pending.len(), 2);
    assert_eq!(refused.len(), 3);
    assert!(refused
        .iter()
        .all(|v| v["error"]["code"] == jsonrpc::TOO_MANY_REQUESTS));
}

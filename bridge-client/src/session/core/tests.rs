//! Unit tests of the client core, with explicit time; the relay is a `shared::endpoint`
//! [`Endpoint`] (the relay's own core lives in bridge-server, which the client does not use).

use serde_json::{json, Value};
use shared::endpoint::Limits as EpLimits;
use shared::framing::Frame;

use shared::tunnel::Control;

use super::ide::with_id;
use super::*;
use crate::session::stdout::Output;
use crate::session::Welcome;

mod ending;
mod prop;

pub(super) fn cfg() -> CoreConfig {
    CoreConfig {
        url: "ws://127.0.0.1:1/mcp/demo".into(),
        max_message: 1 << 20,
        backoff: Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        },
        seed: 7,
    }
}

/// A relay session's endpoint.
pub(super) fn relay_ep() -> Endpoint {
    Endpoint::new(
        Framing::V1,
        EpLimits {
            send_messages: 1024,
            send_bytes: 16 << 20,
            recv_messages: 1024,
            recv_bytes: 16 << 20,
        },
    )
}

pub(super) fn welcome(session: &str, resumed: bool, last_seq: u64) -> Welcome {
    Welcome {
        session: session.into(),
        resumed,
        last_seq,
        resume_window: Duration::from_secs(60),
    }
}

pub(super) fn line(v: Value) -> Frame {
    Frame::Line(Bytes::from(v.to_string()))
}

pub(super) fn request(id: u64, method: &str) -> Frame {
    line(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": {}}))
}

pub(super) fn response(id: &Value) -> Bytes {
    Bytes::from(json!({"jsonrpc": "2.0", "id": id, "result": {"ok": true}}).to_string())
}

/// Everything the core has for stdout, written.
pub(super) fn output(core: &mut Core, now: Instant) -> Vec<Value> {
    let mut out = Vec::new();
    while let Some(b) = core.poll_output() {
        core.on_output_written(b.len() + 1, now);
        out.push(serde_json::from_slice(&b).expect("stdout is JSON"));
    }
    out
}

/// Frames from the core to the relay; what the relay received, as JSON.
pub(super) fn to_relay(core: &mut Core, relay: &mut Endpoint, now: Instant) -> Vec<Value> {
    while let Some(Transmit::Binary(f)) = core.poll_transmit(now) {
        relay.on_message(f).expect("a good frame");
    }
    std::iter::from_fn(|| relay.poll_receive(now))
        .map(|b| serde_json::from_slice(&b).expect("json"))
        .collect()
}

pub(super) fn to_core(relay: &mut Endpoint, core: &mut Core, now: Instant) {
    while let Some(Transmit::Binary(f)) = relay.poll_transmit(now) {
        core.on_relay_message(f, now);
    }
}

/// A core connected to a new relay session `s1`.
pub(super) fn connected(t0: Instant) -> (Core, Endpoint) {
    let mut core = Core::new(cfg(), t0);
    let req = core.poll_connect(t0).expect("connects at once");
    assert_eq!(req.resume, None);
    assert!(!req.reestablish);
    let mut relay = relay_ep();
    relay.connect(0).expect("connect");
    core.on_connected(welcome("s1", false, 0), t0);
    assert!(core.is_connected());
    (core, relay)
}

pub(super) fn error_code(v: &Value) -> i64 {
    v["error"]["code"].as_i64().unwrap_or(0)
}

#[test]
fn replayed_initialize_gets_its_own_id() {
    let init = br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}"#;
    let id = Id::Str("mcp-bridge-reinit-1".into());
    let line = with_id(init, &id).expect("rewritten");
    let v: Value = serde_json::from_slice(&line).expect("json");
    assert_eq!(v["id"], "mcp-bridge-reinit-1");
    assert_eq!(v["params"]["protocolVersion"], "2025-06-18");
}

#[test]
fn a_resume_starts_after_what_each_side_has() {
    let t0 = Instant::now();
    let (mut core, mut relay) = connected(t0);
    for id in 1..=3 {
        core.on_stdin(request(id, "tools/call"));
    }
    // Only the first request reaches the relay; the relay's notification reaches the client.
    let first = match core.poll_transmit(t0) {
        Some(Transmit::Binary(f)) => f,
        other => panic!("{other:?}"),
    };
    relay.on_message(first).expect("frame");
    while core.poll_transmit(t0).is_some() {} // lost on the wire
    relay.send(Bytes::from_static(
        br#"{"jsonrpc":"2.0","method":"notifications/progress"}"#,
    ));
    to_core(&mut relay, &mut core, t0);
    assert_eq!(output(&mut core, t0).len(), 1);

    let t1 = t0 + Duration::from_millis(10);
    core.on_connection_lost("connection reset", t1);
    relay.disconnect();
    assert!(!core.is_connected());
    assert_eq!(core.poll_connect(t1), None, "not before the backoff");
    assert!(core.wants_stdin(), "stdin is read while away");
    let t2 = t1 + Duration::from_millis(100);
    let req = core.poll_connect(t2).expect("a resume");
    assert_eq!(
        req.resume,
        Some(("s1".to_owned(), 1)),
        "resumes after seq 1"
    );
    assert!(!req.reestablish);
    relay.connect(1).expect("the relay resumes");
    // The relay has the first request, not yet taken: its resume point is 0.
    core.on_connected(welcome("s1", true, relay.last_received()), t2);
    let got = to_relay(&mut core, &mut relay, t2);
    let ids: Vec<&Value> = got.iter().map(|m| &m["id"]).collect();
    assert_eq!(
        ids,
        [&json!(1), &json!(2), &json!(3)],
        "each once, in order"
    );
    for m in &got {
        relay.send(response(&m["id"]));
    }
    to_core(&mut relay, &mut core, t2);
    let answers = output(&mut core, t2);
    assert_eq!(answers.len(), 3);
    assert!(core.pending.is_empty());
}

#[test]
fn an_impossible_resume_point_gives_the_session_up() {
    let t0 = Instant::now();
    let (mut core, _relay) = connected(t0);
    core.on_stdin(request(1, "tools/call"));
    while core.poll_transmit(t0).is_some() {}
    core.on_connection_lost("reset", t0);
    let t1 = t0 + Duration::from_secs(1);
    core.poll_connect(t1).expect("resume");
    core.on_connected(welcome("s1", true, 99), t1);
    assert!(!core.is_connected(), "the connection is dropped");
    let out = output(&mut core, t1);
    assert_eq!(out.len(), 1);
    assert_eq!(error_code(&out[0]), shared::jsonrpc::RELAY_UNAVAILABLE);
    assert!(out[0]["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("resume point is wrong")));
}

#[test]
fn a_new_session_replays_initialize_and_swallows_its_answer() {
    let t0 = Instant::now();
    let (mut core, mut relay) = connected(t0);
    core.on_stdin(request(0, "initialize"));
    core.on_stdin(line(
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    ));
    let got = to_relay(&mut core, &mut relay, t0);
    assert_eq!(got.len(), 2);
    relay.send(response(&json!(0)));
    to_core(&mut relay, &mut core, t0);
    assert_eq!(output(&mut core, t0)[0]["id"], 0);

    // The relay restarts: the session is gone.
    relay.send_control(&Control::End {
        reason: "the relay is shutting down".into(),
    });
    to_core(&mut relay, &mut core, t0);
    assert!(!core.is_connected());
    assert_eq!(
        core.poll_connect(t0),
        None,
        "nothing waits: no new session yet"
    );

    // The IDE's next request opens one, and waits behind the replayed handshake.
    core.on_stdin(request(7, "tools/list"));
    let req = core.poll_connect(t0).expect("a new session");
    assert_eq!(req.resume, None);
    assert!(req.reestablish);
    let mut relay = relay_ep();
    relay.connect(0).expect("connect");
    core.on_connected(welcome("s2", false, 0), t0);
    let got = to_relay(&mut core, &mut relay, t0);
    assert_eq!(got.len(), 1, "only the replayed initialize: {got:?}");
    assert_eq!(got[0]["method"], "initialize");
    assert_eq!(got[0]["id"], "mcp-bridge-reinit-1");
    relay.send(response(&got[0]["id"]));
    to_core(&mut relay, &mut core, t0);
    assert!(output(&mut core, t0).is_empty(), "the IDE never sees it");
    let got = to_relay(&mut core, &mut relay, t0);
    let methods: Vec<&Value> = got.iter().map(|m| &m["method"]).collect();
    assert_eq!(
        methods,
        [&json!("notifications/initialized"), &json!("tools/list")]
    );
}

#[test]
fn a_replayed_initialize_without_answer_is_given_up_after_its_wait() {
    let t0 = Instant::now();
    let (mut core, mut relay) = connected(t0);
    core.on_stdin(request(0, "initialize"));
    to_relay(&mut core, &mut relay, t0);
    core.on_relay_fatal("a message exceeded the size limit", t0);
    core.on_stdin(request(1, "ping"));
    core.poll_connect(t0).expect("a new session");
    let mut relay = relay_ep();
    relay.connect(0).expect("connect");
    core.on_connected(welcome("s2", false, 0), t0);
    assert_eq!(to_relay(&mut core, &mut relay, t0).len(), 1);
    assert_eq!(core.poll_timeout(t0), Some(t0 + REINIT_WAIT));
    core.on_timeout(t0 + REINIT_WAIT);
    let got = to_relay(&mut core, &mut relay, t0 + REINIT_WAIT);
    assert_eq!(got[0]["method"], "ping", "held messages go on");
}

#[test]
fn sessions_that_keep_dying_at_once_are_not_retried() {
    let t0 = Instant::now();
    let (mut core, mut relay) = connected(t0);
    core.on_stdin(request(0, "initialize"));
    to_relay(&mut core, &mut relay, t0);
    relay.send_control(&Control::End {
        reason: "tool `demo` exited with status 1".into(),
    });
    to_core(&mut relay, &mut core, t0);
    assert_eq!(error_code(&output(&mut core, t0)[0]), -32011);

    // The first session does not count; each new one that dies within 2 s does.
    core.on_stdin(request(1, "tools/list"));
    let mut now = t0;
    for n in 2..=3 {
        core.poll_connect(now).expect("a new session");
        let mut relay = relay_ep();
        relay.connect(0).expect("connect");
        core.on_connected(welcome(&format!("s{n}"), false, 0), now);
        let got = to_relay(&mut core, &mut relay, now);
        assert_eq!(got[0]["method"], "initialize", "request 1 waits behind it");
        now += Duration::from_millis(500);
        relay.send_control(&Control::End {
            reason: "tool `demo` exited with status 1".into(),
        });
        to_core(&mut relay, &mut core, now);
        assert_eq!(core.quick_failures, n - 1);
    }
    let out = output(&mut core, now);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0]["id"], 1);
    assert!(out[0]["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("not retried")));
    assert_eq!(core.poll_connect(now), None, "no third session on its own");
    core.on_stdin(request(2, "tools/list"));
    assert!(
        core.poll_connect(now).is_some(),
        "the IDE's next message tries again"
    );
}

#[test]
fn while_the_relay_drains_new_work_is_held_for_the_next_session() {
    let t0 = Instant::now();
    let (mut core, mut relay) = connected(t0);
    core.on_stdin(request(1, "tools/call"));
    to_relay(&mut core, &mut relay, t0);
    relay.send_control(&Control::Drain {
        reason: "the relay is shutting down".into(),
    });
    relay.send(Bytes::from_static(
        br#"{"jsonrpc":"2.0","id":"r1","method":"roots/list"}"#,
    ));
    to_core(&mut relay, &mut core, t0);
    assert_eq!(output(&mut core, t0).len(), 1);
    core.on_stdin(request(2, "tools/call"));
    core.on_stdin(line(json!({"jsonrpc": "2.0", "method": "notifications/x"})));
    core.on_stdin(line(
        json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}),
    ));
    core.on_stdin(line(
        json!({"jsonrpc": "2.0", "id": "r1", "result": {"roots": []}}),
    ));
    let got = to_relay(&mut core, &mut relay, t0);
    assert_eq!(got.len(), 2, "only the cancel and the answer: {got:?}");
    assert_eq!(got[0]["method"], "notifications/cancelled");
    assert_eq!(got[1]["id"], "r1");
    assert_eq!(core.held.len(), 2);

    relay.send_control(&Control::End {
        reason: "the relay is shutting down".into(),
    });
    to_core(&mut relay, &mut core, t0);
    assert!(output(&mut core, t0).is_empty(), "request 1 was cancelled");
    let req = core
        .poll_connect(t0)
        .expect("held work opens a new session");
    assert!(req.reestablish);
    let mut relay = relay_ep();
    relay.connect(0).expect("connect");
    core.on_connected(welcome("s2", false, 0), t0);
    let got = to_relay(&mut core, &mut relay, t0);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0]["id"], 2);
    assert_eq!(got[1]["method"], "notifications/x");
}

#[test]
fn a_lost_session_answers_what_it_had_and_moves_what_it_never_sent() {
    let t0 = Instant::now();
    let (mut core, mut relay) = connected(t0);
    core.on_stdin(request(1, "tools/call"));
    core.on_stdin(request(2, "tools/call"));
    to_relay(&mut core, &mut relay, t0);
    core.on_connection_lost("reset", t0);
    core.on_stdin(request(3, "tools/call")); // queued for the resume, never sent
    let t1 = t0 + Duration::from_secs(1);
    core.poll_connect(t1).expect("resume");
    core.on_connect_failed(
        ClientError::Refused {
            url: String::new(),
            status: 404,
            reason: "unknown session".into(),
            www_authenticate: None,
        },
        t1,
    );
    let out = output(&mut core, t1);
    let ids: Vec<&Value> = out.iter().map(|m| &m["id"]).collect();
    assert_eq!(ids, [&json!(1), &json!(2)], "answered once each");
    assert!(out.iter().all(|m| error_code(m) == -32011
        && m["error"]["message"]
            .as_str()
            .is_some_and(|s| s.contains("unknown session") && s.contains("retry it"))));
    let req = core.poll_connect(t1).expect("at once after a 404");
    assert!(req.reestablish);
    let mut relay = relay_ep();
    relay.connect(0).expect("connect");
    core.on_connected(welcome("s2", false, 0), t1);
    let got = to_relay(&mut core, &mut relay, t1);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["id"], 3, "request 3 goes to the new session");
    assert!(output(&mut core, t1).is_empty());
}

#[test]
fn the_resume_window_is_counted_by_the_client_too() {
    let t0 = Instant::now();
    let (mut core, _relay) = connected(t0);
    core.on_stdin(request(1, "tools/call"));
    while core.poll_transmit(t0).is_some() {}
    core.on_connection_lost("reset", t0);
    let mut now = t0;
    while now < t0 + Duration::from_secs(61) {
        now += Duration::from_millis(900);
        if core.poll_connect(now).is_some() {
            core.on_connect_failed(
                ClientError::Unreachable {
                    url: String::new(),
                    reason: "refused".into(),
                },
                now,
            );
        }
    }
    let out = output(&mut core, now);
    assert_eq!(out.len(), 1);
    assert!(out[0]["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("60 s resume window")));
}

//! A session's life: a call audited, resume, the tool's exit or stall, drain, and the end
//! notice.

use super::*;
use shared::jsonrpc;
use shared::tunnel;

#[test]
fn a_call_goes_through_and_is_audited() {
    let t0 = Instant::now();
    let (mut core, mut client) = v1_sending(t0, [1]);
    assert_eq!(drain_tool(&mut core, t0), vec![request(1)]);
    tool_result(&mut core, 1, t0);
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
    let (mut core, mut client) = v1_sending(t0, 1..=3);
    drain_tool(&mut core, t0);
    core.on_tool_exit("exited with status 3".into(), false, t0);
    assert!(!core.tool_is_gone(), "stdout may still hold its last lines");
    tool_result(&mut core, 1, t0);
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
    let (mut core, mut client) = v1_sending(t0, [7]);
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
    let (mut core, mut client) = v1_sending(t0, [1]);
    drain_tool(&mut core, t0);
    core.on_drain();
    assert!(!core.check_done());
    let mut drain = false;
    while let Some(Transmit::Binary(f)) = core.poll_client_transmit(t0) {
        drain |= matches!(client.on_message(f), Ok(Some(Control::Drain { .. })));
    }
    assert!(drain, "the client is told");
    tool_result(&mut core, 1, t0);
    assert!(core.check_done());
    assert_eq!(core.end_reason(), Some(&EndReason::RelayShutdown));
}

#[test]
fn an_administrators_end_answers_calls_in_flight_with_its_reason() {
    let t0 = Instant::now();
    let (mut core, mut client) = v1_sending(t0, [1, 2]);
    drain_tool(&mut core, t0);
    tool_result(&mut core, 1, t0);
    assert!(core.is_attached());
    core.on_end_request(crate::session::EndRequest::Admin);
    assert!(core.check_done(), "ends at once, calls in flight or not");
    let reason = core.finish();
    assert_eq!(reason, EndReason::RelayAdmin);
    let got = to_client(&mut core, &mut client, t0);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[0].get("result").is_some());
    assert_eq!(got[1]["id"], 2);
    assert_eq!(got[1]["error"]["code"], jsonrpc::RELAY_UNAVAILABLE);
    assert!(got[1]["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("administrator ended the session")));
}

#[test]
fn a_tool_that_stops_reading_its_stdin_ends_the_session() {
    let t0 = Instant::now();
    let (mut core, mut client) = v1_sending(t0, [1]);
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

#[test]
fn error_answers_are_recorded_by_source_and_code() {
    use crate::session::end::Source;
    let t0 = Instant::now();
    let (mut core, mut client) = v1_sending(t0, 1..=3);
    drain_tool(&mut core, t0);
    // The tool's own error, with a code of its own.
    core.on_tool_frame(
        Frame::Line(Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":1,"error":{"code":7,"message":"no"}}"#,
        )),
        t0,
    );
    // The client's unusable message.
    client.send(Bytes::from_static(b"{not json"));
    to_core(&mut client, &mut core, t0);
    // The relay shuts down under calls 2 and 3.
    core.on_force();
    assert_eq!(core.finish().source(), Source::Relay);
    let errors: Vec<(Source, Option<i64>)> = std::iter::from_fn(|| core.poll_event())
        .filter_map(|e| match e {
            Event::ErrorAnswer { source, code } => Some((source, code)),
            _ => None,
        })
        .collect();
    assert_eq!(
        errors,
        vec![
            (Source::Tool, Some(7)),
            (Source::Client, Some(jsonrpc::PARSE_ERROR)),
            (Source::Relay, Some(jsonrpc::RELAY_UNAVAILABLE)),
            (Source::Relay, Some(jsonrpc::RELAY_UNAVAILABLE)),
        ]
    );
}

//! How the client ends, and how it bounds what it holds: stdin's end, a stop, a first
//! connection that fails, and an IDE that does not read.

use bytes::Bytes;
use shared::framing::Frame;

use super::super::*;
use super::{cfg, connected, error_code, output, request, response, to_core, to_relay};

#[test]
fn stdin_eof_waits_for_answers_then_gives_up_at_its_deadline() {
    let t0 = Instant::now();
    let (mut core, mut relay) = connected(t0);
    core.on_stdin(request(1, "tools/call"));
    to_relay(&mut core, &mut relay, t0);
    core.on_stdin_eof(t0);
    assert!(!core.wants_stdin());
    assert!(!core.is_done(t0), "a request is in flight");
    assert_eq!(core.poll_timeout(t0), Some(t0 + EOF_ANSWER_WAIT));
    assert!(core.is_done(t0 + EOF_ANSWER_WAIT));
    let exit = core.finish();
    assert!(exit.tell_relay && exit.result.is_ok());
    let out = output(&mut core, t0);
    assert_eq!(out.len(), 1, "answered before exit");
    assert_eq!(error_code(&out[0]), -32011);

    // With nothing in flight it is done at once.
    let (mut core, mut relay) = connected(t0);
    core.on_stdin(request(1, "tools/call"));
    let got = to_relay(&mut core, &mut relay, t0);
    core.on_stop(t0);
    relay.send(response(&got[0]["id"]));
    to_core(&mut relay, &mut core, t0);
    assert!(core.is_done(t0));
    assert_eq!(output(&mut core, t0).len(), 1);
}

#[test]
fn a_failed_first_connection_answers_every_request_then_ends() {
    let t0 = Instant::now();
    let mut core = Core::new(cfg(), t0);
    core.poll_connect(t0).expect("connect");
    core.on_stdin(request(1, "initialize"));
    assert!(core.wants_stdin(), "stdin is read while connecting");
    core.on_connect_failed(
        ClientError::Unreachable {
            url: "ws://x".into(),
            reason: "refused".into(),
        },
        t0,
    );
    let t1 = t0 + Duration::from_millis(100);
    core.on_stdin(request(2, "tools/list"));
    assert!(!core.is_done(t1));
    assert_eq!(core.poll_connect(t1), None, "never retried");
    let out = output(&mut core, t1);
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|m| error_code(m) == -32011));
    assert!(core.is_done(t0 + FIRST_FAILURE_DRAIN));
    let exit = core.finish();
    assert!(!exit.tell_relay);
    assert!(matches!(exit.result, Err(ClientError::Unreachable { .. })));
}

#[test]
fn a_first_connection_cut_before_an_answer_is_tried_again_a_few_times() {
    let t0 = Instant::now();
    let mut core = Core::new(cfg(), t0);
    let cut = || ClientError::Handshake {
        url: "ws://x".into(),
        reason: "the connection ended before the relay answered".into(),
    };
    core.on_stdin(request(1, "initialize"));
    let mut now = t0;
    for _ in 0..FIRST_RETRIES {
        core.poll_connect(now).expect("an attempt");
        core.on_connect_failed(cut(), now);
        assert!(output(&mut core, now).is_empty(), "nothing answered yet");
        now += Duration::from_secs(10);
    }
    core.poll_connect(now).expect("the last attempt");
    core.on_connect_failed(cut(), now);
    let out = output(&mut core, now);
    assert_eq!(out.len(), 1);
    assert_eq!(error_code(&out[0]), -32011);
    assert_eq!(core.poll_connect(now), None, "then it gives up");
}

#[test]
fn replies_of_its_own_stop_stdin_while_stdout_is_not_read() {
    let t0 = Instant::now();
    let mut core = Core::new(cfg(), t0);
    let mut taken = 0;
    while core.wants_stdin() && taken < 1_000_000 {
        core.on_stdin(Frame::Line(Bytes::from_static(b"x")));
        taken += 1;
    }
    assert!(!core.wants_stdin());
    assert!(core.out_bytes < OUT_LIMIT + 4096, "{}", core.out_bytes);
    output(&mut core, t0);
    assert!(core.wants_stdin(), "reading resumes once stdout drains");
}

#[test]
fn a_slow_ide_stops_the_reading_of_the_relay_not_the_acks() {
    let t0 = Instant::now();
    let (mut core, mut relay) = connected(t0);
    let big = Bytes::from(format!(
        r#"{{"jsonrpc":"2.0","method":"notifications/message","params":{{"data":"{}"}}}}"#,
        "x".repeat(64 * 1024)
    ));
    let mut sent = 0;
    while core.wants_relay() {
        relay.send(big.clone());
        to_core(&mut relay, &mut core, t0);
        sent += 1;
        assert!(sent < 1000, "never stops reading");
    }
    assert!(core.ep.received_bytes() >= RELAY_HOLD);
    assert!(core.out_bytes + core.in_stdout >= OUT_LIMIT);
    let now = t0 + Duration::from_millis(10);
    let n = output(&mut core, now).len();
    assert_eq!(n, sent, "everything arrives once the IDE reads");
    assert!(core.wants_relay());
    to_relay(&mut core, &mut relay, now);
    assert!(relay.all_acked(), "and is acknowledged");
}

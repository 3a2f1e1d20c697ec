//! Unit tests of [`super`].

use super::*;
use proptest::prelude::*;

fn limits() -> Limits {
    Limits {
        send_messages: 1024,
        send_bytes: 1 << 20,
        recv_messages: 1024,
        recv_bytes: 1 << 20,
    }
}

fn pair() -> (Endpoint, Endpoint) {
    let mut a = Endpoint::new(Framing::V1, limits());
    let mut b = Endpoint::new(Framing::V1, limits());
    a.connect(0).expect("connect");
    b.connect(0).expect("connect");
    (a, b)
}

fn deliver(from: &mut Endpoint, to: &mut Endpoint, now: Instant) {
    while let Some(Transmit::Binary(f)) = from.poll_transmit(now) {
        to.on_message(f).expect("frame");
    }
}

#[test]
fn acks_are_due_after_delay_or_count() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair();
    a.send(Bytes::from_static(b"1"));
    deliver(&mut a, &mut b, t0);
    assert!(
        b.poll_timeout().is_none(),
        "nothing taken yet, nothing to ack"
    );
    assert_eq!(b.poll_receive(t0), Some(Bytes::from_static(b"1")));
    assert_eq!(b.poll_timeout(), Some(t0 + ACK_DELAY));
    assert!(!b.wants_transmit(t0));
    assert!(b.wants_transmit(t0 + ACK_DELAY));
    deliver(&mut b, &mut a, t0 + ACK_DELAY);
    assert!(a.all_acked());
    for i in 0..ACK_EVERY {
        a.send(Bytes::from(i.to_string()));
    }
    deliver(&mut a, &mut b, t0);
    while b.poll_receive(t0).is_some() {}
    assert!(
        b.wants_transmit(t0),
        "an ack is due at once after {ACK_EVERY}"
    );
}

#[test]
fn data_piggybacks_the_ack() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair();
    a.send(Bytes::from_static(b"ping"));
    deliver(&mut a, &mut b, t0);
    b.poll_receive(t0);
    b.send(Bytes::from_static(b"pong"));
    deliver(&mut b, &mut a, t0);
    assert!(a.all_acked());
    assert!(b.poll_timeout().is_none(), "the data frame carried the ack");
}

#[test]
fn held_data_is_not_acked_and_overrun_is_fatal() {
    let t0 = Instant::now();
    let small = Limits {
        recv_messages: 3,
        ..limits()
    };
    let mut a = Endpoint::new(Framing::V1, limits());
    let mut b = Endpoint::new(Framing::V1, small);
    a.connect(0).expect("connect");
    b.connect(0).expect("connect");
    for i in 0..4 {
        a.send(Bytes::from(i.to_string()));
    }
    let mut frames = Vec::new();
    while let Some(Transmit::Binary(f)) = a.poll_transmit(t0) {
        frames.push(f);
    }
    for f in frames.iter().take(3) {
        b.on_message(f.clone()).expect("within the window");
    }
    assert!(!b.wants_transmit(t0 + ACK_DELAY), "nothing taken, no ack");
    assert_eq!(b.peek_received().map(|p| &p[..]), Some(&b"0"[..]));
    assert!(
        !b.wants_transmit(t0 + ACK_DELAY),
        "a peek acknowledges nothing"
    );
    let err = b.on_message(frames[3].clone()).expect_err("overrun");
    assert!(err.is_fatal());
}

#[test]
fn resume_replays_exactly_what_was_missed() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair();
    for i in 1..=3 {
        a.send(Bytes::from(i.to_string()));
    }
    // Only the first frame arrives; the connection drops.
    let first = match a.poll_transmit(t0) {
        Some(Transmit::Binary(f)) => f,
        other => panic!("{other:?}"),
    };
    b.on_message(first).expect("frame");
    let _ = a.poll_transmit(t0);
    assert_eq!(b.poll_receive(t0), Some(Bytes::from_static(b"1")));
    a.disconnect();
    b.disconnect();
    a.connect(b.last_received()).expect("resume");
    b.connect(a.last_received()).expect("resume");
    deliver(&mut a, &mut b, t0);
    let got: Vec<Bytes> = std::iter::from_fn(|| b.poll_receive(t0)).collect();
    assert_eq!(
        got,
        vec![Bytes::from_static(b"2"), Bytes::from_static(b"3")]
    );
    assert!(a.connect(99).is_err(), "an impossible resume point");
}

#[test]
fn plain_framing_forgets_what_it_wrote() {
    let t0 = Instant::now();
    let mut p = Endpoint::new(Framing::Plain, limits());
    p.connect(0).expect("connect");
    p.send(Bytes::from_static(b"{}"));
    assert_eq!(
        p.poll_transmit(t0),
        Some(Transmit::Text(Bytes::from_static(b"{}")))
    );
    assert!(p.all_acked());
    p.on_message(Bytes::from_static(b"x")).expect("held");
    assert_eq!(p.poll_receive(t0), Some(Bytes::from_static(b"x")));
    assert!(p.poll_timeout().is_none(), "no acks on a plain connection");
}

proptest! {
    /// Two endpoints over a link that drops connections (and what was in flight) at random
    /// deliver every message exactly once, in order, in both directions.
    #[test]
    fn exactly_once_over_a_dropping_link(ops in proptest::collection::vec(0u8..7, 1..400)) {
        let t0 = Instant::now();
        let (mut a, mut b) = pair();
        let (mut sent_a, mut sent_b) = (0u64, 0u64);
        let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
        let mut wire_ab: VecDeque<Bytes> = VecDeque::new();
        let mut wire_ba: VecDeque<Bytes> = VecDeque::new();
        let mut now = t0;
        for op in ops {
            now += Duration::from_millis(1);
            match op {
                0 if a.has_room(8) => { sent_a += 1; a.send(Bytes::from(sent_a.to_string())); }
                1 if b.has_room(8) => { sent_b += 1; b.send(Bytes::from(sent_b.to_string())); }
                2 => {
                    if let Some(Transmit::Binary(f)) = a.poll_transmit(now) { wire_ab.push_back(f); }
                    if let Some(Transmit::Binary(f)) = b.poll_transmit(now) { wire_ba.push_back(f); }
                }
                3 => {
                    if let Some(f) = wire_ab.pop_front() { b.on_message(f).map_err(|e| TestCaseError::fail(e.to_string()))?; }
                    if let Some(f) = wire_ba.pop_front() { a.on_message(f).map_err(|e| TestCaseError::fail(e.to_string()))?; }
                }
                4 => {
                    if let Some(m) = a.poll_receive(now) { got_a.push(m); }
                    if let Some(m) = b.poll_receive(now) { got_b.push(m); }
                }
                5 => {
                    // The connection drops with whatever was in flight; both resume.
                    wire_ab.clear();
                    wire_ba.clear();
                    a.disconnect();
                    b.disconnect();
                    a.connect(b.last_received()).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    b.connect(a.last_received()).map_err(|e| TestCaseError::fail(e.to_string()))?;
                }
                _ => {}
            }
        }
        // Settle: a clean connection until both sides are done.
        wire_ab.clear();
        wire_ba.clear();
        a.disconnect();
        b.disconnect();
        a.connect(b.last_received()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        b.connect(a.last_received()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for _ in 0..10_000 {
            now += ACK_DELAY;
            let mut moved = false;
            while let Some(Transmit::Binary(f)) = a.poll_transmit(now) { b.on_message(f).map_err(|e| TestCaseError::fail(e.to_string()))?; moved = true; }
            while let Some(Transmit::Binary(f)) = b.poll_transmit(now) { a.on_message(f).map_err(|e| TestCaseError::fail(e.to_string()))?; moved = true; }
            while let Some(m) = a.poll_receive(now) { got_a.push(m); moved = true; }
            while let Some(m) = b.poll_receive(now) { got_b.push(m); moved = true; }
            if !moved && a.all_acked() && b.all_acked() { break; }
        }
        let want_b: Vec<Bytes> = (1..=sent_a).map(|n| Bytes::from(n.to_string())).collect();
        let want_a: Vec<Bytes> = (1..=sent_b).map(|n| Bytes::from(n.to_string())).collect();
        prop_assert_eq!(got_b, want_b);
        prop_assert_eq!(got_a, want_a);
        prop_assert!(a.all_acked() && b.all_acked());
    }
}

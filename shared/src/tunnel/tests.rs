//! Unit tests of [`super`].

use super::*;
use proptest::prelude::*;

#[test]
fn frames_round_trip() {
    let d = encode_data(7, 3, br#"{"jsonrpc":"2.0"}"#);
    assert_eq!(
        decode(d),
        Ok(Frame::Data {
            seq: 7,
            ack: 3,
            payload: Bytes::from_static(br#"{"jsonrpc":"2.0"}"#)
        })
    );
    assert_eq!(decode(encode_ack(9)), Ok(Frame::Ack { ack: 9 }));
    let c = Control::Welcome {
        version: 1,
        session: "ab".into(),
        resumed: false,
        last_seq: 0,
        resume_window_ms: 60_000,
    };
    assert_eq!(decode(encode_control(&c)), Ok(Frame::Control(c)));
    assert_eq!(decode(Bytes::new()), Err(FrameError::Empty));
    assert_eq!(
        decode(Bytes::from_static(&[1, 0, 0])),
        Err(FrameError::Truncated)
    );
    assert_eq!(
        decode(Bytes::from_static(&[9])),
        Err(FrameError::UnknownType(9))
    );
    assert!(matches!(
        decode(Bytes::from_static(b"\x03{\"type\":\"nope\"}")),
        Err(FrameError::BadControl(_))
    ));
}

#[test]
fn outbox_acks_rewinds_and_bounds() {
    let mut o = Outbox::new(3, 1000);
    for p in ["a", "b", "c"] {
        assert!(o.has_room(1));
        o.push(Bytes::from(p));
    }
    assert!(!o.has_room(1), "count bound");
    assert_eq!(o.next_to_send().map(|(s, _)| s), Some(1));
    o.mark_sent(1);
    o.mark_sent(2);
    assert_eq!(o.next_to_send().map(|(s, _)| s), Some(3));
    o.ack(1).expect("ack");
    assert_eq!(o.len(), 2);
    // Reconnect: the peer only had 1, so 2 and 3 go again.
    o.rewind(1).expect("rewind");
    assert_eq!(o.next_to_send().map(|(s, _)| s), Some(2));
    assert!(o.ack(9).is_err(), "acking the future is a protocol error");
    o.ack(3).expect("ack");
    assert!(o.is_empty() && o.all_sent());
    let mut o = Outbox::new(10, 100);
    for p in ["a", "b", "c"] {
        o.push(Bytes::from(p));
    }
    o.mark_sent(1);
    o.rewind(0).expect("rewind");
    assert_eq!(
        o.take_never_sent(),
        vec![Bytes::from("b"), Bytes::from("c")]
    );
    assert_eq!((o.len(), o.bytes()), (1, 1));
    let mut small = Outbox::new(10, 5);
    small.push(Bytes::from("123456789"));
    assert!(!small.has_room(1), "byte bound");
}

#[test]
fn inbox_orders_and_dedups() {
    let mut i = Inbox::default();
    assert_eq!(i.receive(1), Received::New);
    assert_eq!(i.receive(1), Received::Duplicate);
    assert_eq!(i.receive(3), Received::Gap { expected: 2 });
    assert_eq!(i.receive(2), Received::New);
    assert!(i.ack_due());
    i.acked();
    assert!(!i.ack_due());
}

proptest! {
    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = decode(Bytes::from(bytes));
    }

    #[test]
    fn mutated_frames_never_panic(seq in 1u64.., ack in any::<u64>(), flip in 0usize..40, bit in 0u8..8) {
        let mut f = encode_data(seq, ack, b"{\"id\":1}").to_vec();
        let i = flip % f.len();
        f[i] ^= 1 << bit;
        let _ = decode(Bytes::from(f));
    }

    /// Any interleaving of sends, losses, replays and acks delivers each message exactly
    /// once, in order.
    #[test]
    fn lossy_link_delivers_exactly_once_in_order(
        ops in proptest::collection::vec(0u8..4, 1..300)
    ) {
        let mut out = Outbox::new(1000, 1 << 20);
        let mut inbox = Inbox::default();
        let mut delivered = Vec::new();
        let mut pushed = 0u64;
        for op in ops {
            match op {
                0 => { pushed += 1; out.push(Bytes::from(pushed.to_string())); }
                1 => {
                    // Send one; it arrives.
                    if let Some((seq, p)) = out.next_to_send().map(|(s, p)| (s, p.clone())) {
                        out.mark_sent(seq);
                        if inbox.receive(seq) == Received::New {
                            delivered.push(p);
                        }
                    }
                }
                2 => {
                    // Send one; the connection drops before it arrives.
                    if let Some((seq, _)) = out.next_to_send() { out.mark_sent(seq); }
                }
                _ => {
                    // Reconnect and resume from what the receiver has.
                    out.rewind(inbox.last()).map_err(|e| TestCaseError::fail(e.to_string()))?;
                }
            }
        }
        out.rewind(inbox.last()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        while let Some((seq, p)) = out.next_to_send().map(|(s, p)| (s, p.clone())) {
            out.mark_sent(seq);
            if inbox.receive(seq) == Received::New { delivered.push(p); }
        }
        let expected: Vec<Bytes> = (1..=pushed).map(|n| Bytes::from(n.to_string())).collect();
        prop_assert_eq!(delivered, expected);
    }
}

//! Hard bounds of one session: the relay's own replies, the calls in flight and their ids and
//! names. Not the queues' backpressure (see `backpressure`).

use super::*;
use crate::session::pending::{MAX_PENDING, MAX_PENDING_BYTES};
use shared::jsonrpc;

#[test]
fn replies_the_relay_makes_are_bounded_too() {
    let t0 = Instant::now();
    let mut core = plain(64 * 1024, t0);
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

//! The `mcp-bridge.v1` endpoint: one side of a tunnel session as a plain state machine.
//!
//! It numbers what this side sends, keeps it until the peer acknowledges it, decides when an
//! ack is due, holds what the peer sent until the application can take it (acknowledging only
//! what was taken, so a busy application slows the peer instead of growing a queue), and
//! rewinds on a resumed connection. Both ends use it: bridge-client towards the relay and each
//! relay session towards its client.
//!
//! No sockets, tasks or clocks: the caller passes every `Instant` in, asks
//! [`Endpoint::poll_transmit`] for the next frame to write and [`Endpoint::poll_timeout`] for
//! when to call again. What the messages mean (JSON-RPC) is not this module's business.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;

use crate::tunnel::{self, AckError, Control, Frame, FrameError, Inbox, Outbox};

/// Send a standalone ack after this many messages taken since the last ack…
pub const ACK_EVERY: u64 = 32;
/// …or this long after the first of them, whichever comes first.
pub const ACK_DELAY: Duration = Duration::from_millis(5);

/// How a connection frames messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `mcp-bridge.v1`: numbered data frames, acks, control messages; resumable.
    V1,
    /// Plain `mcp`: one JSON-RPC message per text frame; what is written counts as delivered.
    Plain,
}

/// The endpoint's bounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most messages kept for the peer (sent and unacknowledged, or not yet sent).
    pub send_messages: usize,
    /// Most payload bytes kept for the peer.
    pub send_bytes: usize,
    /// Most messages the peer may send ahead of what the application has taken. A compliant
    /// peer stops at its own send bound; one that goes past this has broken the protocol.
    pub recv_messages: usize,
    /// Most payload bytes the peer may send ahead of what the application has taken.
    pub recv_bytes: usize,
}

/// A frame or text message to write to the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// A binary frame (`mcp-bridge.v1`).
    Binary(Bytes),
    /// A text message (plain `mcp`): one JSON-RPC message.
    Text(Bytes),
}

/// Why the connection (not necessarily the session) cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// The frame could not be decoded.
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    /// The peer acknowledged something never sent.
    #[error(transparent)]
    Ack(#[from] AckError),
    /// The peer skipped sequence numbers.
    #[error("the peer skipped from message {expected} to {got}")]
    Gap {
        /// What was expected next.
        expected: u64,
        /// What arrived.
        got: u64,
    },
    /// The peer sent more than it may without acknowledgement. Resuming would do the same
    /// again, so the session cannot go on.
    #[error("the peer sent more than {messages} messages / {bytes} bytes without acknowledgement")]
    Overrun {
        /// The message bound.
        messages: usize,
        /// The byte bound.
        bytes: usize,
    },
}

impl EndpointError {
    /// Whether the session itself is over (as opposed to just this connection).
    pub fn is_fatal(&self) -> bool {
        matches!(self, EndpointError::Overrun { .. })
    }
}

/// One side of a tunnel session.
#[derive(Debug)]
pub struct Endpoint {
    framing: Framing,
    limits: Limits,
    /// Messages for the peer, numbered, kept until acknowledged.
    outbox: Outbox,
    /// Sequence numbers taken from the peer.
    inbox: Inbox,
    /// Received from the peer, in order, not yet taken by the application (not acknowledged).
    held: VecDeque<Bytes>,
    held_bytes: usize,
    /// Control frames to write before any data.
    control: VecDeque<Bytes>,
    /// When a standalone ack is due.
    ack_at: Option<Instant>,
    /// Whether a connection is attached.
    connected: bool,
}

impl Endpoint {
    /// A fresh session's endpoint, not yet connected.
    pub fn new(framing: Framing, limits: Limits) -> Endpoint {
        Endpoint {
            framing,
            limits,
            outbox: Outbox::new(limits.send_messages, limits.send_bytes),
            inbox: Inbox::default(),
            held: VecDeque::new(),
            held_bytes: 0,
            control: VecDeque::new(),
            ack_at: None,
            connected: false,
        }
    }

    /// How this endpoint frames messages.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// Whether a connection is attached.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// A connection is attached; the peer says it has everything up to `peer_has` (0 for a new
    /// session). What follows is sent again.
    pub fn connect(&mut self, peer_has: u64) -> Result<(), AckError> {
        self.outbox.rewind(peer_has)?;
        self.inbox.reset_acked();
        self.ack_at = None;
        self.control.clear();
        self.connected = true;
        Ok(())
    }

    /// The connection is gone. What was received but not taken is dropped unacknowledged: the
    /// peer sends it again after a resume.
    pub fn disconnect(&mut self) {
        self.connected = false;
        self.held.clear();
        self.held_bytes = 0;
        self.control.clear();
        self.ack_at = None;
    }

    /// Whether a message of `len` bytes fits in what is kept for the peer.
    pub fn has_room(&self, len: usize) -> bool {
        self.outbox.has_room(len)
    }

    /// Queues a message for the peer; returns its sequence number. The bound is the caller's
    /// to check with [`Self::has_room`] (it stops reading its source when there is none).
    pub fn send(&mut self, payload: Bytes) -> u64 {
        self.outbox.push(payload)
    }

    /// Queues a control message (v1 only; ignored on a plain connection), written before data.
    pub fn send_control(&mut self, c: &Control) {
        if self.framing == Framing::V1 && self.connected {
            self.control.push_back(tunnel::encode_control(c));
        }
    }

    /// Takes in one message read from the connection. Returns a control message if it was one;
    /// data is held for [`Self::poll_receive`].
    pub fn on_message(&mut self, raw: Bytes) -> Result<Option<Control>, EndpointError> {
        match self.framing {
            Framing::Plain => {
                self.hold(raw)?;
                Ok(None)
            }
            Framing::V1 => match tunnel::decode(raw)? {
                Frame::Data { seq, ack, payload } => {
                    self.outbox.ack(ack)?;
                    let expected = self.inbox.last() + self.held.len() as u64 + 1;
                    if seq < expected {
                        return Ok(None); // a replay of something already here
                    }
                    if seq > expected {
                        return Err(EndpointError::Gap { expected, got: seq });
                    }
                    self.hold(payload)?;
                    Ok(None)
                }
                Frame::Ack { ack } => {
                    self.outbox.ack(ack)?;
                    Ok(None)
                }
                Frame::Control(c) => Ok(Some(c)),
            },
        }
    }

    fn hold(&mut self, payload: Bytes) -> Result<(), EndpointError> {
        if self.held.len() >= self.limits.recv_messages
            || self.held_bytes + payload.len() > self.limits.recv_bytes.max(payload.len())
                && !self.held.is_empty()
        {
            return Err(EndpointError::Overrun {
                messages: self.limits.recv_messages,
                bytes: self.limits.recv_bytes,
            });
        }
        self.held_bytes += payload.len();
        self.held.push_back(payload);
        Ok(())
    }

    /// Whether something received waits to be taken.
    pub fn has_received(&self) -> bool {
        !self.held.is_empty()
    }

    /// The message [`Self::poll_receive`] would return next, left where it is (still
    /// unacknowledged), so the application can decide whether it has room for it first.
    pub fn peek_received(&self) -> Option<&Bytes> {
        self.held.front()
    }

    /// Bytes received and not yet taken.
    pub fn received_bytes(&self) -> usize {
        self.held_bytes
    }

    /// The next message from the peer, in order, exactly once. Taking it is what
    /// acknowledges it.
    pub fn poll_receive(&mut self, now: Instant) -> Option<Bytes> {
        let payload = self.held.pop_front()?;
        self.held_bytes -= payload.len();
        if self.framing == Framing::V1 {
            let seq = self.inbox.last() + 1;
            let _ = self.inbox.receive(seq);
            if self.inbox.unacked() >= ACK_EVERY {
                self.ack_at = Some(now);
            } else if self.ack_at.is_none() {
                self.ack_at = Some(now + ACK_DELAY);
            }
        }
        Some(payload)
    }

    /// Whether [`Self::poll_transmit`] has something to write at `now`.
    pub fn wants_transmit(&self, now: Instant) -> bool {
        self.connected
            && (!self.control.is_empty()
                || !self.outbox.all_sent()
                || (self.inbox.ack_due() && self.ack_at.is_some_and(|t| t <= now)))
    }

    /// The next frame to write to the connection, if any: control, then data (carrying the
    /// ack), then a standalone ack when one is due.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if !self.connected {
            return None;
        }
        if let Some(c) = self.control.pop_front() {
            return Some(Transmit::Binary(c));
        }
        if let Some((seq, payload)) = self.outbox.next_to_send() {
            let t = match self.framing {
                Framing::V1 => {
                    let frame = tunnel::encode_data(seq, self.inbox.last(), payload);
                    self.inbox.acked();
                    self.ack_at = None;
                    Transmit::Binary(frame)
                }
                Framing::Plain => Transmit::Text(payload.clone()),
            };
            self.outbox.mark_sent(seq);
            if self.framing == Framing::Plain {
                // No acks on a plain connection: what is written is gone.
                let _ = self.outbox.ack(seq);
            }
            return Some(t);
        }
        if self.inbox.ack_due() && self.ack_at.is_some_and(|t| t <= now) {
            self.inbox.acked();
            self.ack_at = None;
            return Some(Transmit::Binary(tunnel::encode_ack(self.inbox.last())));
        }
        None
    }

    /// When to call [`Self::poll_transmit`] again even if nothing else happens (an ack is due).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.connected && self.inbox.ack_due() {
            self.ack_at
        } else {
            None
        }
    }

    /// Highest sequence number taken from the peer (what a resume starts after).
    pub fn last_received(&self) -> u64 {
        self.inbox.last()
    }

    /// Messages kept for the peer (unsent or unacknowledged).
    pub fn unacked(&self) -> usize {
        self.outbox.len()
    }

    /// Payload bytes kept for the peer.
    pub fn unacked_bytes(&self) -> usize {
        self.outbox.bytes()
    }

    /// Whether everything kept for the peer has been written to the current connection.
    pub fn all_sent(&self) -> bool {
        self.outbox.all_sent() && self.control.is_empty()
    }

    /// Whether the peer has acknowledged everything.
    pub fn all_acked(&self) -> bool {
        self.outbox.is_empty()
    }

    /// Removes the messages never written to any connection (they may go to a new session).
    pub fn take_never_sent(&mut self) -> Vec<Bytes> {
        self.outbox.take_never_sent()
    }

    /// Removes every message not yet written to the current connection (to answer or move
    /// them elsewhere), marking them as written.
    pub fn take_unsent(&mut self) -> Vec<Bytes> {
        let mut out = Vec::new();
        while let Some((seq, p)) = self.outbox.next_to_send().map(|(s, p)| (s, p.clone())) {
            self.outbox.mark_sent(seq);
            out.push(p);
        }
        out
    }
}

#[cfg(test)]
mod tests {
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
}

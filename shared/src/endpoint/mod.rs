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
mod tests;

//! The `mcp-bridge.v1` tunnel: frame encoding, control messages, and the sans-IO reliability
//! state (sequence numbers, acks, the buffer of unacknowledged messages) that both ends share.
//!
//! No sockets, tasks or clocks here: the client and the relay drive these types, and tests drive
//! them directly. The wire format is specified in docs/protocol.md.

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// WebSocket subprotocol of the resumable tunnel.
pub const SUBPROTOCOL_V1: &str = "mcp-bridge.v1";

/// Version number of the control layer, sent in `welcome`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Upgrade-request header naming the session to resume.
pub const HEADER_SESSION: &str = "mcp-bridge-session";

/// Upgrade-request header: a random key the client sends on every connect and reconnect, so a
/// load balancer can route all of one client's connections to the same relay node.
pub const HEADER_AFFINITY: &str = "mcp-bridge-affinity";

/// Upgrade-request header on a new session that replaces one the client lost (for metrics).
pub const HEADER_REESTABLISH: &str = "mcp-bridge-reestablish";

/// Upgrade-request header: the highest sequence number the client received from the relay.
pub const HEADER_LAST_SEQ: &str = "mcp-bridge-last-seq";

/// Frame type bytes.
const DATA: u8 = 1;
const ACK: u8 = 2;
const CONTROL: u8 = 3;

/// Size of a data frame's header: type, seq, ack.
pub const DATA_HEADER: usize = 1 + 8 + 8;

/// One decoded tunnel frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// One JSON-RPC message, numbered, carrying the sender's cumulative ack.
    Data {
        /// This message's sequence number (1, 2, … per direction per session).
        seq: u64,
        /// Highest sequence number the sender has received from the peer.
        ack: u64,
        /// The JSON-RPC message, unchanged.
        payload: Bytes,
    },
    /// A cumulative ack with no data.
    Ack {
        /// Highest sequence number received.
        ack: u64,
    },
    /// A session-lifecycle message.
    Control(Control),
}

/// Session-lifecycle messages (JSON inside a control frame).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Control {
    /// Relay → client, first frame of every connection: the session is live.
    Welcome {
        /// Control-layer version ([`PROTOCOL_VERSION`]).
        version: u32,
        /// The session id (keep it to resume).
        session: String,
        /// True when this connection resumed an existing session.
        resumed: bool,
        /// Highest sequence number the relay has received from the client (replay after it).
        last_seq: u64,
        /// How long the relay keeps the session while the client is away.
        resume_window_ms: u64,
    },
    /// Either side: the session is over (the connection closes next). Not resumable.
    End {
        /// Why, in words for the user.
        reason: String,
    },
    /// Relay → client: the relay is draining. Send no new requests on this session; open a
    /// new one for them once this one ends.
    Drain {
        /// Why.
        reason: String,
    },
}

/// A frame that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Empty frame.
    #[error("empty frame")]
    Empty,
    /// Unknown type byte.
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    /// Shorter than its header.
    #[error("truncated frame")]
    Truncated,
    /// A control frame whose JSON is not a known control message.
    #[error("bad control message: {0}")]
    BadControl(String),
    /// A data frame with sequence number 0 (numbering starts at 1).
    #[error("data frame with sequence number 0")]
    ZeroSeq,
}

/// Encodes a data frame. The payload is copied once behind the 17-byte header; it is not parsed.
pub fn encode_data(seq: u64, ack: u64, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(DATA_HEADER + payload.len());
    b.put_u8(DATA);
    b.put_u64(seq);
    b.put_u64(ack);
    b.put_slice(payload);
    b.freeze()
}

/// Encodes an ack frame.
pub fn encode_ack(ack: u64) -> Bytes {
    let mut b = BytesMut::with_capacity(9);
    b.put_u8(ACK);
    b.put_u64(ack);
    b.freeze()
}

/// Encodes a control frame.
pub fn encode_control(c: &Control) -> Bytes {
    let mut b = BytesMut::with_capacity(128);
    b.put_u8(CONTROL);
    // Serializing these plain structs cannot fail.
    let json = serde_json::to_vec(c).unwrap_or_default();
    b.put_slice(&json);
    b.freeze()
}

/// Decodes one frame; the payload of a data frame shares `frame`'s memory.
pub fn decode(frame: Bytes) -> Result<Frame, FrameError> {
    let Some(&kind) = frame.first() else {
        return Err(FrameError::Empty);
    };
    let u64_at = |at: usize| -> Result<u64, FrameError> {
        frame
            .get(at..at + 8)
            .and_then(|s| <[u8; 8]>::try_from(s).ok())
            .map(u64::from_be_bytes)
            .ok_or(FrameError::Truncated)
    };
    match kind {
        DATA => {
            let seq = u64_at(1)?;
            let ack = u64_at(9)?;
            if seq == 0 {
                return Err(FrameError::ZeroSeq);
            }
            Ok(Frame::Data {
                seq,
                ack,
                payload: frame.slice(DATA_HEADER..),
            })
        }
        ACK => Ok(Frame::Ack { ack: u64_at(1)? }),
        CONTROL => serde_json::from_slice(&frame[1..])
            .map(Frame::Control)
            .map_err(|e| FrameError::BadControl(e.to_string())),
        other => Err(FrameError::UnknownType(other)),
    }
}

/// Why the peer's ack cannot be right.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("peer acknowledged sequence {acked}, but only {sent} messages were ever sent")]
pub struct AckError {
    /// What the peer acked.
    pub acked: u64,
    /// The highest sequence number assigned.
    pub sent: u64,
}

/// Outgoing messages of one direction: numbered, kept until acknowledged, bounded.
///
/// The buffer is also the send queue: [`Outbox::next_to_send`] yields messages not yet written
/// to the current connection, and [`Outbox::rewind`] makes a resumed connection start again after
/// what the peer says it has.
#[derive(Debug)]
pub struct Outbox {
    /// (seq, payload) of every message not yet acknowledged, in order.
    buf: VecDeque<(u64, Bytes)>,
    /// Sequence number the next pushed message gets.
    next_seq: u64,
    /// Highest sequence number written to the current connection.
    sent: u64,
    /// Highest sequence number ever written to any connection.
    max_sent: u64,
    /// Bytes held in `buf`.
    bytes: usize,
    max_messages: usize,
    max_bytes: usize,
}

impl Outbox {
    /// An empty outbox holding at most `max_messages` messages and `max_bytes` payload bytes
    /// (a single message larger than `max_bytes` is still accepted into an empty outbox).
    pub fn new(max_messages: usize, max_bytes: usize) -> Outbox {
        Outbox {
            buf: VecDeque::new(),
            next_seq: 1,
            sent: 0,
            max_sent: 0,
            bytes: 0,
            max_messages: max_messages.max(1),
            max_bytes,
        }
    }

    /// Whether a message of `len` bytes fits now.
    pub fn has_room(&self, len: usize) -> bool {
        self.buf.is_empty()
            || (self.buf.len() < self.max_messages && self.bytes + len <= self.max_bytes)
    }

    /// Appends a message and returns its sequence number. The caller checks [`Self::has_room`]
    /// first; pushing past the bound is allowed (the bound is the caller's policy).
    pub fn push(&mut self, payload: Bytes) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.bytes += payload.len();
        self.buf.push_back((seq, payload));
        seq
    }

    /// Drops every message up to and including `ack`.
    pub fn ack(&mut self, ack: u64) -> Result<(), AckError> {
        if ack >= self.next_seq {
            return Err(AckError {
                acked: ack,
                sent: self.next_seq - 1,
            });
        }
        while let Some((seq, payload)) = self.buf.front() {
            if *seq > ack {
                break;
            }
            self.bytes -= payload.len();
            self.buf.pop_front();
        }
        self.sent = self.sent.max(ack);
        Ok(())
    }

    /// The next message not yet written to the current connection.
    pub fn next_to_send(&self) -> Option<(u64, &Bytes)> {
        let first = self.buf.front()?.0;
        let idx = usize::try_from((self.sent + 1).checked_sub(first)?).ok()?;
        self.buf.get(idx).map(|(seq, p)| (*seq, p))
    }

    /// Records that `seq` was written to the connection.
    pub fn mark_sent(&mut self, seq: u64) {
        self.sent = self.sent.max(seq);
        self.max_sent = self.max_sent.max(seq);
    }

    /// Removes and returns the messages never written to any connection: they cannot have
    /// reached the peer, so they may safely go to a new session instead.
    pub fn take_never_sent(&mut self) -> Vec<Bytes> {
        let keep = self
            .buf
            .iter()
            .take_while(|(seq, _)| *seq <= self.max_sent)
            .count();
        let never: Vec<Bytes> = self.buf.drain(keep..).map(|(_, p)| p).collect();
        self.bytes -= never.iter().map(Bytes::len).sum::<usize>();
        never
    }

    /// A new connection: the peer has everything up to `peer_has`; resend what follows.
    pub fn rewind(&mut self, peer_has: u64) -> Result<(), AckError> {
        self.ack(peer_has)?;
        self.sent = peer_has;
        Ok(())
    }

    /// Messages held (sent or not) that the peer has not acknowledged.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing is waiting for an ack.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Payload bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether every held message has been written to the current connection.
    pub fn all_sent(&self) -> bool {
        self.next_to_send().is_none()
    }
}

/// What to do with a received data frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// The next message in order: deliver it.
    New,
    /// Already delivered (a replay after resume): drop it.
    Duplicate,
    /// A gap: messages were skipped, which a correct peer never does. Reconnect and resume.
    Gap {
        /// The sequence number expected.
        expected: u64,
    },
}

/// Incoming side of one direction: what has been delivered, and what has been acked back.
#[derive(Debug, Default)]
pub struct Inbox {
    last: u64,
    acked: u64,
}

impl Inbox {
    /// Classifies a received sequence number, and records it when it is the next one.
    pub fn receive(&mut self, seq: u64) -> Received {
        if seq <= self.last {
            Received::Duplicate
        } else if seq == self.last + 1 {
            self.last = seq;
            Received::New
        } else {
            Received::Gap {
                expected: self.last + 1,
            }
        }
    }

    /// Highest sequence number delivered.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// Whether an ack should be sent (something arrived since the last ack went out).
    pub fn ack_due(&self) -> bool {
        self.last > self.acked
    }

    /// Messages delivered since the last ack went out.
    pub fn unacked(&self) -> u64 {
        self.last - self.acked
    }

    /// Records that an ack for [`Self::last`] went out (alone or on a data frame).
    pub fn acked(&mut self) {
        self.acked = self.last;
    }

    /// A new connection: no ack has been sent on it yet.
    pub fn reset_acked(&mut self) {
        self.acked = 0;
    }
}

#[cfg(test)]
mod tests;

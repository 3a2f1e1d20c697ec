//! The client's session core: every decision bridge-client makes, as a plain state machine.
//!
//! It is told what happened — a line from the IDE, a message from the relay, a connection
//! opened, refused or lost, output written, the time — and answers with what to write to the
//! IDE ([`Core::poll_output`]), what to send to the relay ([`Core::poll_transmit`]), whether to
//! open a connection ([`Core::poll_connect`]), when to wake it ([`Core::poll_timeout`]) and
//! whether it is done ([`Core::is_done`]). The `mcp-bridge.v1` protocol itself (sequence
//! numbers, acks, resume) belongs to [`shared::endpoint`]; this core adds what the IDE needs:
//! one answer per request, the handshake replayed on a new session, held messages, the
//! crash-loop guard and the end. Every queue is bounded in bytes, by taking no more input
//! while there is no room. No sockets, tasks or clocks: the driver does the I/O.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use shared::endpoint::{Endpoint, Framing, Limits, Transmit};
use shared::ingress::Msg;
use shared::jsonrpc::Id;

use crate::{Backoff, ClientError};

pub(crate) mod ide;
mod relay;
#[cfg(test)]
mod tests;

/// IDE messages held back at most (during a replayed handshake, while the relay drains, while
/// there is no session); past it stdin is not read.
pub(crate) const HELD_MAX: usize = 256;

/// After stdin ends, how long to wait for answers to requests still in flight; with the close
/// handshake this stays under the 2 s after which SDK clients send SIGTERM.
pub(crate) const EOF_ANSWER_WAIT: Duration = Duration::from_millis(1200);

/// When the first connection fails: how long to go on reading the IDE's lines (to answer
/// each request with the reason) before exiting.
pub(crate) const FIRST_FAILURE_DRAIN: Duration = Duration::from_millis(300);

/// How many times a first connection cut before the relay answered is tried again.
pub(crate) const FIRST_RETRIES: u32 = 3;

/// How long one connection attempt may take, `welcome` included.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a replayed `initialize` may take before held messages are sent anyway.
pub(crate) const REINIT_WAIT: Duration = Duration::from_secs(10);

/// A session that ends sooner than this after opening counts as a quick failure.
pub(crate) const QUICK_FAILURE: Duration = Duration::from_secs(2);
/// Quick failures in a row after which queued requests are answered instead of retried.
pub(crate) const MAX_QUICK_FAILURES: u32 = 2;

/// Bytes queued for stdout (the core's own replies included) past which the core takes no more
/// input from the IDE or the relay. One message may go past it.
pub(crate) const OUT_LIMIT: usize = 1 << 20;

/// Bytes received from the relay and not yet taken (unacknowledged) past which the connection
/// is not read; the relay's own send window bounds the count of messages.
pub(crate) const RELAY_HOLD: usize = 1 << 20;

/// Messages kept for the relay (unsent or unacknowledged) at most.
const SEND_MESSAGES: usize = 1024;

use crate::ide_input::LIMIT_NAME;

/// What the core needs to know.
#[derive(Debug, Clone)]
pub(crate) struct CoreConfig {
    /// The relay's URL, for log lines.
    pub(crate) url: String,
    /// Largest message accepted from the IDE or the relay.
    pub(crate) max_message: usize,
    /// Delays between connection attempts.
    pub(crate) backoff: Backoff,
    /// Seeds the backoff's jitter (random in the driver, fixed in tests so a run replays).
    pub(crate) seed: u64,
}

impl CoreConfig {
    /// Payload bytes kept for the relay (unsent or unacknowledged); also the bound on held
    /// IDE messages.
    pub(crate) fn send_bytes(&self) -> usize {
        4 * self.max_message.max(1 << 20)
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint::new(
            Framing::V1,
            Limits {
                send_messages: SEND_MESSAGES,
                send_bytes: self.send_bytes(),
                // Never an overrun: the driver stops reading the connection at RELAY_HOLD.
                recv_messages: usize::MAX,
                recv_bytes: usize::MAX / 2,
            },
        )
    }
}

/// Random factors for the backoff's jitter (xorshift64*).
#[derive(Debug, Clone)]
struct Jitter(u64);

impl Jitter {
    /// A number in [0, 1).
    fn next(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The session we hold with the relay.
#[derive(Debug, Clone)]
struct SessionInfo {
    id: String,
    resume_window: Duration,
}

/// The connection to the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// None, and none wanted yet.
    Idle,
    /// The next attempt is due at `at`; `attempt` have failed before it.
    Waiting { at: Instant, attempt: u32 },
    /// The driver is running an attempt.
    Connecting { attempt: u32, resume: bool },
    /// Connected; messages flow.
    Connected,
}

/// The very first connection decides whether bridge-client runs at all.
#[derive(Debug)]
enum First {
    Connecting,
    Done,
    /// It failed: requests are answered with `message` until `until`, then the process exits.
    Failed {
        until: Instant,
        message: String,
        error: Option<ClientError>,
    },
}

/// The IDE's handshake, kept to replay on a new session.
#[derive(Debug, Default)]
struct Handshake {
    initialize: Option<Bytes>,
    initialized: Option<Bytes>,
}

impl crate::session::stdout::Output for Core {
    fn poll_output(&mut self) -> Option<Bytes> {
        let b = self.out.pop_front()?;
        self.out_bytes -= b.len();
        self.in_stdout += b.len() + 1;
        Some(b)
    }

    fn on_output_written(&mut self, n: usize, now: Instant) {
        self.in_stdout = self.in_stdout.saturating_sub(n);
        self.pump(now);
    }
}

/// How the session ends: whether the relay should be told (`end`, close 1000) and what
/// [`crate::run`] returns.
#[derive(Debug)]
pub(crate) struct Exit {
    pub(crate) tell_relay: bool,
    pub(crate) result: Result<(), ClientError>,
}

/// The client's state.
#[derive(Debug)]
pub(crate) struct Core {
    cfg: CoreConfig,
    jitter: Jitter,
    /// The current session's endpoint (a fresh one for each new session).
    ep: Endpoint,
    session: Option<SessionInfo>,
    link: Link,
    first: First,
    /// IDE requests sent into the current session and not answered yet.
    pending: HashSet<Id>,
    handshake: Handshake,
    /// A replayed `initialize` in flight: its id and how long to wait for it.
    reinit: Option<(Id, Instant)>,
    reinit_count: u64,
    /// IDE messages held back, in order, classified once.
    held: VecDeque<Msg>,
    held_bytes: usize,
    /// The relay asked us to send no new requests on this session.
    draining: bool,
    /// When the current session was opened (not set for the first one).
    session_started: Option<Instant>,
    /// When the connection was lost (the resume window counts from here).
    lost_at: Option<Instant>,
    /// Sessions lost so far (a new one after that is a re-establishment).
    lost_sessions: u64,
    /// Sessions in a row that ended within [`QUICK_FAILURE`] of opening without answering
    /// the IDE: past [`MAX_QUICK_FAILURES`], queued requests are answered with the reason
    /// instead of starting yet another session (a tool that dies at once must not loop).
    quick_failures: u32,
    /// When stdin ended (or a stop was asked for).
    eof_at: Option<Instant>,
    /// stdout cannot be written: the IDE is gone.
    ide_gone: bool,
    /// Messages for stdout, and their bytes.
    out: VecDeque<Bytes>,
    out_bytes: usize,
    /// Bytes handed to the driver for stdout and not yet written.
    in_stdout: usize,
    /// [`Self::finish`] ran: nothing more is taken from the relay.
    finished: bool,
}

impl Core {
    /// A client about to make its first connection (at once: see [`Self::poll_connect`]).
    pub(crate) fn new(cfg: CoreConfig, now: Instant) -> Core {
        Core {
            ep: cfg.endpoint(),
            jitter: Jitter(cfg.seed | 1),
            cfg,
            session: None,
            link: Link::Waiting {
                at: now,
                attempt: 0,
            },
            first: First::Connecting,
            pending: HashSet::new(),
            handshake: Handshake::default(),
            reinit: None,
            reinit_count: 0,
            held: VecDeque::new(),
            held_bytes: 0,
            draining: false,
            session_started: None,
            lost_at: None,
            lost_sessions: 0,
            quick_failures: 0,
            eof_at: None,
            ide_gone: false,
            out: VecDeque::new(),
            out_bytes: 0,
            in_stdout: 0,
            finished: false,
        }
    }

    /// Whether a connection is up (the driver drops its connection when this turns false).
    pub(crate) fn is_connected(&self) -> bool {
        self.link == Link::Connected
    }

    fn backoff(&mut self, attempt: u32) -> Duration {
        let r = self.jitter.next();
        self.cfg.backoff.delay_with(attempt, r)
    }

    fn out_has_room(&self) -> bool {
        self.out_bytes + self.in_stdout < OUT_LIMIT
    }

    /// Whether something is waiting to be sent on a session.
    fn has_queued(&self) -> bool {
        self.ep.unacked() > 0 || !self.held.is_empty()
    }

    /// Whether the core takes a message from the connection now.
    pub(crate) fn wants_relay(&self) -> bool {
        self.link == Link::Connected && self.ep.received_bytes() < RELAY_HOLD
    }

    /// Whether something waits to be written to the connection at `now`.
    pub(crate) fn wants_transmit(&self, now: Instant) -> bool {
        self.link == Link::Connected && self.ep.wants_transmit(now)
    }

    /// The next frame for the connection.
    pub(crate) fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if self.link != Link::Connected {
            return None;
        }
        self.ep.poll_transmit(now)
    }

    /// Whether the core takes a line from stdin now: not after its end, and only while every
    /// queue it may feed (stdout for its own replies, the relay, held messages) has room.
    pub(crate) fn wants_stdin(&self) -> bool {
        self.eof_at.is_none()
            && !self.ide_gone
            && self.out_has_room()
            && self.held.len() < HELD_MAX
            && self.held_bytes < self.cfg.send_bytes()
            && self.ep.has_room(1)
    }

    /// stdin ended: finish what is in flight, then end.
    pub(crate) fn on_stdin_eof(&mut self, now: Instant) {
        if self.eof_at.is_none() {
            debug!("stdin closed; waiting for answers in flight, then ending the session");
            self.eof_at = Some(now);
        }
    }

    /// A stop was asked for (SIGINT, SIGTERM, SIGHUP): the same end as stdin's.
    pub(crate) fn on_stop(&mut self, now: Instant) {
        if self.eof_at.is_none() {
            info!("asked to stop; ending the session as at the end of stdin");
            self.eof_at = Some(now);
        }
    }

    /// stdout cannot be written any more: the IDE has gone.
    pub(crate) fn on_output_failed(&mut self) {
        self.ide_gone = true;
        self.out.clear();
        self.out_bytes = 0;
        self.in_stdout = 0;
    }

    /// When to call [`Self::on_timeout`] (or [`Self::poll_connect`], [`Self::is_done`]) next.
    pub(crate) fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut at = |d: Instant| t = Some(t.map_or(d, |t| t.min(d)));
        if self.link == Link::Connected {
            // An ack already due is [`Self::wants_transmit`]'s: it waits for the connection to
            // be writable, not for a timer.
            if let Some(d) = self.ep.poll_timeout().filter(|d| *d > now) {
                at(d);
            }
        }
        if let Link::Waiting { at: d, .. } = self.link {
            at(d);
        }
        if let Some((_, d)) = &self.reinit {
            at(*d);
        }
        match &self.first {
            First::Failed { until, .. } => at(*until),
            First::Done => {
                if let Some(eof) = self.eof_at {
                    at(eof + EOF_ANSWER_WAIT);
                }
            }
            First::Connecting => {}
        }
        t
    }

    /// Time passed.
    pub(crate) fn on_timeout(&mut self, now: Instant) {
        if self.reinit.as_ref().is_some_and(|(_, t)| now >= *t) {
            warn!(
                "the tool did not answer the replayed initialize within {} s; going on",
                REINIT_WAIT.as_secs()
            );
            self.finish_reinit();
        }
    }

    /// Whether the client is done: stdin ended and every request is answered (or time is up),
    /// the IDE is gone, or the first connection failed.
    pub(crate) fn is_done(&self, now: Instant) -> bool {
        if self.ide_gone {
            return true;
        }
        match &self.first {
            // The first connection decides first (it has its own timeout).
            First::Connecting => return false,
            First::Failed { until, .. } => return now >= *until || self.eof_at.is_some(),
            First::Done => {}
        }
        let Some(eof) = self.eof_at else {
            return false;
        };
        // Done when every request is answered and the relay can be told (connected, or no
        // session to tell it about) — or when time is up.
        let settled = self.pending.is_empty()
            && !self.held.iter().any(|m| m.request_id().is_some())
            && (self.link == Link::Connected || self.session.is_none());
        settled || now >= eof + EOF_ANSWER_WAIT
    }

    /// The end: every request still waiting is answered (the outcome is unknown), and the
    /// driver learns whether to tell the relay and what to return.
    pub(crate) fn finish(&mut self) -> Exit {
        self.finished = true;
        let tell_relay = self.link == Link::Connected && self.session.is_some();
        if let First::Failed { error, .. } = &mut self.first {
            let result = match error.take() {
                Some(e) => Err(e),
                None => Ok(()),
            };
            return Exit {
                tell_relay: false,
                result,
            };
        }
        let mut ids: Vec<Id> = self.pending.drain().collect();
        ids.sort_by_key(|id| id.to_string());
        ids.extend(self.held.drain(..).filter_map(|m| m.request_id().cloned()));
        self.held_bytes = 0;
        for answer in crate::ide_input::exit_answers(ids) {
            self.push_out(answer);
        }
        Exit {
            tell_relay,
            result: Ok(()),
        }
    }
}

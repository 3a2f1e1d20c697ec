//! The relay session's core: every decision a session makes, as a plain state machine.
//!
//! It is given what happened (a message from the client, a line from the tool, the tool's
//! exit, a connection lost or resumed, the time) and answers with what to write to the client
//! ([`Core::poll_client_transmit`]), what to write to the tool ([`Core::poll_tool_transmit`]),
//! when to wake it ([`Core::poll_timeout`]) and what to record ([`Core::poll_event`]). It keeps
//! the calls in flight ([`Pending`]) so every request gets exactly one answer.
//!
//! Every queue is bounded in bytes. A client message is taken from the client's window only
//! when what it needs is there — room in the tool's queue, or room in the client's queue for
//! the reply the relay makes to it — and waits there, unacknowledged, until then
//! (backpressure; a plain connection is not read meanwhile). Each message is classified once,
//! when it reaches the head of the window. No sockets, processes, tasks or clocks: the driver
//! does the I/O.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use shared::endpoint::{Endpoint, Framing, Limits as EpLimits, Transmit};
use shared::ingress::Decision;
use shared::tunnel::{Control, PROTOCOL_VERSION};

use super::end::EndReason;
pub(crate) use super::event::{Call, Event, Outcome};
use super::pending::Pending;
use super::tool_queue::ToolQueue;

mod client;
mod tool;

/// After the tool's stdout closes (or it exits), how long to wait for the other half before
/// the tool counts as gone.
const EXIT_SETTLE: Duration = Duration::from_millis(300);

/// What the core needs to know about its session.
#[derive(Debug, Clone)]
pub(crate) struct CoreConfig {
    pub(crate) id: String,
    pub(crate) tool: String,
    pub(crate) framing: Framing,
    /// Largest message to or from the tool.
    pub(crate) max_message: usize,
    pub(crate) resume_window: Duration,
    pub(crate) resume_buffer_messages: usize,
    pub(crate) resume_buffer_bytes: usize,
    pub(crate) idle_timeout: Option<Duration>,
    /// How long the tool may take none of its waiting input before the session ends.
    pub(crate) stall_timeout: Duration,
    /// How long the tool may take none of its waiting input, with its queue full, before
    /// further requests are answered at once instead of waiting (so that the connection is
    /// still read, and a client that leaves is noticed).
    pub(crate) shed_after: Duration,
    /// The user's rights: tool policy and call rates.
    pub(crate) access: crate::policy::Access,
}

impl CoreConfig {
    /// Bytes queued for the tool's stdin before the core takes no more from the client.
    pub(crate) fn tool_queue_bytes(&self) -> usize {
        self.max_message.clamp(256 * 1024, 4 * 1024 * 1024)
    }

    /// What a v1 client may send ahead of what the core has taken (its window, in bytes): at
    /// least what bridge-client keeps unacknowledged, so a compliant client never overruns it.
    pub(crate) fn client_window_bytes(&self) -> usize {
        self.max_message
            .saturating_mul(4)
            .max(shared::DEFAULT_MAX_MESSAGE_SIZE * 4)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ToolState {
    Running,
    /// stdout closed at this time; the exit status has not come yet.
    StdoutClosed(Instant),
    /// Exited (how, cleanly) at this time; stdout may still hold its last lines.
    Exited(String, bool, Instant),
    /// Gone: no more input or output.
    Gone(String),
}

/// The session's state.
#[derive(Debug)]
pub(crate) struct Core {
    cfg: CoreConfig,
    /// "the relay's limit for tool `x`", for oversize errors.
    limit_name: String,
    ep: Endpoint,
    /// The decision about the message at the head of the client's window, kept while the
    /// message waits there (it is classified once).
    head: Option<Decision>,
    tool_q: ToolQueue,
    pending: Pending,
    tool: ToolState,
    detached_at: Option<Instant>,
    draining: bool,
    last_activity: Instant,
    end: Option<EndReason>,
    events: VecDeque<Event>,
}

impl Core {
    /// A new session with its first connection attached.
    pub(crate) fn new(cfg: CoreConfig, now: Instant) -> Core {
        let limits = EpLimits {
            send_messages: cfg.resume_buffer_messages,
            send_bytes: cfg.resume_buffer_bytes,
            recv_messages: 1024,
            recv_bytes: cfg.client_window_bytes(),
        };
        let mut ep = Endpoint::new(cfg.framing, limits);
        let _ = ep.connect(0);
        let mut core = Core {
            limit_name: format!("the relay's limit for tool `{}`", cfg.tool),
            tool_q: ToolQueue::new(cfg.tool_queue_bytes(), now),
            cfg,
            ep,
            head: None,
            pending: Pending::default(),
            tool: ToolState::Running,
            detached_at: None,
            draining: false,
            last_activity: now,
            end: None,
            events: VecDeque::new(),
        };
        core.welcome(false);
        core
    }

    fn welcome(&mut self, resumed: bool) {
        self.ep.send_control(&Control::Welcome {
            version: PROTOCOL_VERSION,
            session: self.cfg.id.clone(),
            resumed,
            last_seq: self.ep.last_received(),
            resume_window_ms: self.cfg.resume_window.as_millis() as u64,
        });
    }

    /// Why the session ended, once it has.
    #[cfg(test)]
    pub(crate) fn end_reason(&self) -> Option<&EndReason> {
        self.end.as_ref()
    }

    fn end(&mut self, reason: EndReason) {
        if self.end.is_none() {
            self.end = Some(reason);
        }
    }

    /// Whether the core takes a message from the client connection now. A v1 connection is
    /// always read (acks must get through while the tool is busy; data waits, unacknowledged,
    /// within the client's window); a plain one only while no message waits.
    pub(crate) fn wants_client(&self) -> bool {
        self.end.is_none()
            && self.ep.is_connected()
            && match self.cfg.framing {
                Framing::V1 => true,
                Framing::Plain => !self.ep.has_received(),
            }
    }

    /// Whether the core takes a line from the tool now (there is room for the client).
    pub(crate) fn wants_tool(&self) -> bool {
        self.end.is_none() && self.ep.has_room(1)
    }

    fn queue_for_client(&mut self, bytes: Bytes) {
        self.events.push_back(Event::ToClient(bytes.len()));
        self.ep.send(bytes);
    }

    /// Whether something waits to be written to the client at `now`.
    pub(crate) fn wants_client_transmit(&self, now: Instant) -> bool {
        self.ep.wants_transmit(now)
    }

    /// The next frame for the client connection.
    pub(crate) fn poll_client_transmit(&mut self, now: Instant) -> Option<Transmit> {
        let t = self.ep.poll_transmit(now);
        if t.is_some() {
            // Room for replies again: take what waits.
            self.take_client(now);
        }
        t
    }

    /// The relay is draining: no new sessions; this one ends once its calls are answered.
    pub(crate) fn on_drain(&mut self) {
        if self.draining {
            return;
        }
        self.draining = true;
        self.ep.send_control(&Control::Drain {
            reason: EndReason::RelayShutdown.to_string(),
        });
    }

    /// The relay ends everything now.
    pub(crate) fn on_force(&mut self) {
        self.end(EndReason::RelayShutdown);
    }

    /// The relay ends this session now, as asked through its [`SessionInfo`]: an
    /// administrator, or a reload that revoked its credentials.
    ///
    /// [`SessionInfo`]: super::SessionInfo
    pub(crate) fn on_end_request(&mut self, why: super::EndRequest) {
        self.end(match why {
            super::EndRequest::Admin => EndReason::RelayAdmin,
            super::EndRequest::Revoked => EndReason::RelayRevoked,
        });
    }

    /// Whether the client is connected (a v1 client may be away, waiting to resume).
    pub(crate) fn is_attached(&self) -> bool {
        self.ep.is_connected()
    }

    /// Whether the session has ended (or has nothing left to do).
    pub(crate) fn check_done(&mut self) -> bool {
        if self.end.is_some() {
            return true;
        }
        if let ToolState::Gone(how) = &self.tool {
            // Ends once every answer went out to an attached client (a detached one may still
            // come back for them within its window).
            if self.pending.is_empty() && self.ep.is_connected() && self.ep.all_sent() {
                let reason = EndReason::ToolGone {
                    tool: self.cfg.tool.clone(),
                    how: how.clone(),
                };
                self.end(reason);
                return true;
            }
        }
        if self.draining && self.pending.is_empty() {
            self.end(EndReason::RelayShutdown);
            return true;
        }
        if self.detached_at.is_some() && !self.ep.has_room(1) {
            self.end(EndReason::RelayResumeBufferFull {
                messages: self.cfg.resume_buffer_messages,
                bytes: self.cfg.resume_buffer_bytes,
            });
            return true;
        }
        false
    }

    /// When to call [`Self::on_timeout`] next.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let mut t: Option<Instant> = self.ep.poll_timeout();
        let mut at = |d: Instant| t = Some(t.map_or(d, |t| t.min(d)));
        if let Some(since) = self.detached_at {
            at(since + self.cfg.resume_window);
        }
        if let (Some(idle), true) = (self.cfg.idle_timeout, self.pending.is_empty()) {
            at(self.last_activity + idle);
        }
        match &self.tool {
            ToolState::StdoutClosed(since) | ToolState::Exited(_, _, since) => {
                at(*since + EXIT_SETTLE)
            }
            _ => {}
        }
        if let Some(since) = self.tool_q.stalled_since() {
            at(since + self.cfg.stall_timeout);
            if self.head.is_some() && !self.tool_q.shedding() {
                at(since + self.cfg.shed_after);
            }
        }
        t
    }

    /// Time passed: ends what has run out.
    pub(crate) fn on_timeout(&mut self, now: Instant) {
        if let Some(since) = self.detached_at {
            if now >= since + self.cfg.resume_window {
                self.end(EndReason::ClientAway(self.cfg.resume_window));
            }
        }
        if let (Some(idle), true) = (self.cfg.idle_timeout, self.pending.is_empty()) {
            if now >= self.last_activity + idle {
                self.end(EndReason::RelayIdle(idle));
            }
        }
        match self.tool.clone() {
            ToolState::StdoutClosed(since) if now >= since + EXIT_SETTLE => {
                // Closed its stdout but kept running: it can no longer answer.
                self.tool_gone("closed its stdout".to_owned(), false, now);
            }
            ToolState::Exited(how, clean, since) if now >= since + EXIT_SETTLE => {
                self.tool_gone(how, clean, now);
            }
            _ => {}
        }
        if let Some(since) = self.tool_q.stalled_since() {
            if now >= since + self.cfg.stall_timeout {
                self.end(EndReason::ToolStalled {
                    tool: self.cfg.tool.clone(),
                    after: self.cfg.stall_timeout,
                });
            }
            if self.head.is_some()
                && now >= since + self.cfg.shed_after
                && self.tool_q.start_shedding()
            {
                self.events.push_back(Event::Shedding {
                    waiting: self.tool_q.held(),
                    after: self.cfg.shed_after,
                });
                self.take_client(now);
            }
        }
    }

    /// The session is over: answers every call still in flight and queues the end notice.
    /// Returns the reason.
    pub(crate) fn finish(&mut self) -> EndReason {
        let reason = self.end.clone().unwrap_or(EndReason::RelayShutdown);
        let message = format!("{reason}; the request was not answered");
        self.fail_pending(
            reason.source(),
            reason.error_code(),
            &message,
            Outcome::SessionEnded,
        );
        reason
    }

    /// Whether the tool is known to be gone.
    pub(crate) fn tool_is_gone(&self) -> bool {
        matches!(self.tool, ToolState::Gone(_))
    }

    /// The next thing to record.
    pub(crate) fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Bytes this session holds in its queues (for tests and the memory bound).
    #[cfg(test)]
    pub(crate) fn held_bytes(&self) -> usize {
        self.tool_q.held() + self.ep.unacked_bytes() + self.ep.received_bytes()
    }
}

#[cfg(test)]
#[path = "core_tests/mod.rs"]
mod tests;

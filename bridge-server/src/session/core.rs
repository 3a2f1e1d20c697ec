//! The relay session's core: every decision a session makes, as a plain state machine.
//!
//! It is given what happened (a message from the client, a line from the tool, the tool's
//! exit, a connection lost or resumed, the time) and answers with what to write to the client
//! ([`Core::poll_client_transmit`]), what to write to the tool ([`Core::poll_tool_transmit`]),
//! when to wake it ([`Core::poll_timeout`]) and what to record ([`Core::poll_event`]). It keeps
//! the table of the client's calls in flight so every request gets exactly one answer, and it
//! bounds every queue in bytes — replies it makes itself included — by taking no more input
//! while there is no room. No sockets, processes, tasks or clocks: the driver does the I/O.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use shared::endpoint::{Endpoint, Framing, Limits as EpLimits, Transmit};
use shared::framing::Frame;
use shared::ingress::{self, Ingress, Msg, MsgKind, Peer, RefusalKind};
use shared::jsonrpc::{self, Id};
use shared::tunnel::{Control, PROTOCOL_VERSION};

use super::end::EndReason;

/// After the tool's stdout closes (or it exits), how long to wait for the other half before
/// the tool counts as gone.
const EXIT_SETTLE: Duration = Duration::from_millis(300);

/// Room kept in the client's queue before taking another client message, so that the reply
/// the relay may make to it always fits.
const REPLY_ROOM: usize = 4096;

/// Client calls in flight at most; a request past it is answered at once with an error.
pub(crate) const MAX_PENDING: usize = 4096;

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
}

impl CoreConfig {
    /// Bytes queued for the tool's stdin before the core takes no more from the client.
    pub(crate) fn tool_queue_bytes(&self) -> usize {
        self.max_message.clamp(256 * 1024, 4 * 1024 * 1024)
    }

    /// What the client may send ahead of what the tool has taken (its window, in bytes).
    pub(crate) fn client_window_bytes(&self) -> usize {
        self.max_message
            .saturating_mul(4)
            .max(shared::DEFAULT_MAX_MESSAGE_SIZE * 4)
    }
}

/// A client call in flight, as the audit log describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Call {
    pub(crate) method: Box<str>,
    pub(crate) tool_name: Option<Box<str>>,
    pub(crate) started: Instant,
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok,
    Error,
    Cancelled,
    ToolExited,
    SessionEnded,
    Refused,
}

impl Outcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Cancelled => "cancelled",
            Outcome::ToolExited => "tool_exited",
            Outcome::SessionEnded => "session_ended",
            Outcome::Refused => "refused",
        }
    }
}

/// Something for the driver to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// A client call finished (audit line, latency).
    Call {
        call: Call,
        outcome: Outcome,
    },
    /// A message went to the client / to the tool (bytes).
    ToClient(usize),
    ToTool(usize),
    /// A message was not forwarded (one warning line; peer text already escaped).
    Refused {
        from: Peer,
        kind: RefusalKind,
        what: String,
    },
    /// The client's connection went; the session waits for a resume.
    Detached {
        why: String,
    },
    /// A connection resumed the session.
    Resumed {
        away: Duration,
        replay: usize,
    },
    /// A resume was refused (its connection gets `why`); the session goes on waiting.
    ResumeRefused {
        why: String,
    },
    /// The tool is gone: how, and whether it exited cleanly by itself.
    ToolGone {
        how: String,
        clean: bool,
    },
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
    to_tool: VecDeque<Bytes>,
    to_tool_bytes: usize,
    /// Bytes handed to the driver for the tool's stdin and not yet written.
    in_stdin: usize,
    /// When the tool last took input (or had none waiting).
    tool_progress: Instant,
    pending: HashMap<Id, Call>,
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
            cfg,
            ep,
            to_tool: VecDeque::new(),
            to_tool_bytes: 0,
            in_stdin: 0,
            tool_progress: now,
            pending: HashMap::new(),
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
    /// within the client's window); a plain one only while there is room.
    pub(crate) fn wants_client(&self) -> bool {
        self.end.is_none()
            && self.ep.is_connected()
            && match self.cfg.framing {
                Framing::V1 => true,
                Framing::Plain => !self.ep.has_received() && self.has_room_for_client(),
            }
    }

    fn has_room_for_client(&self) -> bool {
        self.to_tool_bytes < self.cfg.tool_queue_bytes() && self.ep.has_room(REPLY_ROOM)
    }

    /// Whether the core takes a line from the tool now (there is room for the client).
    pub(crate) fn wants_tool(&self) -> bool {
        self.end.is_none() && self.ep.has_room(1)
    }

    /// One message read from the client connection.
    pub(crate) fn on_client_message(&mut self, raw: Bytes, now: Instant) {
        self.last_activity = now;
        match self.ep.on_message(raw) {
            Ok(None) => {}
            Ok(Some(Control::End { reason })) => {
                self.end(EndReason::ClientEnded(
                    shared::log_safe(&reason).into_owned(),
                ));
                return;
            }
            Ok(Some(_)) => {}
            Err(e) if e.is_fatal() => {
                self.ep.disconnect();
                self.end(EndReason::ClientBrokeLimit(e.to_string()));
                return;
            }
            Err(e) => {
                self.on_client_gone(&format!("protocol error: {e}"), now);
                return;
            }
        }
        self.take_client(now);
    }

    /// Moves client messages on while the tool's queue and the client's queue have room.
    fn take_client(&mut self, now: Instant) {
        while self.end.is_none() && self.has_room_for_client() {
            let Some(raw) = self.ep.poll_receive(now) else {
                break;
            };
            let d = ingress::decide(
                Frame::Line(raw),
                Peer::Client,
                self.cfg.max_message,
                &self.limit_name,
            );
            if let Some(r) = d.refusal {
                self.events.push_back(Event::Refused {
                    from: Peer::Client,
                    kind: r.kind,
                    what: r.what,
                });
            }
            match d.action {
                Ingress::Forward(msg) => self.client_msg(msg, now),
                Ingress::ReplyToSender(err) => self.queue_for_client(err),
                Ingress::ReplyToOther { error, .. } => self.queue_for_tool(error),
                Ingress::Drop => {}
            }
        }
    }

    fn client_msg(&mut self, msg: Msg, now: Instant) {
        match &msg.kind {
            MsgKind::Request { id, method } => {
                if let ToolState::Gone(how) = &self.tool {
                    let message = format!(
                        "tool `{}` {how}; the request was not delivered",
                        self.cfg.tool
                    );
                    let err =
                        jsonrpc::error_response(Some(id), jsonrpc::TOOL_EXITED, &message, None);
                    return self.queue_for_client(Bytes::from(err));
                }
                if self.pending.len() >= MAX_PENDING && !self.pending.contains_key(id) {
                    let message = format!(
                        "too many requests in flight on this session ({MAX_PENDING}); wait for answers first"
                    );
                    let err = jsonrpc::error_response(
                        Some(id),
                        jsonrpc::TOO_MANY_REQUESTS,
                        &message,
                        None,
                    );
                    self.events.push_back(Event::Call {
                        call: Call {
                            method: method.clone(),
                            tool_name: None,
                            started: now,
                        },
                        outcome: Outcome::Refused,
                    });
                    return self.queue_for_client(Bytes::from(err));
                }
                let tool_name = if &**method == "tools/call" {
                    jsonrpc::tool_call_name(&msg.bytes).map(|n| {
                        n.chars()
                            .take(ingress::METHOD_KEEP)
                            .collect::<String>()
                            .into()
                    })
                } else {
                    None
                };
                self.pending.insert(
                    id.clone(),
                    Call {
                        method: method.clone(),
                        tool_name,
                        started: now,
                    },
                );
            }
            MsgKind::Notification { method } if &**method == "notifications/cancelled" => {
                if let Some(id) = jsonrpc::cancelled_request_id(&msg.bytes) {
                    if let Some(call) = self.pending.remove(&id) {
                        self.events.push_back(Event::Call {
                            call,
                            outcome: Outcome::Cancelled,
                        });
                    }
                }
            }
            _ => {}
        }
        if !matches!(self.tool, ToolState::Gone(_)) {
            self.events.push_back(Event::ToTool(msg.bytes.len()));
            self.queue_for_tool(msg.bytes);
        }
    }

    fn queue_for_tool(&mut self, bytes: Bytes) {
        if matches!(self.tool, ToolState::Gone(_)) {
            return;
        }
        if self.to_tool.is_empty() && self.in_stdin == 0 {
            // Nothing was waiting: the stall clock starts now.
            self.tool_progress = self.last_activity;
        }
        self.to_tool_bytes += bytes.len();
        self.to_tool.push_back(bytes);
    }

    fn queue_for_client(&mut self, bytes: Bytes) {
        self.events.push_back(Event::ToClient(bytes.len()));
        self.ep.send(bytes);
    }

    /// The client connection is gone (closed, broken, silent).
    pub(crate) fn on_client_gone(&mut self, why: &str, now: Instant) {
        self.ep.disconnect();
        match self.cfg.framing {
            Framing::Plain => self.end(EndReason::ClientLeft(why.to_owned())),
            Framing::V1 => {
                self.detached_at.get_or_insert(now);
                self.events.push_back(Event::Detached {
                    why: why.to_owned(),
                });
            }
        }
    }

    /// The client connection broke a hard limit; resuming would replay the same message.
    pub(crate) fn on_client_fatal(&mut self, why: &str) {
        self.ep.disconnect();
        self.end(EndReason::ClientBrokeLimit(why.to_owned()));
    }

    /// A connection wants to resume the session; the client has everything up to `last_seq`.
    /// On `Err` the connection gets the text and is closed; the session goes on waiting.
    pub(crate) fn on_attach(&mut self, last_seq: u64, now: Instant) -> Result<(), String> {
        if self.ep.is_connected() {
            self.ep.disconnect();
            self.detached_at.get_or_insert(now);
        }
        if let Err(e) = self.ep.connect(last_seq) {
            self.ep.disconnect();
            let why = format!("cannot resume: {e}");
            self.events
                .push_back(Event::ResumeRefused { why: why.clone() });
            return Err(why);
        }
        self.welcome(true);
        if self.draining {
            self.ep.send_control(&Control::Drain {
                reason: EndReason::RelayShutdown.to_string(),
            });
        }
        let away = self
            .detached_at
            .take()
            .map(|t| now.saturating_duration_since(t))
            .unwrap_or_default();
        self.events.push_back(Event::Resumed {
            away,
            replay: self.ep.unacked(),
        });
        self.take_client(now);
        Ok(())
    }

    /// One unit read from the tool's stdout.
    pub(crate) fn on_tool_frame(&mut self, frame: Frame, now: Instant) {
        self.last_activity = now;
        let d = ingress::decide(frame, Peer::Server, self.cfg.max_message, &self.limit_name);
        if let Some(r) = d.refusal {
            self.events.push_back(Event::Refused {
                from: Peer::Server,
                kind: r.kind,
                what: r.what,
            });
        }
        match d.action {
            Ingress::Forward(msg) => {
                if let MsgKind::Response {
                    id: Some(id),
                    is_error,
                } = &msg.kind
                {
                    if let Some(call) = self.pending.remove(id) {
                        let outcome = if *is_error {
                            Outcome::Error
                        } else {
                            Outcome::Ok
                        };
                        self.events.push_back(Event::Call { call, outcome });
                    }
                }
                self.queue_for_client(msg.bytes);
            }
            // The tool's own request was too large: the tool gets the error.
            Ingress::ReplyToSender(err) => self.queue_for_tool(err),
            // Its answer was too large: the client's request gets the error instead.
            Ingress::ReplyToOther { id, error } => {
                if let Some(call) = self.pending.remove(&id) {
                    self.events.push_back(Event::Call {
                        call,
                        outcome: Outcome::Error,
                    });
                }
                self.queue_for_client(error);
            }
            Ingress::Drop => {}
        }
    }

    /// The tool's stdout reached its end.
    pub(crate) fn on_tool_stdout_closed(&mut self, now: Instant) {
        self.tool = match std::mem::replace(&mut self.tool, ToolState::Running) {
            ToolState::Running => ToolState::StdoutClosed(now),
            ToolState::Exited(how, clean, _) => return self.tool_gone(how, clean),
            other => other,
        };
    }

    /// The tool process exited (`how` in words; `clean`: status 0).
    pub(crate) fn on_tool_exit(&mut self, how: String, clean: bool, now: Instant) {
        self.tool = match std::mem::replace(&mut self.tool, ToolState::Running) {
            ToolState::Running => ToolState::Exited(how, clean, now),
            ToolState::StdoutClosed(_) => return self.tool_gone(how, clean),
            other => other,
        };
    }

    /// The tool's stdin cannot be written any more (it closed it, or exited).
    pub(crate) fn on_tool_stdin_closed(&mut self) {
        self.to_tool.clear();
        self.to_tool_bytes = 0;
        self.in_stdin = 0;
    }

    fn tool_gone(&mut self, how: String, clean: bool) {
        if matches!(self.tool, ToolState::Gone(_)) {
            return;
        }
        self.events.push_back(Event::ToolGone {
            how: how.clone(),
            clean,
        });
        let message = format!("tool `{}` {how} before answering", self.cfg.tool);
        self.fail_pending(jsonrpc::TOOL_EXITED, &message, Outcome::ToolExited);
        self.on_tool_stdin_closed();
        self.tool = ToolState::Gone(how);
    }

    fn fail_pending(&mut self, code: i64, message: &str, outcome: Outcome) {
        let mut calls: Vec<(Id, Call)> = self.pending.drain().collect();
        calls.sort_by_key(|(id, _)| id.to_string());
        for (id, call) in calls {
            self.events.push_back(Event::Call { call, outcome });
            let err = jsonrpc::error_response(Some(&id), code, message, None);
            self.queue_for_client(Bytes::from(err));
        }
    }

    /// The next message for the tool's stdin (without its newline).
    pub(crate) fn poll_tool_transmit(&mut self) -> Option<Bytes> {
        let b = self.to_tool.pop_front()?;
        self.to_tool_bytes -= b.len();
        self.in_stdin += b.len() + 1;
        Some(b)
    }

    /// `n` bytes reached the tool's stdin.
    pub(crate) fn on_tool_wrote(&mut self, n: usize, now: Instant) {
        self.in_stdin = self.in_stdin.saturating_sub(n);
        self.tool_progress = now;
        // Room for the tool again: take what the client sent meanwhile.
        self.take_client(now);
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
        if self.in_stdin > 0 || !self.to_tool.is_empty() {
            at(self.tool_progress + self.cfg.stall_timeout);
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
                self.tool_gone("closed its stdout".to_owned(), false);
            }
            ToolState::Exited(how, clean, since) if now >= since + EXIT_SETTLE => {
                self.tool_gone(how, clean);
            }
            _ => {}
        }
        let waiting = self.in_stdin > 0 || !self.to_tool.is_empty();
        if waiting && now >= self.tool_progress + self.cfg.stall_timeout {
            self.end(EndReason::ToolStalled {
                tool: self.cfg.tool.clone(),
                after: self.cfg.stall_timeout,
            });
        }
    }

    /// The session is over: answers every call still in flight and queues the end notice.
    /// Returns the reason.
    pub(crate) fn finish(&mut self) -> EndReason {
        let reason = self.end.clone().unwrap_or(EndReason::RelayShutdown);
        let message = format!("{reason}; the request was not answered");
        self.fail_pending(reason.error_code(), &message, Outcome::SessionEnded);
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
        self.to_tool_bytes + self.ep.unacked_bytes() + self.ep.received_bytes()
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;

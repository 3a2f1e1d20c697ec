//! The client side of a session core: messages from the client connection, taken from its
//! window in order once each has what it needs, and the connection coming and going. Not
//! responsible for the tool's side, timers or the end.

use bytes::Bytes;
use tokio::time::Instant;

use shared::endpoint::Framing;
use shared::framing::Frame;
use shared::ingress::{self, Decision, Ingress, Msg, MsgKind, Peer};
use shared::jsonrpc;
use shared::tunnel::Control;

use super::super::end::{EndReason, Source};
use super::super::pending::{MAX_PENDING, MAX_PENDING_BYTES};
use super::{Call, Core, Event, Outcome, ToolState};

/// What becomes of a client message once it is taken.
#[derive(Debug)]
enum Plan {
    /// Queued for the tool.
    Tool,
    /// Answered at once with this error (and, with an outcome, audited as a refused call);
    /// counted as an error of `source` with `code`.
    Answer {
        error: Bytes,
        refused: Option<Outcome>,
        source: Source,
        code: i64,
    },
    /// The ingress policy's reply goes back to the client.
    Reply,
    /// Nothing.
    Drop,
}

impl Core {
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
                self.disconnect();
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

    pub(super) fn disconnect(&mut self) {
        self.ep.disconnect();
        // What was held is gone with the connection; the client sends it again.
        self.head = None;
    }

    /// Takes client messages, in order, while each has what it needs.
    pub(super) fn take_client(&mut self, now: Instant) {
        while self.end.is_none() {
            let d = match self.head.take() {
                Some(d) => d,
                None => match self.ep.peek_received() {
                    Some(raw) => ingress::decide(
                        Frame::Line(raw.clone()),
                        Peer::Client,
                        self.cfg.max_message,
                        &self.limit_name,
                    ),
                    None => break,
                },
            };
            if let Err(d) = self.try_take(d, now) {
                self.head = Some(d);
                break;
            }
            let _ = self.ep.poll_receive(now);
        }
    }

    /// Acts on the decision about the head message if what it needs is there; else gives it
    /// back.
    fn try_take(&mut self, d: Decision, now: Instant) -> Result<(), Decision> {
        let plan = match &d.action {
            Ingress::Forward(msg) => self.plan(msg, now),
            Ingress::ReplyToSender(err) => self.ep.has_room(err.len()).then_some(Plan::Reply),
            // A response too large to forward: the tool gets an error in its place.
            Ingress::ReplyToOther { .. } if self.tool_q.is_closed() => Some(Plan::Drop),
            Ingress::ReplyToOther { error, .. } => self
                .tool_q
                .has_room_for_reply(error.len())
                .then_some(Plan::Tool),
            Ingress::Drop => Some(Plan::Drop),
        };
        let Some(plan) = plan else { return Err(d) };
        if let Some(r) = d.refusal {
            self.events.push_back(Event::Refused {
                from: Peer::Client,
                kind: r.kind,
                what: r.what,
            });
        }
        match (d.action, plan) {
            (Ingress::Forward(msg), plan) => self.client_msg(msg, plan, now),
            (Ingress::ReplyToSender(err), _) => {
                // The client's message could not be used (not JSON-RPC, a batch, too large).
                self.events.push_back(Event::ErrorAnswer {
                    source: Source::Client,
                    code: jsonrpc::error_code(&err),
                });
                self.queue_for_client(err)
            }
            (Ingress::ReplyToOther { error, .. }, Plan::Tool) => self.tool_q.push(error, now),
            _ => {}
        }
        Ok(())
    }

    /// What to do with a message from the client; `None` while it must wait.
    fn plan(&self, msg: &Msg, now: Instant) -> Option<Plan> {
        let id = msg.request_id();
        let answer = |source: Source, code: i64, refused: Option<Outcome>, error: Vec<u8>| {
            let error = Bytes::from(error);
            self.ep.has_room(error.len()).then_some(Plan::Answer {
                error,
                refused,
                source,
                code,
            })
        };
        if let ToolState::Gone(how) = &self.tool {
            let Some(id) = id else {
                return Some(Plan::Drop);
            };
            let message = format!(
                "tool `{}` {how}; the request was not delivered",
                self.cfg.tool
            );
            return answer(
                Source::Tool,
                jsonrpc::TOOL_EXITED,
                None,
                jsonrpc::error_response(Some(id), jsonrpc::TOOL_EXITED, &message, None),
            );
        }
        if let (Some(id), Some(call)) = (id, call_of(msg, now)) {
            if !self.pending.fits(id, &call) {
                let message = format!(
                    "too many requests in flight on this session ({MAX_PENDING}, or {} of ids \
                     and names); wait for answers first",
                    shared::human_bytes(MAX_PENDING_BYTES)
                );
                return answer(
                    Source::Client,
                    jsonrpc::TOO_MANY_REQUESTS,
                    Some(Outcome::Refused),
                    jsonrpc::error_response(Some(id), jsonrpc::TOO_MANY_REQUESTS, &message, None),
                );
            }
        }
        if self.tool_q.has_room(msg.bytes.len()) {
            // Checked last, when the call would go: a rate limit takes its token only then.
            if let (
                Some(id),
                MsgKind::Request {
                    method, tool_name, ..
                },
            ) = (id, &msg.kind)
            {
                if let Err(r) = self.cfg.access.check(method, tool_name.as_deref(), now) {
                    let outcome = match r.reason {
                        crate::policy::Reason::RateLimited => Outcome::RateLimited,
                        crate::policy::Reason::Denied => Outcome::Denied,
                    };
                    return answer(Source::Client, r.code, Some(outcome), r.response(id));
                }
            }
            return Some(Plan::Tool);
        }
        match id {
            Some(id) if self.tool_q.shedding() => {
                let message = format!(
                    "tool `{}` has read none of its input for {}; the request was not \
                     delivered: try again later",
                    self.cfg.tool,
                    shared::human_duration(self.cfg.shed_after)
                );
                answer(
                    Source::Tool,
                    jsonrpc::TOO_MANY_REQUESTS,
                    Some(Outcome::Refused),
                    jsonrpc::error_response(Some(id), jsonrpc::TOO_MANY_REQUESTS, &message, None),
                )
            }
            _ => None,
        }
    }

    fn client_msg(&mut self, msg: Msg, plan: Plan, now: Instant) {
        match plan {
            Plan::Answer {
                error,
                refused,
                source,
                code,
            } => {
                self.events.push_back(Event::ErrorAnswer {
                    source,
                    code: Some(code),
                });
                if let (Some(outcome), Some(call)) = (refused, call_of(&msg, now)) {
                    self.events.push_back(Event::Call { call, outcome });
                }
                self.queue_for_client(error);
            }
            Plan::Tool => {
                match &msg.kind {
                    MsgKind::Request { id, .. } => {
                        if let Some(call) = call_of(&msg, now) {
                            // Checked by `plan`.
                            let _ = self.pending.insert(id.clone(), call);
                        }
                    }
                    MsgKind::Notification { method } if &**method == "notifications/cancelled" => {
                        if let Some(call) = jsonrpc::cancelled_request_id(&msg.bytes)
                            .and_then(|id| self.pending.remove(&id))
                        {
                            self.events.push_back(Event::Call {
                                call,
                                outcome: Outcome::Cancelled,
                            });
                        }
                    }
                    _ => {}
                }
                self.events.push_back(Event::ToTool(msg.bytes.len()));
                self.tool_q.push(msg.bytes, now);
            }
            Plan::Reply | Plan::Drop => {}
        }
    }

    /// The client connection is gone (closed, broken, silent).
    pub(crate) fn on_client_gone(&mut self, why: &str, now: Instant) {
        self.disconnect();
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
        self.disconnect();
        self.end(EndReason::ClientBrokeLimit(why.to_owned()));
    }

    /// A connection wants to resume the session; the client has everything up to `last_seq`.
    /// On `Err` the connection gets the text and is closed; the session goes on waiting.
    pub(crate) fn on_attach(&mut self, last_seq: u64, now: Instant) -> Result<(), String> {
        if self.ep.is_connected() {
            self.disconnect();
            self.detached_at.get_or_insert(now);
        }
        if let Err(e) = self.ep.connect(last_seq) {
            self.disconnect();
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
}

/// The call a request starts, as the audit log describes it (`None` for other messages).
fn call_of(msg: &Msg, now: Instant) -> Option<Call> {
    let MsgKind::Request {
        method, tool_name, ..
    } = &msg.kind
    else {
        return None;
    };
    Some(Call {
        method: method.clone(),
        tool_name: tool_name.clone(),
        started: now,
    })
}

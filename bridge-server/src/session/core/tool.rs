//! The tool side of a session core: lines from the tool's stdout, its input being written,
//! and its exit, with every call in flight answered when it is gone. Not responsible for the
//! client's side, timers or the end.

use bytes::Bytes;
use tokio::time::Instant;

use shared::framing::Frame;
use shared::ingress::{self, Ingress, MsgKind, Peer};
use shared::jsonrpc;

use super::super::end::Source;
use super::{Core, Event, Outcome, ToolState};

impl Core {
    /// One unit read from the tool's stdout. What it puts in the client's queue may pass the
    /// queue's bound by this one message: [`Self::wants_tool`] asked only for some room.
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
                            self.events.push_back(Event::ErrorAnswer {
                                source: Source::Tool,
                                code: jsonrpc::error_code(&msg.bytes),
                            });
                            Outcome::Error
                        } else {
                            Outcome::Ok
                        };
                        // The user sees only the tools their policy allows.
                        if &*call.method == "tools/list" && !*is_error {
                            if let Some(filtered) =
                                self.cfg.access.view.filter_tools_list(&msg.bytes)
                            {
                                self.events.push_back(Event::Call { call, outcome });
                                self.queue_for_client(filtered);
                                return;
                            }
                        }
                        self.events.push_back(Event::Call { call, outcome });
                    }
                }
                self.queue_for_client(msg.bytes);
            }
            // The tool's own request was too large: the tool gets the error (if it reads).
            Ingress::ReplyToSender(err) => {
                if self.tool_q.has_room_for_reply(err.len()) {
                    self.tool_q.push(err, now);
                }
            }
            // Its answer was too large: the client's request gets the error instead.
            Ingress::ReplyToOther { id, error } => {
                if let Some(call) = self.pending.remove(&id) {
                    self.events.push_back(Event::ErrorAnswer {
                        source: Source::Tool,
                        code: Some(jsonrpc::MESSAGE_TOO_LARGE),
                    });
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
            ToolState::Exited(how, clean, _) => return self.tool_gone(how, clean, now),
            other => other,
        };
    }

    /// The tool process exited (`how` in words; `clean`: status 0).
    pub(crate) fn on_tool_exit(&mut self, how: String, clean: bool, now: Instant) {
        self.tool = match std::mem::replace(&mut self.tool, ToolState::Running) {
            ToolState::Running => ToolState::Exited(how, clean, now),
            ToolState::StdoutClosed(_) => return self.tool_gone(how, clean, now),
            other => other,
        };
    }

    /// The tool's stdin cannot be written any more (it closed it, or exited).
    pub(crate) fn on_tool_stdin_closed(&mut self) {
        self.tool_q.close();
    }

    pub(super) fn tool_gone(&mut self, how: String, clean: bool, now: Instant) {
        if matches!(self.tool, ToolState::Gone(_)) {
            return;
        }
        self.events.push_back(Event::ToolGone {
            how: how.clone(),
            clean,
        });
        let message = format!("tool `{}` {how} before answering", self.cfg.tool);
        self.fail_pending(
            Source::Tool,
            jsonrpc::TOOL_EXITED,
            &message,
            Outcome::ToolExited,
        );
        self.on_tool_stdin_closed();
        self.tool = ToolState::Gone(how);
        // What waited for the tool is answered now.
        self.take_client(now);
    }

    /// Answers every call in flight with an error (`source`: whose doing it is). These answers
    /// may pass the client queue's bound: the table they come from is bounded.
    pub(super) fn fail_pending(
        &mut self,
        source: Source,
        code: i64,
        message: &str,
        outcome: Outcome,
    ) {
        for (id, call) in self.pending.drain_sorted() {
            self.events.push_back(Event::ErrorAnswer {
                source,
                code: Some(code),
            });
            self.events.push_back(Event::Call { call, outcome });
            let err = jsonrpc::error_response(Some(&id), code, message, None);
            self.queue_for_client(Bytes::from(err));
        }
    }

    /// The next message for the tool's stdin (without its newline).
    pub(crate) fn poll_tool_transmit(&mut self) -> Option<Bytes> {
        self.tool_q.pop()
    }

    /// `n` bytes reached the tool's stdin.
    pub(crate) fn on_tool_wrote(&mut self, n: usize, now: Instant) {
        self.tool_q.wrote(n, now);
        // Room for the tool again: take what the client sent meanwhile.
        self.take_client(now);
    }
}

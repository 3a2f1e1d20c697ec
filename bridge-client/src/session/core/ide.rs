//! The IDE's side of the core: lines from stdin through the ingress policy into the session
//! (or held back), messages from the relay onto stdout, the handshake kept and replayed on a
//! new session, and the answers bridge-client gives itself.

use crate::ide_input::{from_ide, FromIde};
use bytes::Bytes;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use shared::framing::Frame;
use shared::ingress::{self, Ingress, Msg, MsgKind, Peer, RefusalKind};
use shared::jsonrpc::{self, Id};

use super::{Core, First, LIMIT_NAME, REINIT_WAIT};

/// Ids of replayed `initialize` requests start with this; the IDE never sees them.
pub(crate) const REINIT_PREFIX: &str = "mcp-bridge-reinit-";

/// Whether `id` is one of bridge-client's replayed `initialize` requests.
pub(crate) fn is_reinit_id(id: &Id) -> bool {
    matches!(id, Id::Str(s) if s.starts_with(REINIT_PREFIX))
}

impl Core {
    /// One unit read from stdin: a line, or the head of one over the size limit.
    pub(crate) fn on_stdin(&mut self, frame: Frame) {
        match from_ide(frame, self.cfg.max_message) {
            FromIde::Forward(msg) => self.on_ide_message(msg),
            FromIde::Reply(error) => self.push_out(error),
            FromIde::Nothing => {}
        }
    }

    /// A well-formed message from the IDE.
    fn on_ide_message(&mut self, msg: Msg) {
        if let First::Failed { message, .. } = &self.first {
            if let Some(id) = msg.request_id() {
                let error =
                    jsonrpc::error_response(Some(id), jsonrpc::RELAY_UNAVAILABLE, message, None);
                self.push_out(Bytes::from(error));
            }
            return;
        }
        let new_work = match &msg.kind {
            MsgKind::Request { method, .. } => {
                if &**method == "initialize" {
                    self.handshake.initialize = Some(msg.bytes.clone());
                    self.handshake.initialized = None;
                }
                true
            }
            MsgKind::Notification { method } => {
                if &**method == "notifications/initialized" {
                    self.handshake.initialized = Some(msg.bytes.clone());
                }
                &**method != "notifications/cancelled"
            }
            MsgKind::Response { .. } => false,
        };
        if self.session.is_none() || self.reinit.is_some() || (self.draining && new_work) {
            self.held_bytes += msg.bytes.len();
            self.held.push_back(msg);
        } else {
            self.enqueue(msg);
        }
    }

    /// Sends an IDE message on the current session.
    fn enqueue(&mut self, msg: Msg) {
        match &msg.kind {
            MsgKind::Request { id, .. } => {
                self.pending.insert(id.clone());
            }
            MsgKind::Notification { method } if &**method == "notifications/cancelled" => {
                if let Some(id) = jsonrpc::cancelled_request_id(&msg.bytes) {
                    self.pending.remove(&id);
                }
            }
            _ => {}
        }
        self.ep.send(msg.bytes);
    }

    /// Sends the held messages, in order.
    fn release_held(&mut self) {
        while let Some(msg) = self.held.pop_front() {
            self.held_bytes -= msg.bytes.len();
            self.enqueue(msg);
        }
    }

    /// A message from the tool for the IDE.
    pub(super) fn deliver(&mut self, payload: Bytes) {
        let d = ingress::decide(
            Frame::Line(payload),
            Peer::Server,
            self.cfg.max_message,
            LIMIT_NAME,
        );
        if let Some(r) = d.refusal {
            match r.kind {
                RefusalKind::Oversize => warn!("from the tool: {}", r.what),
                _ => warn!("the relay sent {}; skipped", r.what),
            }
        }
        match d.action {
            Ingress::Forward(msg) => {
                if let MsgKind::Response { id: Some(id), .. } = &msg.kind {
                    if self.reinit.as_ref().is_some_and(|(rid, _)| rid == id) {
                        debug!("the tool answered the replayed initialize");
                        return self.finish_reinit();
                    }
                    if is_reinit_id(id) {
                        // An answer to a replayed initialize of an earlier session: ours.
                        return;
                    }
                    if self.pending.remove(id) {
                        self.quick_failures = 0;
                    }
                }
                self.push_out(msg.bytes);
            }
            // The tool's own request was too large: tell the tool it cannot be delivered.
            Ingress::ReplyToSender(error) => {
                self.ep.send(error);
            }
            // Its answer was too large: the IDE's request gets this error instead.
            Ingress::ReplyToOther { id, error } => {
                if self.pending.remove(&id) {
                    self.push_out(error);
                }
            }
            Ingress::Drop => {}
        }
    }

    /// The replayed handshake is done (or given up on): the IDE's `initialized`, then what
    /// was held.
    pub(super) fn finish_reinit(&mut self) {
        self.reinit = None;
        if let Some(initialized) = self.handshake.initialized.clone() {
            self.ep.send(initialized);
        }
        self.release_held();
    }

    /// A session is open (`first`: the first one, which replays nothing): replay the IDE's
    /// handshake if it used one, then send what was held.
    pub(super) fn start_session(&mut self, now: Instant, first: bool) {
        if !first {
            self.session_started = Some(now);
        }
        let mut old = std::mem::replace(&mut self.ep, self.cfg.endpoint());
        // A fresh endpoint accepts a connection at 0.
        let _ = self.ep.connect(0);
        // Anything queued for no session goes to this one, ahead of what was held since.
        for bytes in old.take_never_sent().into_iter().rev() {
            if let Some(msg) = Msg::classify(bytes) {
                self.held_bytes += msg.bytes.len();
                self.held.push_front(msg);
            }
        }
        self.pending.clear();
        // If the IDE's own initialize never reached a session, it is among the held messages
        // and goes out itself: replaying it too would initialize twice.
        let replay = self
            .handshake
            .initialize
            .clone()
            .filter(|init| !self.held.iter().any(|m| m.bytes == *init));
        let reinit = replay.and_then(|init| {
            let id = self.next_reinit_id();
            with_id(&init, &id).map(|line| (line, id))
        });
        match reinit {
            Some((line, id)) => {
                info!("new session: replaying the IDE's initialize");
                self.ep.send(line);
                self.reinit = Some((id, now + REINIT_WAIT));
            }
            None => self.release_held(),
        }
        if !first {
            warn!("opened a new session with the relay");
        }
    }

    fn next_reinit_id(&mut self) -> Id {
        self.reinit_count += 1;
        Id::Str(format!("{REINIT_PREFIX}{}", self.reinit_count).into())
    }

    /// Answers every request that waits for a session (held, or never sent) with `why`, and
    /// drops the rest of what waits.
    pub(super) fn fail_queued(&mut self, why: &str) {
        let mut ids: Vec<Id> = Vec::new();
        for msg in self.held.drain(..) {
            if let Some(id) = msg.request_id() {
                ids.push(id.clone());
            }
        }
        self.held_bytes = 0;
        for bytes in self.ep.take_never_sent() {
            if let Some(id) = Msg::classify(bytes).and_then(|m| m.request_id().cloned()) {
                self.pending.remove(&id);
                ids.push(id);
            }
        }
        for id in ids {
            self.answer(&id, jsonrpc::RELAY_UNAVAILABLE, why);
        }
    }

    /// Answers the IDE's request `id` with an error.
    pub(super) fn answer(&mut self, id: &Id, code: i64, message: &str) {
        if let Some(body) = crate::ide_input::error_for_ide(id, code, message) {
            self.push_out(body);
        }
    }

    /// Queues a message for stdout.
    pub(super) fn push_out(&mut self, bytes: Bytes) {
        if self.ide_gone {
            return;
        }
        self.out_bytes += bytes.len();
        self.out.push_back(bytes);
    }
}

/// `msg` with its `id` replaced (only for the replayed `initialize`, so the one
/// re-serialization on this path is off the hot path).
pub(crate) fn with_id(msg: &[u8], id: &Id) -> Option<Bytes> {
    let mut value: serde_json::Value = serde_json::from_slice(msg).ok()?;
    let raw = id.to_json()?;
    let id_value: serde_json::Value = serde_json::from_str(raw.get()).ok()?;
    value.as_object_mut()?.insert("id".to_owned(), id_value);
    serde_json::to_vec(&value).ok().map(Bytes::from)
}

//! The server's side of the HTTP core: what a response head, a body and a broken connection
//! mean for the exchange, the session (a 404 for a known session opens a new one and replays
//! the IDE's handshake), the standalone stream and the resumes of broken streams.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;
use tracing::{debug, warn};

use shared::framing::Frame;
use shared::ingress::{self, Ingress, Msg, MsgKind, Peer};
use shared::jsonrpc::{self, Id};

use super::timers::HEAD_TIMEOUT;
use super::{relist, Body, HttpCore, Listen, Post, Purpose, LIMIT_NAME};
use crate::session::core::ide::is_reinit_id;
use crate::upstream::exchange::{self, Answer};
use crate::upstream::sse::SseParser;
use crate::upstream::HttpIo;

/// How long an answered stream may take to end before it is let go.
const DRAIN_WAIT: Duration = Duration::from_millis(100);
/// Bytes of an error body read for a JSON-RPC error.
const ERROR_BODY_MAX: usize = 64 * 1024;

impl HttpCore {
    /// What happened to exchange `ex`.
    pub(crate) fn on_http(&mut self, ex: u64, io: HttpIo, now: Instant) {
        if !self.exchanges.contains_key(&ex) {
            return;
        }
        match io {
            HttpIo::Head { status, headers } => self.on_head(ex, status, &headers, now),
            HttpIo::Data(b) => self.on_data(ex, b, now),
            HttpIo::End => self.on_end(ex, None, now),
            HttpIo::Error(why) => self.on_end(ex, Some(why), now),
        }
    }

    fn on_head(
        &mut self,
        ex: u64,
        status: http::StatusCode,
        headers: &http::HeaderMap,
        now: Instant,
    ) {
        if self.barrier == Some(ex) {
            self.barrier = None;
        }
        let Some(e) = self.exchanges.get_mut(&ex) else {
            return;
        };
        let answer = exchange::answer(status, headers, e.sent_session.is_some());
        if e.legacy {
            return self.on_legacy_head(ex, status, answer, now);
        }
        let refused_post = matches!(answer, Answer::NotStreamable { .. })
            && matches!(e.purpose, Purpose::Post(_))
            && (self.legacy.is_some() || (!self.ever_ok && e.sent_session.is_none()));
        if refused_post {
            return self.fall_back_to_legacy(ex, status.as_u16(), now);
        }
        let max = self.cfg.max_message.saturating_add(64 * 1024);
        if status.is_success() {
            self.ever_ok = true;
            let is_init =
                matches!(&e.purpose, Purpose::Post(p) if p.msg.method() == Some("initialize"));
            if is_init {
                if let Some(s) = exchange::session_of(headers) {
                    debug!("the server assigned a session");
                    self.session = Some(s);
                }
            }
        }
        let purpose_is_listen = matches!(e.purpose, Purpose::Listen);
        // A JSON or error body gets the head's bound again for its silences; an SSE body none.
        e.deadline = match answer {
            Answer::Sse => None,
            _ => Some(now + HEAD_TIMEOUT),
        };
        match answer {
            Answer::Json => e.body = Body::Json(BytesMut::new()),
            Answer::Sse => {
                let mut p = SseParser::new(max);
                p.restore(e.last_event_id.clone(), e.retry);
                e.body = Body::Sse(p);
                if purpose_is_listen {
                    if let Listen::Open(_) = self.listen {
                        debug!("the server's stream for its own messages is open");
                    }
                }
            }
            Answer::Accepted => {
                let initialized = matches!(&e.purpose,
                    Purpose::Post(p) if p.msg.method() == Some("notifications/initialized"));
                let awaiting = e.awaiting.clone();
                self.drop_exchange(ex);
                if let Some(id) = awaiting {
                    self.answer_pending(
                        &id,
                        jsonrpc::RELAY_UNAVAILABLE,
                        "the MCP server accepted the request but sent no answer",
                    );
                }
                if initialized && self.listen == Listen::Off {
                    self.listen = Listen::Due {
                        at: now,
                        last_event_id: None,
                        failures: 0,
                    };
                }
            }
            Answer::SessionGone => {
                let sent = e.sent_session.clone();
                let purpose = std::mem::replace(&mut e.purpose, Purpose::Delete);
                self.drop_exchange(ex);
                if sent.is_some() && sent == self.session {
                    self.new_session();
                }
                match purpose {
                    Purpose::Post(p) => self.resend(p),
                    Purpose::Listen => {}
                    Purpose::Resume | Purpose::Delete | Purpose::LegacyStream => {}
                }
            }
            Answer::AuthRequired {
                status,
                www_authenticate,
            } => {
                let awaiting = e.awaiting.clone();
                let purpose = std::mem::replace(&mut e.purpose, Purpose::Delete);
                self.drop_exchange(ex);
                self.on_auth_required(purpose, awaiting, status, www_authenticate, now);
            }
            Answer::NotStreamable { status } | Answer::Failed { status } => {
                if purpose_is_listen {
                    self.drop_exchange(ex);
                    self.listen = if status == 405 {
                        debug!("the server offers no stream for its own messages (405)");
                        Listen::Unsupported
                    } else {
                        warn!("the server refused its stream for its own messages: HTTP {status}");
                        Listen::Off
                    };
                    return;
                }
                e.body = Body::Error {
                    status,
                    buf: BytesMut::new(),
                };
            }
        }
    }

    fn on_data(&mut self, ex: u64, b: Bytes, now: Instant) {
        let Some(e) = self.exchanges.get_mut(&ex) else {
            return;
        };
        let max = self.cfg.max_message;
        if e.deadline.is_some() {
            e.deadline = Some(now + HEAD_TIMEOUT);
        }
        match &mut e.body {
            Body::Json(buf) => {
                if buf.len() + b.len() > max.saturating_add(64 * 1024) {
                    let awaiting = e.awaiting.clone();
                    self.drop_exchange(ex);
                    if let Some(id) = awaiting {
                        let msg = format!(
                            "the answer is larger than {LIMIT_NAME} ({})",
                            shared::human_bytes(max)
                        );
                        self.answer_pending(&id, jsonrpc::MESSAGE_TOO_LARGE, &msg);
                    }
                    return;
                }
                buf.extend_from_slice(&b);
            }
            Body::Error { buf, .. } => {
                let room = ERROR_BODY_MAX.saturating_sub(buf.len());
                buf.extend_from_slice(&b[..b.len().min(room)]);
            }
            Body::Sse(p) => {
                p.push(&b);
                self.take_events(ex, now);
            }
            Body::Head | Body::Done => {}
        }
    }

    /// Delivers the complete events of an SSE body.
    fn take_events(&mut self, ex: u64, now: Instant) {
        loop {
            let Some(e) = self.exchanges.get_mut(&ex) else {
                return;
            };
            let Body::Sse(p) = &mut e.body else {
                return;
            };
            let next = p.next_event();
            e.last_event_id = p.last_event_id().map(str::to_owned);
            e.retry = p.retry();
            let legacy = matches!(e.purpose, Purpose::LegacyStream);
            match next {
                Ok(Some(ev)) if legacy && ev.name == "endpoint" => {
                    self.on_endpoint(ex, &ev.data, now);
                }
                Ok(Some(ev)) if legacy && ev.name == "message" && !ev.data.is_empty() => {
                    self.on_legacy_message();
                    self.deliver(ev.data, None, now);
                }
                Ok(Some(ev)) => {
                    if ev.name == "message" && !ev.data.is_empty() {
                        self.deliver(ev.data, Some(ex), now);
                    }
                }
                Ok(None) => return,
                Err(err) => {
                    warn!("{err}; dropping that stream");
                    let awaiting = e.awaiting.clone();
                    self.drop_exchange(ex);
                    if legacy {
                        return self.legacy_lost(&err.to_string(), now);
                    }
                    if let Some(id) = awaiting {
                        let msg = format!("{err} ({LIMIT_NAME})");
                        self.answer_pending(&id, jsonrpc::MESSAGE_TOO_LARGE, &msg);
                    }
                    return;
                }
            }
        }
    }

    /// The body ended (`why` = `None`) or the exchange failed.
    pub(super) fn on_end(&mut self, ex: u64, why: Option<String>, now: Instant) {
        let Some(mut e) = self.exchanges.remove(&ex) else {
            return;
        };
        if self.barrier == Some(ex) {
            self.barrier = None;
        }
        self.draining.retain(|d| d.0 != ex);
        if matches!(e.purpose, Purpose::LegacyStream) {
            let why = why.unwrap_or_else(|| "the server ended its stream".into());
            return self.legacy_lost(&why, now);
        }
        let url = self.cfg.url.to_string();
        match std::mem::replace(&mut e.body, Body::Done) {
            Body::Head => {
                // No answer at all: the connection failed.
                let why = why.unwrap_or_else(|| "no answer".into());
                match e.purpose {
                    Purpose::Listen => self.listen_broke(e.last_event_id, e.resumes, e.retry, now),
                    Purpose::Resume => self.stream_broke(e, &why, now),
                    Purpose::Post(p) => {
                        if let Some(id) = p.msg.request_id() {
                            warn!("cannot reach the MCP server at {url}: {why}");
                            let msg = format!(
                                "cannot reach the MCP server at {url}: {why}; the request may \
                                 not have reached it — retry it"
                            );
                            if is_reinit_id(id) {
                                return self.reinit_failed(&msg);
                            }
                            self.answer_pending(id, jsonrpc::RELAY_UNAVAILABLE, &msg);
                        } else {
                            warn!(
                                "cannot reach the MCP server at {url}: {why}; a message was lost"
                            );
                        }
                    }
                    Purpose::Delete | Purpose::LegacyStream => {}
                }
            }
            Body::Json(buf) => match why {
                None => self.deliver(buf.freeze(), None, now),
                Some(why) => self.stream_broke(e, &why, now),
            },
            Body::Sse(_) => {
                let why = why.unwrap_or_else(|| "the server ended the stream".into());
                match e.purpose {
                    Purpose::Listen => {
                        debug!("the server's stream for its own messages ended: {why}");
                        self.listen_broke(e.last_event_id, 0, e.retry, now);
                    }
                    _ => self.stream_broke(e, &why, now),
                }
            }
            Body::Error { status, buf } => {
                let Some(id) = e.awaiting.clone() else {
                    warn!(
                        "the MCP server answered HTTP {status}: {}",
                        exchange::first_line(&buf)
                    );
                    return;
                };
                // A JSON-RPC error for this request is its answer.
                if let Some(m) = Msg::classify(buf.clone().freeze()) {
                    if matches!(&m.kind, MsgKind::Response { id: Some(rid), .. } if *rid == id) {
                        if let Purpose::Post(p) = &e.purpose {
                            if self.relist_for(p, &m.bytes) {
                                return;
                            }
                        }
                        return self.deliver(m.bytes, None, now);
                    }
                }
                let discover = matches!(&e.purpose,
                    Purpose::Post(p) if p.msg.method() == Some("server/discover"));
                if discover {
                    // A server of the handshake era: the IDE falls back to initialize.
                    let msg =
                        format!("server/discover is not supported by this server (HTTP {status})");
                    return self.answer_pending(&id, jsonrpc::METHOD_NOT_FOUND, &msg);
                }
                let line = exchange::first_line(&buf);
                let msg = format!("the MCP server at {url} answered HTTP {status}: {line}");
                warn!("{msg}");
                if is_reinit_id(&id) {
                    return self.reinit_failed(&msg);
                }
                self.answer_pending(&id, jsonrpc::RELAY_UNAVAILABLE, &msg);
            }
            Body::Done => {}
        }
    }

    /// One message from the server for the IDE; `ex` is the exchange it came on.
    fn deliver(&mut self, payload: Bytes, ex: Option<u64>, now: Instant) {
        let d = ingress::decide(
            Frame::Line(payload),
            Peer::Server,
            self.cfg.max_message,
            LIMIT_NAME,
        );
        if let Some(r) = d.refusal {
            warn!("from the server: {}", r.what);
        }
        match d.action {
            Ingress::Forward(mut msg) => {
                if let MsgKind::Response { id: Some(id), .. } = &msg.kind {
                    let id = id.clone();
                    if self.tool_lists.remove(&id) {
                        if let Some(b) = self.params.learn(&msg.bytes) {
                            msg.bytes = b;
                        }
                    }
                    self.on_answer(&id, &msg.bytes, ex, now);
                    if relist::is_relist_id(&id) {
                        let ok = matches!(
                            msg.kind,
                            MsgKind::Response {
                                is_error: false,
                                ..
                            }
                        );
                        return self.on_relist_answer(&id, ok);
                    }
                    if self.reinit.as_ref() == Some(&id) {
                        debug!("the server answered the replayed initialize");
                        self.reinit = None;
                        self.release_after_reinit();
                        return;
                    }
                    if is_reinit_id(&id) || !self.pending.remove(&id) {
                        return; // ours, or answered already
                    }
                }
                self.push_out(msg.bytes);
            }
            // The server's own message was too large: it cannot be delivered; if it was a
            // request, the server gets this error.
            Ingress::ReplyToSender(error) => {
                if let Some(msg) = Msg::classify(error) {
                    // Counted like every queued message (poll_request subtracts it).
                    self.queue_bytes += msg.bytes.len();
                    self.queue.push_front(Post::new(msg));
                }
            }
            Ingress::ReplyToOther { id, error } => {
                if self.pending.remove(&id) {
                    self.push_out(error);
                }
            }
            Ingress::Drop => {}
        }
    }

    /// An answer to `id` arrived on exchange `ex`: learn the negotiated version if it answers
    /// an initialize, and let the exchange end.
    fn on_answer(&mut self, id: &Id, bytes: &[u8], ex: Option<u64>, now: Instant) {
        let init = self.init_id.as_ref() == Some(id) || self.reinit.as_ref() == Some(id);
        if init {
            if let Some(v) = negotiated_version(bytes) {
                self.negotiated = Some(v);
                // A stateful server may speak first as soon as it hears
                // `notifications/initialized` (server-everything lists its new tools at once):
                // open the stream for its own messages now, before the IDE has even seen this
                // answer, so nothing it sends then is dropped for want of a stream. Stateless
                // servers get it after `notifications/initialized`, as before.
                if self.session.is_some() && self.legacy.is_none() && self.listen == Listen::Off {
                    self.listen = Listen::Due {
                        at: now,
                        last_event_id: None,
                        failures: 0,
                    };
                }
            }
        }
        let Some(ex) = ex else { return };
        if let Some(e) = self
            .exchanges
            .get_mut(&ex)
            .filter(|e| e.awaiting.as_ref() == Some(id))
        {
            // Answered: the stream's end is no loss now — not even when the IDE, its answer in
            // hand, has already sent a new request with the same id.
            e.awaiting = None;
            // The server should end the stream now; if it does not, it is let go soon.
            self.draining.push((ex, now + DRAIN_WAIT));
        }
    }
}

/// `result.protocolVersion` of an initialize answer.
fn negotiated_version(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Resp {
        result: Option<Res>,
    }
    #[derive(serde::Deserialize)]
    struct Res {
        #[serde(rename = "protocolVersion")]
        protocol_version: Option<String>,
    }
    serde_json::from_slice::<Resp>(bytes)
        .ok()?
        .result?
        .protocol_version
        .filter(|v| v.len() < 64)
}

//! The legacy HTTP+SSE transport (MCP 2024-11-05), for servers that answer the first
//! Streamable HTTP POST with 404 or 405: a GET of the URL opens an SSE stream whose
//! `endpoint` event names the URL to POST messages to (202, no body); every answer and every
//! server message comes on that stream. There is no resumption: a lost stream is a lost
//! session — the requests sent on it are answered with `-32011`, and the next message opens a
//! new stream and replays the IDE's handshake (as after a 404 in Streamable HTTP).

use std::collections::HashSet;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::Method;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use shared::jsonrpc::{self, Id};

use super::session::DEFAULT_RETRY;
use super::timers::HEAD_TIMEOUT;
use super::{Body, Exchange, HttpCore, Listen, Purpose};
use crate::upstream::exchange::{self, Answer, Outgoing};
use crate::upstream::sse::SseParser;

/// Longest wait before opening a stream again after losses in a row.
const MAX_DELAY: Duration = Duration::from_secs(30);

/// The legacy session's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Legacy {
    /// No stream: one opens at `at` once a message waits to be sent.
    Off { at: Instant, failures: u32 },
    /// The GET (this exchange) is open; no `endpoint` event yet.
    Connecting { stream: u64, failures: u32 },
    /// Messages go by POST to `post`; answers come on exchange `stream`.
    Ready {
        stream: u64,
        post: http::Uri,
        failures: u32,
    },
}

impl HttpCore {
    /// A Streamable HTTP POST was refused with 404/405 before any session: fall back to the
    /// legacy transport (once) and send the message again there.
    pub(super) fn fall_back_to_legacy(&mut self, ex: u64, status: u16, now: Instant) {
        let Some(e) = self.exchanges.get_mut(&ex) else {
            return;
        };
        let purpose = std::mem::replace(&mut e.purpose, Purpose::Delete);
        self.drop_exchange(ex);
        if self.legacy.is_none() {
            warn!(
                "the MCP server at {} answered a Streamable HTTP POST with HTTP {status}; \
                 using the HTTP+SSE transport (2024-11-05)",
                self.cfg.url
            );
            self.legacy = Some(Legacy::Off {
                at: now,
                failures: 0,
            });
            self.listen = Listen::Off;
        }
        if let Purpose::Post(p) = purpose {
            self.queue_bytes += p.msg.bytes.len();
            self.queue.push_front(p);
        }
    }

    /// In legacy mode, what `poll_request` does first: `Some` ends it (with a request or
    /// with nothing), `None` lets it POST as usual.
    pub(super) fn poll_legacy(&mut self, now: Instant) -> Option<Option<Outgoing>> {
        match self.legacy.as_ref()? {
            Legacy::Ready { .. } => None,
            Legacy::Connecting { .. } => Some(None),
            Legacy::Off { at, failures } => {
                let waiting = !self.queue.is_empty() || !self.replay.is_empty();
                if !waiting || *at > now || self.eof_at.is_some() {
                    return Some(None);
                }
                let failures = *failures;
                Some(Some(self.start_legacy_stream(failures, now)))
            }
        }
    }

    /// When a legacy stream is due to open (for `poll_timeout`).
    pub(super) fn legacy_due(&self) -> Option<Instant> {
        match &self.legacy {
            Some(Legacy::Off { at, .. }) if !self.queue.is_empty() => Some(*at),
            _ => None,
        }
    }

    fn start_legacy_stream(&mut self, failures: u32, now: Instant) -> Outgoing {
        let ex = self.new_ex();
        debug!(ex, "opening the HTTP+SSE stream");
        self.legacy = Some(Legacy::Connecting {
            stream: ex,
            failures,
        });
        self.exchanges.insert(
            ex,
            Exchange {
                purpose: Purpose::LegacyStream,
                body: Body::Head,
                sent_session: None,
                awaiting: None,
                last_event_id: None,
                retry: None,
                resumes: 0,
                deadline: Some(now + HEAD_TIMEOUT),
                legacy: true,
            },
        );
        Outgoing {
            ex,
            method: Method::GET,
            url: self.cfg.url.clone(),
            headers: exchange::get_headers(None, None, None),
            body: Bytes::new(),
        }
    }

    /// The URL legacy POSTs go to, if the legacy session is ready.
    pub(super) fn legacy_post_url(&self) -> Option<http::Uri> {
        match &self.legacy {
            Some(Legacy::Ready { post, .. }) => Some(post.clone()),
            _ => None,
        }
    }

    /// The head of a legacy exchange (the stream, or a POST to the endpoint).
    pub(super) fn on_legacy_head(
        &mut self,
        ex: u64,
        status: http::StatusCode,
        answer: Answer,
        now: Instant,
    ) {
        let Some(e) = self.exchanges.get_mut(&ex) else {
            return;
        };
        if matches!(e.purpose, Purpose::LegacyStream) {
            if answer == Answer::Sse {
                let max = self.cfg.max_message.saturating_add(64 * 1024);
                e.body = Body::Sse(SseParser::new(max));
                e.deadline = None;
                return;
            }
            self.drop_exchange(ex);
            return self.legacy_lost(&format!("its stream was refused: HTTP {status}"), now);
        }
        if status.is_success() {
            // Accepted: the answer comes on the stream.
            self.ever_ok = true;
            return self.drop_exchange(ex);
        }
        if status == http::StatusCode::NOT_FOUND {
            let purpose = std::mem::replace(&mut e.purpose, Purpose::Delete);
            self.drop_exchange(ex);
            self.legacy_lost("the server no longer knows the session (404)", now);
            if let Purpose::Post(p) = purpose {
                self.resend(p);
            }
            return;
        }
        e.body = Body::Error {
            status: status.as_u16(),
            buf: BytesMut::new(),
        };
    }

    /// An `endpoint` event on stream `ex`: where to POST from now on.
    pub(super) fn on_endpoint(&mut self, ex: u64, data: &[u8], now: Instant) {
        let Some(Legacy::Connecting { stream, failures }) = self.legacy else {
            return debug!("ignoring a second endpoint event");
        };
        if stream != ex {
            return;
        }
        let post = std::str::from_utf8(data)
            .ok()
            .and_then(|t| exchange::resolve_endpoint(&self.cfg.url, t.trim()));
        match post {
            Some(post) => {
                info!("HTTP+SSE session open; messages go to {}", post.path());
                self.ever_ok = true;
                self.legacy = Some(Legacy::Ready {
                    stream,
                    post,
                    failures,
                });
            }
            None => {
                self.drop_exchange(ex);
                self.legacy_lost("its endpoint event names no URL on the same origin", now);
            }
        }
    }

    /// A message came on the legacy stream: the session works, losses in a row start over.
    pub(super) fn on_legacy_message(&mut self) {
        if let Some(Legacy::Ready { failures, .. }) = &mut self.legacy {
            *failures = 0;
        }
    }

    /// The legacy stream ended, failed or was refused, or the endpoint forgot the session:
    /// the requests sent on it are answered (their answers would have come on it); if it
    /// never opened, what waits is answered too. The next message opens a new stream.
    pub(super) fn legacy_lost(&mut self, why: &str, now: Instant) {
        let Some(state) = self.legacy.take() else {
            return;
        };
        let (was_ready, failures) = match state {
            Legacy::Ready {
                stream, failures, ..
            } => {
                self.drop_exchange(stream);
                (true, failures)
            }
            Legacy::Connecting { stream, failures } => {
                self.drop_exchange(stream);
                (false, failures)
            }
            Legacy::Off { failures, .. } => (false, failures),
        };
        let delay = match failures {
            0 => Duration::ZERO,
            n => DEFAULT_RETRY.saturating_mul(1 << n.min(6)).min(MAX_DELAY),
        };
        self.legacy = Some(Legacy::Off {
            at: now + delay,
            failures: failures + 1,
        });
        let posts: Vec<u64> = self
            .exchanges
            .iter()
            .filter(|(_, e)| e.legacy && matches!(e.purpose, Purpose::Post(_)))
            .map(|(ex, _)| *ex)
            .collect();
        for ex in posts {
            self.drop_exchange(ex);
        }
        let url = self.cfg.url.to_string();
        warn!("the HTTP+SSE session with {url} was lost: {why}");
        if self.reinit.take().is_some() {
            self.replay.clear();
        }
        if was_ready {
            self.lost_handshake = self.handshake.initialize.is_some();
        }
        let msg = format!(
            "the HTTP+SSE session with the MCP server at {url} was lost before the answer \
             ({why}); the request's outcome is unknown — retry it"
        );
        let queued: HashSet<Id> = self
            .queue
            .iter()
            .filter_map(|p| p.msg.request_id().cloned())
            .collect();
        let mut sent: Vec<Id> = self
            .pending
            .iter()
            .filter(|id| !queued.contains(*id))
            .cloned()
            .collect();
        if !was_ready {
            // It never opened: what waits would wait for nothing.
            self.queue.clear();
            self.queue_bytes = 0;
            sent.extend(queued);
        }
        sent.sort_by_key(|id| id.to_string());
        for id in sent {
            self.answer_pending(&id, jsonrpc::RELAY_UNAVAILABLE, &msg);
        }
    }
}

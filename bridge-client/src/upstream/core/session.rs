//! Sessions and broken streams: a 404 for a known session opens a new one with the IDE's
//! handshake replayed; a stream that breaks before its answer is resumed from its last event
//! id (after the server's `retry:`) or its request is answered; the standalone stream is
//! reopened with backoff.

use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use shared::ingress::{Msg, MsgKind};
use shared::jsonrpc::{self, Id};

use super::{HttpCore, Listen, Post, Resume};
use crate::session::core::ide::{is_reinit_id, with_id, REINIT_PREFIX};

/// Resumes of one broken stream at most.
const MAX_RESUMES: u32 = 5;
/// Delay before resuming when the server gave no `retry:`.
pub(super) const DEFAULT_RETRY: Duration = Duration::from_millis(500);
/// Longest delay before reopening the standalone stream after failures.
const MAX_LISTEN_DELAY: Duration = Duration::from_secs(30);
/// Times one message is sent again after meeting a lost session.
const MAX_TRIES: u32 = 3;

impl HttpCore {
    /// A stream carrying a request's answer broke before the answer: resume it from its last
    /// event id, or answer the request.
    pub(super) fn stream_broke(&mut self, e: super::Exchange, why: &str, now: Instant) {
        let Some(id) = e.awaiting else {
            return;
        };
        if !self.awaits(&id) {
            return;
        }
        match e.last_event_id {
            Some(last) if e.resumes < MAX_RESUMES => {
                let delay = e.retry.unwrap_or(DEFAULT_RETRY);
                info!(
                    "the server's stream broke before its answer ({why}); resuming in {} ms",
                    delay.as_millis()
                );
                self.resumes.push(Resume {
                    at: now + delay,
                    awaiting: id,
                    last_event_id: last,
                    retry: e.retry,
                    resumes: e.resumes + 1,
                });
            }
            _ => {
                let url = self.cfg.url.to_string();
                warn!("the answer from {url} was lost: {why}");
                let msg = format!(
                    "the connection to the MCP server at {url} broke before the answer ({why}) \
                     and cannot be resumed; the request's outcome is unknown, retry it"
                );
                if is_reinit_id(&id) {
                    return self.reinit_failed(&msg);
                }
                self.answer_pending(&id, jsonrpc::RELAY_UNAVAILABLE, &msg);
            }
        }
    }

    /// Whether an answer to `id` is still awaited: the IDE's request, the replayed initialize
    /// or the re-list in flight (whose loss ends in `on_relist_lost`).
    pub(super) fn awaits(&self, id: &Id) -> bool {
        self.pending.contains(id) || self.reinit.as_ref() == Some(id) || self.relisting(id)
    }

    /// The standalone stream ended or failed: open it again later.
    pub(super) fn listen_broke(
        &mut self,
        last: Option<String>,
        failures: u32,
        retry: Option<Duration>,
        now: Instant,
    ) {
        if !matches!(self.listen, Listen::Open(_)) || self.eof_at.is_some() {
            return;
        }
        let backoff = DEFAULT_RETRY
            .saturating_mul(1 << failures.min(6))
            .min(MAX_LISTEN_DELAY);
        let delay = if failures == 0 {
            retry.unwrap_or(DEFAULT_RETRY)
        } else {
            backoff
        };
        self.listen = Listen::Due {
            at: now + delay,
            last_event_id: last,
            failures: failures + 1,
        };
    }

    /// The server no longer knows our session: forget it; the IDE's handshake is replayed on
    /// a new one before anything else is sent.
    pub(super) fn new_session(&mut self) {
        warn!("the MCP server lost the session (404); opening a new one");
        self.session = None;
        if let Listen::Open(ex) = self.listen {
            self.drop_exchange(ex);
        }
        self.listen = Listen::Off;
        // Without a handshake (2026-07-28 era) there is nothing to replay.
        self.lost_handshake = self.handshake.initialize.is_some();
    }

    /// Starts replaying the IDE's handshake (called when something waits to be sent).
    pub(super) fn start_replay(&mut self) {
        self.lost_handshake = false;
        let Some(init) = self.handshake.initialize.clone() else {
            return;
        };
        self.reinit_count += 1;
        let id = Id::Str(format!("{REINIT_PREFIX}{}", self.reinit_count).into());
        let Some(msg) = with_id(&init, &id).and_then(Msg::classify) else {
            return;
        };
        info!("new session: replaying the IDE's initialize");
        self.replay.push_back(Post::new(msg));
        self.reinit = Some(id);
    }

    /// The replayed initialize is answered (or given up on): the IDE's `initialized` next.
    pub(super) fn release_after_reinit(&mut self) {
        if let Some(msg) = self.handshake.initialized.clone().and_then(Msg::classify) {
            self.replay.push_back(Post::new(msg));
        }
    }

    /// The replayed initialize failed: what waits for the new session is answered; the next
    /// IDE message tries again.
    pub(super) fn reinit_failed(&mut self, why: &str) {
        self.reinit = None;
        self.lost_handshake = true;
        let queued: Vec<Post> = self.queue.drain(..).collect();
        self.queue_bytes = 0;
        for p in queued {
            if let Some(id) = p.msg.request_id() {
                let id = id.clone();
                self.answer_pending(&id, jsonrpc::RELAY_UNAVAILABLE, why);
            }
        }
    }

    /// A message that met a lost session goes again, first.
    pub(super) fn resend(&mut self, mut p: Post) {
        if let Some(MsgKind::Request { id, .. }) = Some(&p.msg.kind) {
            if is_reinit_id(id) {
                return; // a new session replays afresh
            }
        }
        p.tries += 1;
        if p.tries > MAX_TRIES {
            if let Some(id) = p.msg.request_id().cloned() {
                self.answer_pending(
                    &id,
                    jsonrpc::RELAY_UNAVAILABLE,
                    "the MCP server keeps losing the session; retry later",
                );
            }
            return;
        }
        self.queue_bytes += p.msg.bytes.len();
        self.queue.push_front(p);
    }
}

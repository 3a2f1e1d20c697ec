//! The relay's side of the core: when to connect, what a `welcome` or a failed attempt means
//! (resume, new session, retry with backoff, give up), messages from the relay, and what is
//! done when a connection or a whole session is lost.

use bytes::Bytes;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use shared::ingress::Msg;
use shared::jsonrpc::{self, Id};
use shared::tunnel::Control;

use super::{
    ide, Core, First, Link, SessionInfo, CONNECT_TIMEOUT, FIRST_FAILURE_DRAIN, FIRST_RETRIES,
    MAX_QUICK_FAILURES, QUICK_FAILURE,
};
use crate::session::{ConnectRequest, Welcome};
use crate::ClientError;

impl Core {
    /// A connection to open now, if one is due. The driver runs one attempt at a time and
    /// reports its outcome with [`Self::on_connected`] or [`Self::on_connect_failed`].
    pub(crate) fn poll_connect(&mut self, now: Instant) -> Option<ConnectRequest> {
        if matches!(self.first, First::Failed { .. }) || self.ide_gone {
            return None;
        }
        if self.link == Link::Idle && (self.session.is_some() || self.has_queued()) {
            self.link = Link::Waiting {
                at: now,
                attempt: 0,
            };
        }
        let Link::Waiting { at, attempt } = self.link else {
            return None;
        };
        if now < at {
            return None;
        }
        if let (Some(s), Some(lost)) = (&self.session, self.lost_at) {
            if now.saturating_duration_since(lost) > s.resume_window {
                let window = shared::human_duration(s.resume_window);
                self.session_lost(
                    &format!("the relay could not be reached within the {window} resume window"),
                    now,
                );
                return self.poll_connect(now);
            }
        }
        let resume = self
            .session
            .as_ref()
            .map(|s| (s.id.clone(), self.ep.last_received()));
        self.link = Link::Connecting {
            attempt,
            resume: resume.is_some(),
        };
        Some(ConnectRequest {
            resume,
            reestablish: self.lost_sessions > 0,
            timeout: CONNECT_TIMEOUT,
        })
    }

    /// The attempt succeeded: the relay sent `w`.
    pub(crate) fn on_connected(&mut self, w: Welcome, now: Instant) {
        if !matches!(self.link, Link::Connecting { .. }) {
            return;
        }
        if w.resumed && self.session.is_some() {
            let away = self
                .lost_at
                .map(|t| now.saturating_duration_since(t))
                .unwrap_or_default();
            if let Err(e) = self.ep.connect(w.last_seq) {
                self.session_lost(&format!("the relay's resume point is wrong ({e})"), now);
                return;
            }
            self.link = Link::Connected;
            self.lost_at = None;
            warn!(
                "resumed the session after {} ms away; replaying {} message(s)",
                away.as_millis(),
                self.ep.unacked()
            );
            self.pump(now);
            return;
        }
        if self.session.is_some() {
            // Asked to resume, got a new session: the old one is gone.
            self.session_lost("the session could not be resumed", now);
        }
        self.session = Some(SessionInfo {
            id: w.session,
            resume_window: w.resume_window,
        });
        self.link = Link::Connected;
        self.lost_at = None;
        let first = matches!(self.first, First::Connecting);
        if first {
            self.first = First::Done;
            info!(url = %self.cfg.url, "connected to relay");
            // stdin's end is counted from here, as if read after the connection was made.
            if self.eof_at.is_some() {
                self.eof_at = Some(now);
            }
        }
        self.start_session(now, first);
        self.pump(now);
    }

    /// The attempt failed.
    pub(crate) fn on_connect_failed(&mut self, e: ClientError, now: Instant) {
        let Link::Connecting { attempt, resume } = self.link else {
            return;
        };
        self.link = Link::Idle;
        // A first connection cut before the relay answered is tried again a few times (a busy
        // relay sheds handshakes); anything else fails the first connection at once.
        if matches!(self.first, First::Connecting)
            && matches!(e, ClientError::Handshake { .. })
            && attempt < FIRST_RETRIES
        {
            let delay = self.backoff(attempt + 1);
            debug!("{e}; retrying in {:.1}s", delay.as_secs_f64());
            self.link = Link::Waiting {
                at: now + delay,
                attempt: attempt + 1,
            };
            return;
        }
        if matches!(self.first, First::Connecting) {
            // Answer what the IDE already asked, and what it asks in the next moments, then
            // exit with the reason.
            let message = e.to_string();
            self.fail_queued(&message);
            self.first = First::Failed {
                until: now + FIRST_FAILURE_DRAIN,
                message,
                error: Some(e),
            };
            return;
        }
        match e {
            ClientError::Refused { status, reason, .. }
                if resume && (400..500).contains(&status) =>
            {
                self.session_lost(
                    &format!("the session could not be resumed: HTTP {status}: {reason}"),
                    now,
                );
                if status == 404 || status == 410 {
                    // Gone (relay restarted, window passed): open a new session right away.
                    self.link = Link::Waiting {
                        at: now,
                        attempt: 0,
                    };
                } else {
                    // Refused outright (credentials revoked, say): answer what waits, and try
                    // again only when the IDE sends something new.
                    self.fail_queued(&format!("HTTP {status}: {reason}"));
                }
            }
            e if e.is_transient() && (self.session.is_some() || attempt < 3) => {
                let delay = self.backoff(attempt + 1);
                warn!("{e}; retrying in {:.1}s", delay.as_secs_f64());
                self.link = Link::Waiting {
                    at: now + delay,
                    attempt: attempt + 1,
                };
            }
            e => {
                warn!("{e}");
                let why = e.to_string();
                if self.session.is_some() {
                    self.session_lost(&why, now);
                }
                // No session and no luck: answer what the IDE is waiting for; its next
                // message tries again.
                self.link = Link::Idle;
                self.fail_queued(&why);
            }
        }
    }

    /// The connection dropped (closed, broken, silent, a protocol error); the session may
    /// still be resumable.
    pub(crate) fn on_connection_lost(&mut self, why: &str, now: Instant) {
        if self.link != Link::Connected {
            return;
        }
        self.ep.disconnect();
        if self.session.is_none() {
            self.link = Link::Idle;
            return;
        }
        self.lost_at.get_or_insert(now);
        let delay = self.backoff(0);
        warn!(
            "connection to the relay lost ({why}); resuming in {:.1}s",
            delay.as_secs_f64()
        );
        self.link = Link::Waiting {
            at: now + delay,
            attempt: 0,
        };
    }

    /// The relay broke a hard limit (a message over the WebSocket cap): resuming would replay
    /// the same message, so this session cannot go on.
    pub(crate) fn on_relay_fatal(&mut self, why: &str, now: Instant) {
        self.session_lost(&format!("the relay broke a limit ({why})"), now);
    }

    /// One message read from the connection.
    pub(crate) fn on_relay_message(&mut self, raw: Bytes, now: Instant) {
        if self.link != Link::Connected {
            return;
        }
        match self.ep.on_message(raw) {
            Ok(None) => {}
            Ok(Some(Control::End { reason })) => {
                let reason = shared::log_safe_max(&reason, 1024);
                return self.session_lost(&format!("the relay ended the session: {reason}"), now);
            }
            Ok(Some(Control::Drain { reason })) => {
                warn!(
                    "the relay is draining ({}); new requests will go to a new session",
                    shared::log_safe(&reason)
                );
                self.draining = true;
            }
            Ok(Some(other)) => debug!("ignoring control message {other:?}"),
            Err(e) if e.is_fatal() => return self.on_relay_fatal(&e.to_string(), now),
            Err(e) => return self.on_connection_lost(&format!("protocol error: {e}"), now),
        }
        self.pump(now);
    }

    /// Moves what the relay sent on to stdout while there is room. Taking a message is what
    /// acknowledges it, so a slow IDE slows the relay instead of growing a queue here.
    pub(super) fn pump(&mut self, now: Instant) {
        while self.out_has_room() && !self.ide_gone && !self.finished {
            let Some(payload) = self.ep.poll_receive(now) else {
                break;
            };
            self.deliver(payload);
        }
    }

    /// The session cannot continue: answer everything it had in flight, forget it. A new
    /// session is opened when there is something to send.
    pub(super) fn session_lost(&mut self, why: &str, now: Instant) {
        self.link = Link::Idle;
        self.lost_sessions += 1;
        // What reached the old session is gone with it (its requests are answered below).
        let mut old = std::mem::replace(&mut self.ep, self.cfg.endpoint());
        self.session = None;
        self.lost_at = None;
        self.reinit = None;
        self.draining = false;
        // Messages never written to a connection cannot have reached the old session: they go
        // to the new one, ahead of anything held since.
        let never_sent = old.take_never_sent();
        for bytes in never_sent.into_iter().rev() {
            let Some(msg) = Msg::classify(bytes) else {
                continue;
            };
            if let Some(id) = msg.request_id() {
                if ide::is_reinit_id(id) {
                    continue; // our own replayed handshake: a new session replays it afresh
                }
                self.pending.remove(id);
            }
            self.held_bytes += msg.bytes.len();
            self.held.push_front(msg);
        }
        let mut ids: Vec<Id> = self.pending.drain().collect();
        if ids.is_empty() {
            warn!("{why}");
        } else {
            warn!(
                "{why}; answering {} request(s) in flight with an error",
                ids.len()
            );
        }
        ids.sort_by_key(|id| id.to_string());
        let message = format!("{why}; the request's outcome is unknown, retry it");
        for id in ids {
            self.answer(&id, jsonrpc::RELAY_UNAVAILABLE, &message);
        }
        let quick = self
            .session_started
            .is_some_and(|t| now.saturating_duration_since(t) < QUICK_FAILURE);
        self.quick_failures = if quick { self.quick_failures + 1 } else { 0 };
        self.session_started = None;
        if self.quick_failures >= MAX_QUICK_FAILURES {
            // Sessions keep dying at once: do not start another for what is queued; answer it.
            self.fail_queued(&format!(
                "{why}; not retried: the last sessions ended right after they opened"
            ));
        }
    }
}

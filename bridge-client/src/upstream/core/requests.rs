//! The HTTP requests the core starts: a POST per message, a GET to resume a broken stream or
//! to listen for the server's own messages, and the DELETE that ends the session — each with
//! the headers `exchange` says, and its bookkeeping entry.

use bytes::Bytes;
use http::Method;
use tokio::time::Instant;
use tracing::debug;

use super::timers::HEAD_TIMEOUT;
use super::{Body, Exchange, HttpCore, Listen, Purpose, Resume};
use crate::upstream::exchange::{self, Outgoing};
use shared::ingress::{Msg, MsgKind};
use shared::jsonrpc::Id;

/// An IDE message (or a replayed one) to POST.
#[derive(Debug, Clone)]
pub(super) struct Post {
    pub(super) msg: Msg,
    /// Times it met a lost session already.
    pub(super) tries: u32,
    /// Sent again after a refresh or a sign-in: another 401 is answered, not waited on.
    pub(super) after_auth: bool,
    /// Sent again after a `-32020` and a re-list (`relist`): another one reaches the IDE.
    pub(super) relisted: bool,
    /// Held a second time, for a step-up (a 403 `insufficient_scope` to the token of the
    /// sign-in its first refusal started): a third refusal is answered.
    pub(super) stepped_up: bool,
}

impl Post {
    pub(super) fn new(msg: Msg) -> Post {
        Post {
            msg,
            tries: 0,
            after_auth: false,
            relisted: false,
            stepped_up: false,
        }
    }
}

impl HttpCore {
    pub(super) fn new_ex(&mut self) -> u64 {
        self.next_ex += 1;
        self.next_ex
    }

    pub(super) fn start_post(&mut self, post: Post, now: Instant) -> Outgoing {
        let ex = self.new_ex();
        let ordered = matches!(
            post.msg.method(),
            Some("initialize" | "notifications/initialized")
        );
        if ordered {
            self.barrier = Some(ex);
        }
        let session = self.session.clone();
        let legacy = self.legacy_post_url();
        let headers = match legacy {
            Some(_) => exchange::legacy_post_headers(),
            None => {
                let mut h = exchange::post_headers(
                    &post.msg,
                    session.as_deref(),
                    self.negotiated.as_deref(),
                );
                if let MsgKind::Request {
                    tool_name: Some(tool),
                    ..
                } = &post.msg.kind
                {
                    h.extend(self.params.headers(tool, &post.msg.bytes));
                }
                h
            }
        };
        let out = Outgoing {
            ex,
            method: Method::POST,
            url: legacy.clone().unwrap_or_else(|| self.cfg.url.clone()),
            headers,
            body: post.msg.bytes.clone(),
        };
        let awaiting = post.msg.request_id().cloned();
        self.exchanges.insert(
            ex,
            Exchange {
                purpose: Purpose::Post(post),
                body: Body::Head,
                sent_session: session,
                awaiting,
                last_event_id: None,
                retry: None,
                resumes: 0,
                deadline: Some(now + HEAD_TIMEOUT),
                legacy: legacy.is_some(),
            },
        );
        out
    }

    pub(super) fn start_resume(&mut self, r: Resume, now: Instant) -> Option<Outgoing> {
        if !self.awaits(&r.awaiting) {
            return None; // answered (or cancelled) meanwhile
        }
        let ex = self.new_ex();
        debug!(
            ex,
            "resuming a broken stream from event {}", r.last_event_id
        );
        let headers = exchange::get_headers(
            self.session.as_deref(),
            self.negotiated.as_deref(),
            Some(&r.last_event_id),
        );
        self.exchanges.insert(
            ex,
            Exchange {
                purpose: Purpose::Resume,
                body: Body::Head,
                sent_session: self.session.clone(),
                awaiting: Some(r.awaiting),
                last_event_id: Some(r.last_event_id),
                retry: r.retry,
                resumes: r.resumes,
                deadline: Some(now + HEAD_TIMEOUT),
                legacy: false,
            },
        );
        Some(Outgoing {
            ex,
            method: Method::GET,
            url: self.cfg.url.clone(),
            headers,
            body: Bytes::new(),
        })
    }

    pub(super) fn start_listen(&mut self, now: Instant) -> Outgoing {
        let (last, failures) = match std::mem::replace(&mut self.listen, Listen::Off) {
            Listen::Due {
                last_event_id,
                failures,
                ..
            } => (last_event_id, failures),
            _ => (None, 0),
        };
        let ex = self.new_ex();
        self.listen = Listen::Open(ex);
        let headers = exchange::get_headers(
            self.session.as_deref(),
            self.negotiated.as_deref(),
            last.as_deref(),
        );
        self.exchanges.insert(
            ex,
            Exchange {
                purpose: Purpose::Listen,
                body: Body::Head,
                sent_session: self.session.clone(),
                awaiting: None,
                last_event_id: last,
                retry: None,
                resumes: failures,
                deadline: Some(now + HEAD_TIMEOUT),
                legacy: false,
            },
        );
        Outgoing {
            ex,
            method: Method::GET,
            url: self.cfg.url.clone(),
            headers,
            body: Bytes::new(),
        }
    }

    /// The end: every request still waiting is answered; the DELETE that ends the session,
    /// if there is one.
    pub(crate) fn finish(&mut self) -> Option<Outgoing> {
        self.finished = true;
        let mut ids: Vec<Id> = self.pending.drain().collect();
        ids.sort_by_key(|id| id.to_string());
        for answer in crate::ide_input::exit_answers(ids) {
            self.push_out(answer);
        }
        let session = self.session.take()?;
        let ex = self.new_ex();
        self.exchanges.insert(
            ex,
            Exchange {
                purpose: Purpose::Delete,
                body: Body::Head,
                sent_session: Some(session.clone()),
                awaiting: None,
                last_event_id: None,
                retry: None,
                resumes: 0,
                deadline: None,
                legacy: false,
            },
        );
        Some(Outgoing {
            ex,
            method: Method::DELETE,
            url: self.cfg.url.clone(),
            headers: exchange::delete_headers(&session, self.negotiated.as_deref()),
            body: Bytes::new(),
        })
    }
}

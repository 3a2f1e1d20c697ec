//! Sign-in while connected: a POST refused with 401 (or 403 `insufficient_scope`) is held, not
//! answered, while the driver's authorizer refreshes or signs in; nothing new is sent meanwhile
//! (the IDE's messages queue, bounded as always). The wait is bounded by
//! [`HttpConfig::auth_wait`](super::HttpConfig); success sends the held requests again, once —
//! a second refusal right after is answered, never waited on again. Not here: tokens, the
//! authorizer itself (`crate::oauth`), or how the driver runs it.

use tokio::time::Instant;
use tracing::warn;

use shared::jsonrpc::{self, Id};

use super::{HttpCore, Listen, Post, Purpose};
use crate::upstream::{AuthChallenge, UpstreamEvent};

/// A refresh or sign-in under way.
#[derive(Debug)]
pub(super) struct AuthWait {
    /// When the held requests are answered with an error if it has not ended.
    pub(super) until: Instant,
    /// POSTs refused with 401, to send again once it succeeds (at most one per exchange slot).
    held: Vec<Post>,
    /// The standalone stream was refused too: open it again afterwards.
    listen: bool,
}

impl HttpCore {
    /// Whether the core waits for the authorizer (the driver keeps its future while true).
    pub(crate) fn auth_waiting(&self) -> bool {
        self.auth.is_some()
    }

    /// An exchange for `purpose` was refused with `status` (401, or 403 asking for more scope).
    pub(super) fn on_auth_required(
        &mut self,
        purpose: Purpose,
        awaiting: Option<Id>,
        status: u16,
        www_authenticate: Option<String>,
        now: Instant,
    ) {
        let url = self.cfg.url.to_string();
        let Some(wait) = self.cfg.auth_wait else {
            if matches!(purpose, Purpose::Listen) {
                self.listen = Listen::Off;
            }
            warn!("the MCP server at {url} needs sign-in (HTTP {status})");
            self.events
                .push_back(UpstreamEvent::AuthRequired(AuthChallenge {
                    url: url.clone(),
                    status,
                    www_authenticate,
                }));
            if let Some(id) = awaiting {
                let msg = format!(
                    "the MCP server at {url} needs sign-in (HTTP {status}): run `bridge-client \
                     login {url}` (or give a token with --token-file or the MCP_BRIDGE_TOKEN \
                     environment variable), then retry"
                );
                self.answer_pending(&id, jsonrpc::RELAY_UNAVAILABLE, &msg);
            }
            return;
        };
        match purpose {
            // The token of that sign-in lacks a scope this request needs (a step-up, as a
            // first call that needs more than the first sign-in asked for meets): hold it once
            // more; the authorizer decides whether a new sign-in may ask for more.
            Purpose::Post(mut p) if p.after_auth && status == 403 && !p.stepped_up => {
                p.stepped_up = true;
                self.start_auth(now + wait, url, status, www_authenticate);
                if let Some(a) = &mut self.auth {
                    a.held.push(p);
                }
            }
            Purpose::Post(p) if p.after_auth => {
                warn!("the MCP server at {url} refused a fresh token (HTTP {status})");
                if let Some(id) = awaiting {
                    let msg = format!(
                        "the MCP server at {url} refused the token right after sign-in (HTTP \
                         {status}): check that your account may use it, or run `bridge-client \
                         logout {url}` and `bridge-client login {url}`, then retry"
                    );
                    self.answer_pending(&id, jsonrpc::RELAY_UNAVAILABLE, &msg);
                }
            }
            Purpose::Post(p) => {
                self.start_auth(now + wait, url, status, www_authenticate);
                if let Some(a) = &mut self.auth {
                    a.held.push(p);
                }
            }
            Purpose::Listen => {
                self.listen = Listen::Off;
                if let Some(a) = &mut self.auth {
                    a.listen = true;
                }
            }
            Purpose::Resume | Purpose::Delete | Purpose::LegacyStream => {
                if let Some(id) = awaiting {
                    let msg = format!(
                        "the MCP server at {url} refused the stream of this answer (HTTP \
                         {status}); retry"
                    );
                    self.answer_pending(&id, jsonrpc::RELAY_UNAVAILABLE, &msg);
                }
            }
        }
    }

    /// Starts waiting for the authorizer, unless it is already under way.
    fn start_auth(&mut self, until: Instant, url: String, status: u16, www: Option<String>) {
        if self.auth.is_some() {
            return;
        }
        warn!(
            "the MCP server at {url} asks for sign-in (HTTP {status}); holding requests meanwhile"
        );
        self.auth = Some(AuthWait {
            until,
            held: Vec::new(),
            listen: false,
        });
        self.events
            .push_back(UpstreamEvent::AuthRequired(AuthChallenge {
                url,
                status,
                www_authenticate: www,
            }));
    }

    /// The authorizer finished: `Ok` — send the held requests again (with the new token);
    /// `Err(text)` — answer them with it (the text names no token).
    pub(crate) fn on_auth_done(&mut self, result: Result<(), String>, now: Instant) {
        let Some(a) = self.auth.take() else {
            return;
        };
        match result {
            Ok(()) => {
                for mut p in a.held.into_iter().rev() {
                    p.after_auth = true;
                    self.replay.push_front(p);
                }
                if a.listen && self.listen == Listen::Off {
                    self.listen = Listen::Due {
                        at: now,
                        last_event_id: None,
                        failures: 0,
                    };
                }
            }
            Err(text) => {
                let url = self.cfg.url.to_string();
                warn!("sign-in to {url} failed: {text}");
                let msg = format!("sign-in to the MCP server at {url} failed: {text}");
                for p in a.held {
                    if let Some(id) = p.msg.request_id() {
                        self.answer_pending(&id.clone(), jsonrpc::RELAY_UNAVAILABLE, &msg);
                    }
                }
            }
        }
    }

    /// The wait has run out: the held requests are answered and the driver drops its future.
    pub(super) fn auth_timeout(&mut self, now: Instant) {
        if self.auth.as_ref().is_none_or(|a| a.until > now) {
            return;
        }
        let url = self.cfg.url.to_string();
        let secs = self.cfg.auth_wait.map(|d| d.as_secs()).unwrap_or_default();
        self.on_auth_done(
            Err(format!(
                "sign-in did not complete within {secs} s; run `bridge-client login {url}` in a \
                 terminal, then retry"
            )),
            now,
        );
    }
}

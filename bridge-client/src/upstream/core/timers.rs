//! Time in the HTTP core: when to wake the driver, and what passing time means — an exchange
//! whose response head does not come within [`HEAD_TIMEOUT`] (or whose JSON body stalls as
//! long) is given up on, so a server that accepts a POST and never answers cannot hold an
//! exchange slot; answered streams that do not end are let go; resumes and the standalone
//! stream come due. An SSE body may stay silent as long as the server likes: a dead peer
//! there is found by TCP keep-alive (and HTTP/2 pings), not by a clock here.

use std::time::Duration;

use tokio::time::Instant;
use tracing::warn;

use shared::jsonrpc;

use super::{Body, HttpCore, Listen, Purpose};
use crate::session::core::ide::is_reinit_id;
use crate::session::core::EOF_ANSWER_WAIT;

/// How long a response head may take, and a JSON body may stay silent.
pub(crate) const HEAD_TIMEOUT: Duration = Duration::from_secs(60);

impl HttpCore {
    /// When to call [`Self::on_timeout`] next.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let listen = match &self.listen {
            Listen::Due { at, .. } => Some(*at),
            _ => None,
        };
        self.resumes
            .iter()
            .map(|r| r.at)
            .chain(self.draining.iter().map(|d| d.1))
            .chain(self.exchanges.values().filter_map(|e| e.deadline))
            .chain(listen)
            .chain(self.legacy_due())
            .chain(self.eof_at.map(|t| t + EOF_ANSWER_WAIT))
            .chain(self.auth.as_ref().map(|a| a.until))
            .min()
    }

    /// Time passed: answered streams that did not end are let go; exchanges past their
    /// deadline are given up on.
    pub(crate) fn on_timeout(&mut self, now: Instant) {
        self.auth_timeout(now);
        let (late, keep): (Vec<_>, Vec<_>) = self.draining.drain(..).partition(|d| d.1 <= now);
        self.draining = keep;
        for (ex, _) in late {
            self.drop_exchange(ex);
        }
        let mut expired: Vec<u64> = self
            .exchanges
            .iter()
            .filter(|(_, e)| e.deadline.is_some_and(|d| d <= now))
            .map(|(ex, _)| *ex)
            .collect();
        expired.sort_unstable();
        for ex in expired {
            self.expire(ex, now);
        }
    }

    /// Exchange `ex` is past its deadline: stop reading it, and treat it as broken.
    fn expire(&mut self, ex: u64, now: Instant) {
        let Some(e) = self.exchanges.get(&ex) else {
            return;
        };
        let secs = HEAD_TIMEOUT.as_secs();
        let url = self.cfg.url.to_string();
        if !matches!(e.body, Body::Head) {
            // A JSON body that stalled: like a broken connection (its request is answered).
            self.dropped.push(ex);
            return self.on_end(ex, Some(format!("the body stalled for {secs} s")), now);
        }
        let post_id = match &e.purpose {
            Purpose::Post(p) => Some(p.msg.request_id().cloned()),
            _ => None,
        };
        let Some(id) = post_id else {
            // A GET: resumed or reopened as after any failure.
            self.dropped.push(ex);
            return self.on_end(ex, Some(format!("no response within {secs} s")), now);
        };
        self.drop_exchange(ex);
        let Some(id) = id else {
            warn!("the MCP server at {url} did not answer a notification within {secs} s");
            return;
        };
        let msg = format!(
            "timed out: the MCP server at {url} sent no response within {secs} s; the \
             request's outcome is unknown — retry it"
        );
        warn!("{msg}");
        if is_reinit_id(&id) {
            return self.reinit_failed(&msg);
        }
        self.answer_pending(&id, jsonrpc::RELAY_UNAVAILABLE, &msg);
    }
}

//! Bounds the connections still in their handshake — the TLS handshake, then the HTTP request
//! head, each within `header_read_timeout_ms` — per source and in total (`[limits]`
//! `max_handshakes_per_source` and `max_handshakes`); when every slot is taken, the oldest
//! handshakes of the source holding the most give way to newcomers. [`policy`] decides, without
//! sockets or clocks; this shell keeps it behind a lock, closes the connections it names, counts
//! them (`mcp_bridge_handshakes_shed_total`) and logs them once a second.
//!
//! A connection leaves its handshake as soon as its request head has arrived: what follows (a
//! health probe's answer, a refusal, a WebSocket upgrade, later requests on a kept-alive
//! Streamable HTTP connection) no longer holds a slot. Not
//! responsible for the timeouts themselves (the accept loop and hyper enforce them), nor for
//! session limits (the session registry).

mod policy;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::config::Limits;
use crate::metrics::{Metrics, ReasonLabel};
use policy::{Admission, Bounds, HandshakeId, Policy, Tally};

pub(crate) use policy::{ShedReason, Source};

/// The relay-wide table of handshakes in progress.
pub(crate) struct Gate {
    policy: Mutex<Policy<CancellationToken>>,
    metrics: Arc<Metrics>,
}

/// A connection admitted to its handshake.
pub(crate) struct Admitted {
    pub(crate) slot: Slot,
    /// A handshake that gave way to this one (already told to close): its source and age.
    pub(crate) shed: Option<(Source, Duration)>,
}

impl Gate {
    pub(crate) fn new(limits: &Limits, metrics: Arc<Metrics>) -> Arc<Gate> {
        Arc::new(Gate {
            policy: Mutex::new(Policy::new(Bounds {
                total: limits.max_handshakes,
                per_source: limits.max_handshakes_per_source,
                // A handshake that has used a quarter of its time is slow; a fresh one is only
                // unlucky, and shedding it would just churn.
                min_age: limits.header_read_timeout / 4,
            })),
            metrics,
        })
    }

    /// A connection from `source` has been accepted: its slot, or why it must be closed at once.
    /// A handshake shed to make room for it is told to close before this returns.
    pub(crate) fn admit(self: &Arc<Gate>, source: Source) -> Result<Admitted, ShedReason> {
        let token = CancellationToken::new();
        let mut policy = self.lock();
        let (id, shed) = match policy.admit(source, Instant::now(), token.clone()) {
            Admission::Admitted { id, shed } => (id, shed),
            Admission::Refused(reason) => return Err(reason),
        };
        let shed = shed.map(|s| {
            s.payload.cancel();
            (s.source, s.age)
        });
        self.metrics
            .handshakes_in_progress
            .set(i64::try_from(policy.len()).unwrap_or(i64::MAX));
        drop(policy);
        Ok(Admitted {
            slot: Slot {
                gate: self.clone(),
                id,
                shed: token,
            },
            shed,
        })
    }

    fn finish(&self, id: HandshakeId) {
        let mut policy = self.lock();
        if policy.finish(id).is_some() {
            self.metrics
                .handshakes_in_progress
                .set(i64::try_from(policy.len()).unwrap_or(i64::MAX));
        }
    }

    /// The policy never panics while holding the lock, but a poisoned lock must not stop the
    /// relay from accepting.
    fn lock(&self) -> MutexGuard<'_, Policy<CancellationToken>> {
        self.policy.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A connection's place among the handshakes in progress, freed by [`Slot::finish`] or on drop.
pub(crate) struct Slot {
    gate: Arc<Gate>,
    id: HandshakeId,
    shed: CancellationToken,
}

impl Slot {
    /// Resolves when this handshake has been shed for a newcomer: close the connection. Never
    /// resolves once [`Slot::finish`] has been called first.
    pub(crate) async fn shed(&self) {
        self.shed.cancelled().await;
    }

    /// The handshake is over (the request head has arrived): the slot is free. Idempotent.
    pub(crate) fn finish(&self) {
        self.gate.finish(self.id);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gate.finish(self.id);
    }
}

/// Counts shedding into the metric at once, and into one log line per [`ShedLog::flush`], so a
/// flood costs one line a second, not one per connection.
pub(crate) struct ShedLog {
    tally: Tally,
    metrics: Arc<Metrics>,
}

impl ShedLog {
    pub(crate) fn new(metrics: Arc<Metrics>) -> ShedLog {
        ShedLog {
            tally: Tally::default(),
            metrics,
        }
    }

    /// A connection from `source` was closed in (or before) its handshake.
    pub(crate) fn record(&mut self, source: Source, reason: ShedReason) {
        self.metrics
            .handshakes_shed
            .get_or_create(&ReasonLabel {
                reason: reason.label(),
            })
            .inc();
        self.tally.record(source, reason);
    }

    /// Logs what was shed since the last flush, `window` ago, if anything was.
    pub(crate) fn flush(&mut self, window: Duration) {
        if let Some(summary) = self.tally.take() {
            warn!(
                shed = summary.total.total(),
                "closed connections in their TLS/HTTP handshake in the last {:.1} s to keep \
                 slots for other sources (max_handshakes, max_handshakes_per_source): {summary}",
                window.as_secs_f64()
            );
        }
    }
}

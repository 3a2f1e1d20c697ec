//! What a session records: the core's events turned into metrics, audit events and log lines,
//! and the tool's stderr copied into the log. Deciding what happened is the core's business;
//! this only writes it down (peer-supplied text escaped).

use std::collections::HashMap;

use prometheus_client::metrics::histogram::Histogram;
use tokio::process::ChildStderr;
use tracing::{debug, info, warn};

use shared::framing::{Frame, LineReader};
use shared::ingress::{Peer, RefusalKind};

use super::event::{Event, Outcome};
use super::{short_id, Params};
use crate::metrics::{self, Direction, ExitLabels, MethodLabels};

/// Turns the core's events into metrics and log lines.
pub(super) struct Recorder<'a> {
    p: &'a Params,
    to_client: metrics::Flow,
    to_tool: metrics::Flow,
    /// Request latency histograms by method, looked up once per method per session.
    latency: HashMap<&'static str, Histogram>,
}

impl<'a> Recorder<'a> {
    pub(super) fn new(p: &'a Params) -> Recorder<'a> {
        Recorder {
            p,
            to_client: p.metrics.flow(&p.tool.name, Direction::ToClient),
            to_tool: p.metrics.flow(&p.tool.name, Direction::ToTool),
            latency: HashMap::new(),
        }
    }

    pub(super) fn record(&mut self, e: Event) {
        match e {
            Event::ToClient(n) => {
                self.to_client.record(n);
                self.p.info.to_client(n);
            }
            Event::ToTool(n) => {
                self.to_tool.record(n);
                self.p.info.to_tool(n);
            }
            Event::ErrorAnswer { source, code } => {
                self.p
                    .metrics
                    .call_error(&self.p.tool.name, source.label(), code)
            }
            Event::Call { call, outcome } => {
                self.p.info.call();
                self.p.info.call_answered();
                let method = metrics::method_label(&call.method);
                let metrics = &self.p.metrics;
                let tool = &self.p.tool.name;
                self.latency
                    .entry(method)
                    .or_insert_with(|| {
                        metrics
                            .request_duration
                            .get_or_create(&MethodLabels {
                                tool: tool.clone(),
                                method: method.to_owned(),
                            })
                            .clone()
                    })
                    .observe(call.started.elapsed().as_secs_f64());
                if matches!(
                    outcome,
                    Outcome::RateLimited | Outcome::Denied | Outcome::Refused
                ) {
                    metrics
                        .calls_refused
                        .get_or_create(&metrics::RefusedLabels {
                            tool: tool.clone(),
                            reason: outcome.as_str(),
                        })
                        .inc();
                }
                // One audit event per finished client request: who, which session and tool,
                // which method (and tool name for `tools/call`), how long, how it ended.
                // Never the payload; peer-chosen names are escaped and cut.
                info!(
                    target: "audit",
                    event = "call",
                    user = %self.p.user,
                    session = %short_id(&self.p.id),
                    tool = %self.p.tool.name,
                    method = ?&*call.method,
                    tool_name = ?call.tool_name.as_deref().unwrap_or(""),
                    duration_ms = call.started.elapsed().as_millis() as u64,
                    outcome = outcome.as_str(),
                    "call finished"
                );
            }
            Event::Refused { from, kind, what } => match (from, kind) {
                (_, RefusalKind::Oversize) => warn!("{what}"),
                (Peer::Client, RefusalKind::Batch) => {
                    warn!("client sent {what}; answered with errors")
                }
                (Peer::Client, _) => debug!(error = %what, "client sent an unusable message"),
                (Peer::Server, _) => warn!(
                    line = %what,
                    "tool wrote a line that is not a JSON-RPC message to stdout; skipped"
                ),
            },
            Event::Shedding { waiting, after } => warn!(
                "tool `{}` has read none of its input for {} ({} waiting): requests are \
                 answered with -32013 until it reads again",
                self.p.tool.name,
                shared::human_duration(after),
                shared::human_bytes(waiting)
            ),
            Event::Detached { why } => info!(
                why = ?why,
                window = %shared::human_duration(self.p.limits.resume_window),
                "client away; keeping the session for a resume"
            ),
            Event::Resumed { away, replay } => {
                self.p
                    .metrics
                    .resume_away
                    .get_or_create(&metrics::ToolLabel {
                        tool: self.p.tool.name.clone(),
                    })
                    .observe(away.as_secs_f64());
                info!(
                    away_ms = away.as_millis() as u64,
                    replay, "client resumed the session"
                )
            }
            Event::ResumeRefused { why } => warn!(why = ?why, "resume refused"),
            Event::ToolGone { how, clean } => {
                let label = if clean { "exited" } else { "crashed" };
                self.p
                    .metrics
                    .tool_exits
                    .get_or_create(&ExitLabels {
                        tool: self.p.tool.name.clone(),
                        how: label,
                    })
                    .inc();
                warn!("tool `{}` {how}", self.p.tool.name);
            }
        }
    }
}

/// Copies the tool's stderr into the relay's log, one event per line (escaped: a tool's
/// output never forges a log line).
pub(super) async fn log_stderr(stderr: ChildStderr) {
    let mut reader = LineReader::new(stderr, 16 * 1024);
    let mut budget = StderrBudget::default();
    while let Ok(Some(frame)) = reader.next_frame().await {
        let now = tokio::time::Instant::now();
        if let Some(skipped) = budget.take_skipped(now) {
            warn!(target: "tool", "tool stderr: {skipped} line(s) not logged (more than {STDERR_LINES_PER_SECOND} a second)");
        }
        if !budget.admit(now) {
            continue;
        }
        match frame {
            Frame::Line(line) => {
                info!(target: "tool", "tool stderr: {}", shared::log_safe_max(&String::from_utf8_lossy(&line), 16 * 1024));
            }
            Frame::Oversize { len, .. } => {
                info!(target: "tool", "tool stderr: (a line of {len} bytes, not shown)");
            }
        }
    }
    if let Some(skipped) = budget.skipped() {
        warn!(target: "tool", "tool stderr: {skipped} line(s) not logged (more than {STDERR_LINES_PER_SECOND} a second)");
    }
}

/// Most lines of one tool's stderr logged per second: a tool that floods its stderr cannot
/// flood the relay's log (what is over is counted, and said once a second).
const STDERR_LINES_PER_SECOND: u32 = 50;

/// A one-second window of stderr lines.
#[derive(Debug, Default)]
struct StderrBudget {
    window: Option<tokio::time::Instant>,
    logged: u32,
    skipped: u64,
}

impl StderrBudget {
    /// Whether this line may be logged.
    fn admit(&mut self, now: tokio::time::Instant) -> bool {
        match self.window {
            Some(w) if now.saturating_duration_since(w) < std::time::Duration::from_secs(1) => {}
            _ => {
                self.window = Some(now);
                self.logged = 0;
            }
        }
        if self.logged < STDERR_LINES_PER_SECOND {
            self.logged += 1;
            true
        } else {
            self.skipped += 1;
            false
        }
    }

    /// Lines skipped in a window that has passed (to say so once).
    fn take_skipped(&mut self, now: tokio::time::Instant) -> Option<u64> {
        let passed = self
            .window
            .is_some_and(|w| now.saturating_duration_since(w) >= std::time::Duration::from_secs(1));
        if passed {
            self.skipped()
        } else {
            None
        }
    }

    fn skipped(&mut self) -> Option<u64> {
        (self.skipped > 0).then(|| std::mem::take(&mut self.skipped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_stderr_flood_is_cut_to_its_budget_and_counted() {
        let t0 = tokio::time::Instant::now();
        let mut b = StderrBudget::default();
        let logged = (0..1000).filter(|_| b.admit(t0)).count();
        assert_eq!(logged, STDERR_LINES_PER_SECOND as usize);
        assert_eq!(
            b.take_skipped(t0 + Duration::from_millis(500)),
            None,
            "said once a second"
        );
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(b.take_skipped(t1), Some(1000 - 50));
        assert!(b.admit(t1), "a new second, a new budget");
        assert_eq!(b.skipped(), None);
    }
}

//! The relay's Prometheus metrics: what they are, and the one place that registers them.
//! Recording is a few atomic operations per event; encoding happens only when `/metrics` is
//! scraped. Metric names and meanings are documented in docs/operations.md.

mod process;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Label: a hosted tool.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ToolLabel {
    pub(crate) tool: String,
}

/// Which way a message went.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Client → tool.
    ToTool,
    /// Tool → client.
    ToClient,
}

impl Direction {
    fn label(self) -> &'static str {
        match self {
            Direction::ToTool => "to_tool",
            Direction::ToClient => "to_client",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FlowLabels {
    pub(crate) tool: String,
    pub(crate) direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct MethodLabels {
    pub(crate) tool: String,
    pub(crate) method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ExitLabels {
    pub(crate) tool: String,
    /// `ended` (the relay ended it with its session), `exited` (status 0 by itself), `crashed`.
    pub(crate) how: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    pub(crate) reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ConnectLabels {
    pub(crate) tool: String,
    /// `new`, `resume` or `reestablish` (a new session replacing one the client lost).
    pub(crate) kind: &'static str,
}

/// Labels of `mcp_bridge_jwks_fetches_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct JwksFetchLabels {
    /// `scheduled` (start and the refresh interval) or `unknown_kid`.
    pub(crate) trigger: &'static str,
    /// `ok` or `error`.
    pub(crate) outcome: &'static str,
}

/// Labels of the per-carrier session metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CarrierLabels {
    pub(crate) tool: String,
    /// `ws` (WebSocket, either subprotocol), `http` (Streamable HTTP sessions) or
    /// `http-modern` (a pooled process for session-less 2026-07-28 requests).
    pub(crate) carrier: &'static str,
}

#[derive(Clone)]
pub(crate) struct Buckets(fn() -> Histogram);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        (self.0)()
    }
}

fn latency_buckets() -> Histogram {
    // 100 µs … ~105 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 21))
}

fn away_buckets() -> Histogram {
    // 50 ms … ~410 s: a resume window (60 s) plus a heartbeat timeout (45 s) fits.
    Histogram::new(exponential_buckets(0.05, 2.0, 14))
}

fn duration_buckets() -> Histogram {
    // 1 s … ~9 h.
    Histogram::new(exponential_buckets(1.0, 2.0, 16))
}

/// Every metric of one relay.
pub(crate) struct Metrics {
    pub(crate) registry: Registry,
    pub(crate) sessions_active: Family<ToolLabel, Gauge>,
    pub(crate) sessions_total: Family<ToolLabel, Counter>,
    pub(crate) session_duration: Family<ToolLabel, Histogram, Buckets>,
    pub(crate) connects: Family<ConnectLabels, Counter>,
    pub(crate) messages: Family<FlowLabels, Counter>,
    pub(crate) bytes: Family<FlowLabels, Counter>,
    pub(crate) request_duration: Family<MethodLabels, Histogram, Buckets>,
    pub(crate) tool_starts: Family<ToolLabel, Counter>,
    pub(crate) tool_exits: Family<ExitLabels, Counter>,
    pub(crate) auth_failures: Family<ReasonLabel, Counter>,
    pub(crate) rejected: Family<ReasonLabel, Counter>,
    /// Connections closed in (or before) their TLS/HTTP handshake, by `ShedReason::label`.
    pub(crate) handshakes_shed: Family<ReasonLabel, Counter>,
    /// Connections in their TLS/HTTP handshake now.
    pub(crate) handshakes_in_progress: Gauge,
    /// Client calls the relay refused itself, by tool and reason (rate_limited, denied, …).
    pub(crate) calls_refused: Family<RefusedLabels, Counter>,
    /// Sessions held now, by carrier (the unlabelled `sessions_active` stays their sum).
    pub(crate) carrier_sessions_active: Family<CarrierLabels, Gauge>,
    /// Sessions opened, by carrier.
    pub(crate) carrier_sessions: Family<CarrierLabels, Counter>,
    /// Streamable HTTP requests for another node's session, by node and result.
    pub(crate) forwarded: Family<ForwardLabels, Counter>,
    /// Sessions ended, by where the end came from and why (`EndReason::label`).
    pub(crate) session_ends: Family<EndLabels, Counter>,
    /// How long a client was away before it resumed its session.
    pub(crate) resume_away: Family<ToolLabel, Histogram, Buckets>,
    /// Error answers to client requests, by who caused them and the JSON-RPC code.
    pub(crate) call_errors: Family<ErrorLabels, Counter>,
    /// 1 while the relay takes new sessions, 0 from the start of a drain (as `/readyz`).
    pub(crate) ready: Gauge,
    /// The relay's `max_sessions` (a config value, so alerts can compare with it).
    pub(crate) max_sessions: Gauge,
    /// Each tool's `max_sessions` (its own, or the relay's when unset).
    pub(crate) tool_max_sessions: Family<ToolLabel, Gauge>,
    /// Fetches of the identity provider's signing keys, by trigger and outcome.
    pub(crate) jwks_fetches: Family<JwksFetchLabels, Counter>,
    /// Signing keys held now.
    pub(crate) jwks_keys: Gauge,
    /// Key fetches that failed in a row (0 after a success).
    pub(crate) jwks_failures: Gauge,
    /// Config reloads, by result (`ok`, `error`).
    pub(crate) config_reloads: Family<ResultLabel, Counter>,
    /// 1, labelled with the hash of the config in force.
    pub(crate) config_info: Family<HashLabel, Gauge>,
}

/// Labels of `mcp_bridge_session_ends_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct EndLabels {
    pub(crate) tool: String,
    /// `client`, `tool` or `relay`.
    pub(crate) source: &'static str,
    /// `EndReason::label`.
    pub(crate) reason: &'static str,
}

/// Labels of `mcp_bridge_call_errors_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ErrorLabels {
    pub(crate) tool: String,
    /// `client`, `tool` or `relay`: whose doing the error was.
    pub(crate) source: &'static str,
    /// The JSON-RPC error code, see [`error_code_label`].
    pub(crate) code: String,
}

/// The `code` label: a code in JSON-RPC's reserved range (-32768 … -32000, where the spec's,
/// MCP's and the relay's own codes live) as its number, anything else (a tool's own codes) as
/// `other`, so a tool cannot grow the label set without bound.
pub(crate) fn error_code_label(code: Option<i64>) -> String {
    match code {
        Some(c @ -32768..=-32000) => c.to_string(),
        _ => "other".to_owned(),
    }
}

/// Labels of `mcp_bridge_config_reloads_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResultLabel {
    pub(crate) result: &'static str,
}

/// Labels of `mcp_bridge_config_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct HashLabel {
    pub(crate) hash: String,
}

/// Labels of `mcp_bridge_http_forwarded_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ForwardLabels {
    pub(crate) node: String,
    pub(crate) result: &'static str,
}

/// Labels of `mcp_bridge_calls_refused_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RefusedLabels {
    pub(crate) tool: String,
    pub(crate) reason: &'static str,
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let m = Metrics {
            sessions_active: Family::default(),
            sessions_total: Family::default(),
            session_duration: Family::new_with_constructor(Buckets(duration_buckets)),
            connects: Family::default(),
            messages: Family::default(),
            bytes: Family::default(),
            request_duration: Family::new_with_constructor(Buckets(latency_buckets)),
            tool_starts: Family::default(),
            tool_exits: Family::default(),
            auth_failures: Family::default(),
            rejected: Family::default(),
            handshakes_shed: Family::default(),
            handshakes_in_progress: Gauge::default(),
            calls_refused: Family::default(),
            carrier_sessions_active: Family::default(),
            carrier_sessions: Family::default(),
            forwarded: Family::default(),
            session_ends: Family::default(),
            resume_away: Family::new_with_constructor(Buckets(away_buckets)),
            call_errors: Family::default(),
            ready: Gauge::default(),
            max_sessions: Gauge::default(),
            tool_max_sessions: Family::default(),
            jwks_fetches: Family::default(),
            jwks_keys: Gauge::default(),
            jwks_failures: Gauge::default(),
            config_reloads: Family::default(),
            config_info: Family::default(),
            registry: Registry::default(),
        };
        // The relay's own metrics carry the prefix; the standard `process_*` ones do not.
        let mut root = Registry::default();
        root.register_collector(Box::new(process::ProcessCollector::new()));
        let registry = root.sub_registry_with_prefix("mcp_bridge");
        registry.register(
            "sessions_active",
            "Sessions held now (live or waiting for a resume)",
            m.sessions_active.clone(),
        );
        registry.register("sessions", "Sessions opened", m.sessions_total.clone());
        registry.register(
            "carrier_sessions_active",
            "Sessions held now, by carrier (ws, http, http-modern)",
            m.carrier_sessions_active.clone(),
        );
        registry.register(
            "carrier_sessions",
            "Sessions opened, by carrier (ws, http, http-modern)",
            m.carrier_sessions.clone(),
        );
        registry.register(
            "session_duration_seconds",
            "How long sessions lasted",
            m.session_duration.clone(),
        );
        registry.register(
            "connects",
            "Sessions started (new: a WebSocket upgrade, a Streamable HTTP initialize or a pooled \
             session-less process; reestablish) and WebSocket resumes accepted (resume), by kind",
            m.connects.clone(),
        );
        registry.register(
            "messages",
            "JSON-RPC messages forwarded",
            m.messages.clone(),
        );
        registry.register(
            "message_bytes",
            "JSON-RPC message bytes forwarded",
            m.bytes.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from a client request to the tool's answer",
            m.request_duration.clone(),
        );
        registry.register(
            "calls_refused",
            "Client calls the relay answered itself with a refusal, by reason (rate_limited: \
             over a call rate; denied: a tool the user's policy hides; refused: too many in \
             flight, or a tool that reads nothing)",
            m.calls_refused.clone(),
        );
        registry.register(
            "tool_starts",
            "Tool processes started",
            m.tool_starts.clone(),
        );
        registry.register(
            "tool_exits",
            "Tool processes ended, by how (ended, exited, crashed)",
            m.tool_exits.clone(),
        );
        registry.register(
            "auth_failures",
            "Rejected credentials, by reason",
            m.auth_failures.clone(),
        );
        registry.register(
            "config_reloads",
            "Config reloads (SIGHUP or a changed file), by result (ok, error: the file was \
             refused and the previous config stays in force)",
            m.config_reloads.clone(),
        );
        registry.register(
            "config_info",
            "1, labelled with the first 12 hex digits of the SHA-256 of the config file in force",
            m.config_info.clone(),
        );
        registry.register(
            "http_forwarded",
            "Streamable HTTP requests for a session of another relay node, passed on to it, by \
             node and result (passed_on, unreachable)",
            m.forwarded.clone(),
        );
        registry.register(
            "rejected_connections",
            "Connections refused before the upgrade, by reason",
            m.rejected.clone(),
        );
        registry.register(
            "handshakes_shed",
            "Connections closed in their TLS/HTTP handshake to bound handshakes, by reason \
             (source_limit, oldest, full)",
            m.handshakes_shed.clone(),
        );
        registry.register(
            "handshakes_in_progress",
            "Connections in their TLS/HTTP handshake now",
            m.handshakes_in_progress.clone(),
        );
        registry.register(
            "session_ends",
            "Sessions ended, by source (client, tool, relay) and reason",
            m.session_ends.clone(),
        );
        registry.register(
            "resume_away_seconds",
            "How long a client was away before it resumed its session",
            m.resume_away.clone(),
        );
        registry.register(
            "call_errors",
            "JSON-RPC error answers to client requests, by source (client, tool, relay) and code",
            m.call_errors.clone(),
        );
        registry.register(
            "ready",
            "1 while the relay takes new sessions, 0 once it drains (as /readyz)",
            m.ready.clone(),
        );
        registry.register(
            "max_sessions",
            "The relay's max_sessions setting",
            m.max_sessions.clone(),
        );
        registry.register(
            "tool_max_sessions",
            "Each tool's max_sessions setting (the relay's when the tool sets none)",
            m.tool_max_sessions.clone(),
        );
        registry.register(
            "jwks_fetches",
            "Fetches of the identity provider's signing keys, by trigger (scheduled, \
             unknown_kid) and outcome (ok, error)",
            m.jwks_fetches.clone(),
        );
        registry.register(
            "jwks_keys",
            "Signing keys of the identity provider held now",
            m.jwks_keys.clone(),
        );
        registry.register(
            "jwks_fetch_failures_in_a_row",
            "Key fetches that failed in a row (0 after a success; the last good keys stay in use)",
            m.jwks_failures.clone(),
        );
        Metrics {
            registry: root,
            ..m
        }
    }

    /// The Prometheus text exposition.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// A config reload: `ok` or `error`.
    pub(crate) fn config_reload(&self, result: &'static str) {
        self.config_reloads
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// The config with hash `hash` is in force (in place of `previous`).
    pub(crate) fn config_loaded(&self, previous: Option<&str>, hash: &str) {
        if let Some(previous) = previous.filter(|p| *p != hash) {
            self.config_info.remove(&HashLabel {
                hash: previous.to_owned(),
            });
        }
        self.config_info
            .get_or_create(&HashLabel {
                hash: hash.to_owned(),
            })
            .set(1);
    }

    /// A request for another node's session: `passed_on`, or `unreachable`.
    pub(crate) fn forwarded(&self, node: &str, result: &'static str) {
        self.forwarded
            .get_or_create(&ForwardLabels {
                node: node.to_owned(),
                result,
            })
            .inc();
    }

    /// Publishes the session limits of the config, for alerts that compare with them, and
    /// readiness (the relay is about to serve).
    pub(crate) fn set_limits(
        &self,
        limits: &crate::config::Limits,
        tools: &[crate::config::ToolConfig],
    ) {
        self.ready.set(1);
        self.max_sessions.set(gauge_value(limits.max_sessions));
        self.set_tool_limits(limits, tools, &[]);
    }

    /// Each tool's `max_sessions` for `tools` (after a reload: the tools now in force), and
    /// none any more for the tools of `before` that are gone.
    pub(crate) fn set_tool_limits(
        &self,
        limits: &crate::config::Limits,
        tools: &[crate::config::ToolConfig],
        before: &[&str],
    ) {
        for gone in before
            .iter()
            .filter(|b| !tools.iter().any(|t| t.name == **b))
        {
            self.tool_max_sessions.remove(&ToolLabel {
                tool: (*gone).to_owned(),
            });
        }
        for t in tools {
            self.tool_max_sessions
                .get_or_create(&ToolLabel {
                    tool: t.name.clone(),
                })
                .set(gauge_value(t.max_sessions.unwrap_or(limits.max_sessions)));
        }
    }

    /// Counts an error answer to a client request.
    pub(crate) fn call_error(&self, tool: &str, source: &'static str, code: Option<i64>) {
        self.call_errors
            .get_or_create(&ErrorLabels {
                tool: tool.to_owned(),
                source,
                code: error_code_label(code),
            })
            .inc();
    }

    pub(crate) fn reject(&self, reason: &'static str) {
        self.rejected.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Counters for one tool and direction, to keep in a session (no lookup per message).
    pub(crate) fn flow(&self, tool: &str, direction: Direction) -> Flow {
        let labels = FlowLabels {
            tool: tool.to_owned(),
            direction: direction.label(),
        };
        Flow {
            messages: self.messages.get_or_create(&labels).clone(),
            bytes: self.bytes.get_or_create(&labels).clone(),
        }
    }
}

/// The method label: MCP's own methods by name, anything else as `other`, so a client cannot
/// grow the label set without bound.
/// A count as a gauge value.
fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(crate) fn method_label(method: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "initialize",
        "ping",
        "server/discover",
        "tools/list",
        "tools/call",
        "resources/list",
        "resources/read",
        "resources/templates/list",
        "resources/subscribe",
        "resources/unsubscribe",
        "prompts/list",
        "prompts/get",
        "completion/complete",
        "logging/setLevel",
        "tasks/get",
        "tasks/list",
        "tasks/result",
        "tasks/cancel",
    ];
    KNOWN
        .iter()
        .find(|k| **k == method)
        .copied()
        .unwrap_or("other")
}

/// A session's handle on the message and byte counters of one direction.
#[derive(Clone)]
pub(crate) struct Flow {
    messages: Counter,
    bytes: Counter,
}

impl Flow {
    pub(crate) fn record(&self, len: usize) {
        self.messages.inc();
        self.bytes.inc_by(len as u64);
    }
}

#[cfg(test)]
mod tests;

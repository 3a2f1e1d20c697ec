//! Starting a new relay session, whatever carries it (a WebSocket upgrade or a Streamable HTTP
//! `initialize`): drain, the session limits (checked and taken in one step), the tool's
//! confinement and its process, the audit line and the metrics. Each refusal is an HTTP status
//! with a one-line reason. Running the session is the session driver's job.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Response, StatusCode};
use tracing::{error, info, info_span, warn, Span};

use shared::endpoint::Framing;

use super::{text, Body};
use crate::auth::Principal;
use crate::child::ToolProcess;
use crate::config::ToolConfig;
use crate::metrics::{ConnectLabels, ToolLabel};
use crate::session::{self, Door};
use crate::Relay;

/// A session admitted and its tool started: what its driver task needs.
pub(super) struct Started {
    pub(super) params: session::Params,
    pub(super) tool: ToolProcess,
    /// The session's span (`session.id`, user, tool, peer), for its task.
    pub(super) span: Span,
}

/// How a session came to be, for the `connects` metric.
pub(super) struct Opening {
    pub(super) framing: Framing,
    /// `new` or `reestablish`.
    pub(super) kind: &'static str,
    /// `ws`, `http` or `http-modern` (the carrier label of metrics and the admin API).
    pub(super) carrier: &'static str,
}

/// Admits a new session of `tool` for `principal` and starts its tool. `door` is how later
/// requests reach the session (kept in the registry).
pub(super) fn start(
    relay: &Relay,
    tool: &Arc<ToolConfig>,
    principal: Principal,
    peer: SocketAddr,
    door: Door,
    opening: Opening,
) -> Result<Started, Box<Response<Body>>> {
    if relay.shutdown.drain.is_cancelled() {
        relay.metrics.reject("draining");
        return Err(Box::new(text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the relay is shutting down; connect to another node",
        )));
    }
    // Check the limits and take the slot in one step, so a burst cannot overshoot them.
    let session_id = crate::new_session_id(relay.node_id.as_deref());
    let limits = session::SessionLimits {
        total: relay.limits.max_sessions,
        per_user: relay.limits.max_sessions_per_user,
        per_tool: tool.max_sessions,
    };
    let wire = match (opening.carrier, opening.framing) {
        ("http" | "http-modern", _) => "http",
        (_, Framing::V1) => "v1",
        (_, Framing::Plain) => "mcp",
    };
    let info = Arc::new(
        session::SessionInfo::new(
            &session_id,
            &principal.user,
            &tool.name,
            opening.carrier,
            wire,
        )
        .with_credential(principal.credential),
    );
    if let Err(over) = relay.registry.try_insert(&info, door, limits) {
        let (status, reason, text_) = match over {
            session::Over::User(max) => (
                StatusCode::TOO_MANY_REQUESTS,
                "user_limit",
                format!(
                    "user `{}` holds the maximum of {max} sessions; close some and try again",
                    principal.user
                ),
            ),
            session::Over::Relay(max) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "relay_limit",
                format!("the relay holds its maximum of {max} sessions; try again later"),
            ),
            session::Over::Tool(max) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "tool_limit",
                format!(
                    "tool `{}` has its maximum of {max} sessions; try again later",
                    tool.name
                ),
            ),
        };
        warn!(target: "audit", event = "refused", reason, %peer, user = %principal.user, tool = %tool.name, "session limit reached");
        relay.metrics.reject(reason);
        return Err(Box::new(text(status, &text_)));
    }

    let span = info_span!("session", id = %session::short_id(&session_id), user = %principal.user, tool = %tool.name, %peer);
    let spawned = relay
        .host
        .prepare(tool, &principal.user)
        .map_err(|e| (e.is_users(), e.to_string()))
        .and_then(|mut prepared| {
            // Who the user is reaches the tool; the credential never does.
            prepared.env.extend(principal.env());
            ToolProcess::spawn(tool, prepared).map_err(|e| (false, e.to_string()))
        });
    let tool_proc = match spawned {
        Ok(p) => p,
        Err((users, e)) => {
            relay.registry.end_quietly(&session_id);
            return Err(Box::new(if users {
                warn!(target: "audit", parent: &span, event = "refused", reason = "tool_setup", "{e}");
                relay.metrics.reject("tool_setup");
                text(StatusCode::FORBIDDEN, &e)
            } else {
                error!(parent: &span, "{e}");
                relay.metrics.reject("spawn_failed");
                text(
                    StatusCode::BAD_GATEWAY,
                    &format!("{e}; ask the relay's operator to check its config"),
                )
            }));
        }
    };
    info.set_pid(tool_proc.pid());
    info!(target: "audit", parent: &span, event = "session_started", pid = tool_proc.pid(), wire = ?opening.framing, carrier = opening.carrier, "session started");
    let tool_label = ToolLabel {
        tool: tool.name.clone(),
    };
    relay.metrics.tool_starts.get_or_create(&tool_label).inc();
    relay
        .metrics
        .connects
        .get_or_create(&ConnectLabels {
            tool: tool.name.clone(),
            kind: opening.kind,
        })
        .inc();
    let access = crate::policy::Access {
        user: principal.user.clone(),
        tool: tool.name.clone(),
        view: tool.policy.view(&principal.user, &principal.groups),
        limiter: (relay.limits.call_rate.is_some() || tool.call_rate.is_some())
            .then(|| relay.limiter.clone()),
        per_user: relay.limits.call_rate,
        per_tool: tool.call_rate,
    };
    let params = session::Params {
        id: session_id,
        user: principal.user,
        tool: tool.clone(),
        framing: opening.framing,
        limits: relay.limits.clone(),
        shutdown: relay.shutdown.clone(),
        registry: relay.registry.clone(),
        metrics: relay.metrics.clone(),
        access,
        info,
    };
    Ok(Started {
        params,
        tool: tool_proc,
        span,
    })
}

//! HTTP routing and the WebSocket upgrade: `/mcp/<tool>`, `/healthz`, and refusals.
//!
//! Every refusal happens here, before the upgrade, with a status code and a one-line reason in
//! the body, so a client can tell its user what went wrong. Forwarding is the session's job.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{
    AUTHORIZATION, CONNECTION, CONTENT_TYPE, ORIGIN, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION, UPGRADE, WWW_AUTHENTICATE,
};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use tracing::{error, info, info_span, warn, Instrument};

use std::time::Duration;

use shared::tunnel::{
    self, Control, HEADER_LAST_SEQ, HEADER_REESTABLISH, HEADER_SESSION, SUBPROTOCOL_V1,
};
use shared::SUBPROTOCOL_MCP;
use tokio::sync::mpsc;

use crate::auth::{AuthError, Principal};
use crate::child::ToolProcess;
use crate::config::ToolConfig;
use crate::metrics::{ConnectLabels, ReasonLabel, ToolLabel};
use crate::session::{self, Attach, ResumeRefusal};
use crate::Relay;
use shared::carrier::WsCarrier;
use shared::endpoint::{Framing, Transmit};

pub(crate) type Body = Full<Bytes>;

/// Serves one HTTP request.
pub(crate) async fn handle(
    req: Request<Incoming>,
    relay: Arc<Relay>,
    peer: SocketAddr,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path();
    let response = if path == "/healthz" {
        text(StatusCode::OK, "ok")
    } else if path == "/readyz" {
        readyz(&relay)
    } else if path == "/metrics" && relay.metrics_on_main {
        metrics(&relay)
    } else if let Some(name) = path.strip_prefix("/mcp/") {
        match admit(&req, name, &relay, peer) {
            Ok((tool, principal)) => upgrade(req, tool, relay.clone(), peer, principal),
            Err(resp) => *resp,
        }
    } else {
        text(
            StatusCode::NOT_FOUND,
            "not found: MCP sessions are at /mcp/<tool>; health at /healthz and /readyz",
        )
    };
    Ok(response)
}

/// 200 while the relay takes new sessions; 503 while it drains (so load balancers stop
/// sending new clients).
pub(crate) fn readyz(relay: &Relay) -> Response<Body> {
    if relay.shutdown.drain.is_cancelled() {
        text(StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else {
        text(StatusCode::OK, "ready")
    }
}

/// The Prometheus text exposition.
pub(crate) fn metrics(relay: &Relay) -> Response<Body> {
    response(
        StatusCode::OK,
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        relay.metrics.encode(),
    )
}

/// Decides whether this caller may open (or resume) a session of tool `name`: Origin, then
/// authentication, then the tool and the grant. Every refusal is logged as an audit event
/// (with the reason and the remote address, never the credentials).
fn admit(
    req: &Request<Incoming>,
    name: &str,
    relay: &Relay,
    peer: SocketAddr,
) -> Result<(Arc<ToolConfig>, Principal), Box<Response<Body>>> {
    if let Some(origin) = req.headers().get(ORIGIN) {
        let allowed = origin
            .to_str()
            .is_ok_and(|o| relay.allowed_origins.iter().any(|a| a == o));
        if !allowed {
            let shown = String::from_utf8_lossy(origin.as_bytes()).into_owned();
            warn!(target: "audit", event = "refused", reason = "origin", origin = %shown, %peer, "origin not allowed");
            relay.metrics.reject("origin");
            return Err(Box::new(text(
                StatusCode::FORBIDDEN,
                &format!("origin `{shown}` is not allowed; the relay's operator can add it to [security] allowed_origins"),
            )));
        }
    }
    let principal = match relay
        .auth
        .authenticate(req.headers().get(AUTHORIZATION).map(|v| v.as_bytes()))
    {
        Ok(p) => p,
        Err(e) => {
            warn!(target: "audit", event = "auth_failure", reason = e.code(), %peer, tool = %name, "authentication failed");
            relay
                .metrics
                .auth_failures
                .get_or_create(&ReasonLabel { reason: e.code() })
                .inc();
            relay.metrics.reject("unauthenticated");
            let mut resp = text(StatusCode::UNAUTHORIZED, &e.to_string());
            // RFC 6750 §3.1: no error code when no credentials were sent at all.
            let challenge = if e == AuthError::Missing {
                "Bearer realm=\"mcp-bridge\"".to_owned()
            } else {
                format!(
                    "Bearer realm=\"mcp-bridge\", error=\"invalid_token\", error_description=\"{}\"",
                    e.code()
                )
            };
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                resp.headers_mut().insert(WWW_AUTHENTICATE, v);
            }
            return Err(Box::new(resp));
        }
    };
    let Some(tool) = relay.tools.iter().find(|t| t.name == name) else {
        let hosted: Vec<&str> = relay
            .tools
            .iter()
            .filter(|t| principal.grant.allows(&t.name))
            .map(|t| t.name.as_str())
            .collect();
        info!(target: "audit", event = "refused", reason = "unknown_tool", %peer, tool = ?name, user = %principal.user, "unknown tool");
        relay.metrics.reject("unknown_tool");
        return Err(Box::new(text(
            StatusCode::NOT_FOUND,
            &format!(
                "unknown tool `{name}`; this relay hosts: {}",
                hosted.join(", ")
            ),
        )));
    };
    if !principal.grant.allows(&tool.name) {
        warn!(target: "audit", event = "refused", reason = "not_granted", user = %principal.user, tool = %name, %peer, "tool not granted");
        relay.metrics.reject("not_granted");
        return Err(Box::new(text(
            StatusCode::FORBIDDEN,
            &format!("user `{}` is not granted tool `{name}`", principal.user),
        )));
    }
    Ok((tool.clone(), principal))
}

/// Checks the upgrade request, then either resumes a session or starts a tool for a new one,
/// answers 101 and hands the socket over. Every refusal is an HTTP status with a reason.
fn upgrade(
    mut req: Request<Incoming>,
    tool: Arc<ToolConfig>,
    relay: Arc<Relay>,
    peer: SocketAddr,
    principal: Principal,
) -> Response<Body> {
    if req.method() != Method::GET {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "use GET with a WebSocket upgrade",
        );
    }
    let headers = req.headers();
    let is_ws = header_has_token(headers.get(UPGRADE), "websocket")
        && header_has_token(headers.get(CONNECTION), "upgrade");
    let key = headers.get(SEC_WEBSOCKET_KEY).cloned();
    let (true, Some(key)) = (is_ws, key) else {
        return text(
            StatusCode::UPGRADE_REQUIRED,
            "this endpoint speaks MCP over WebSocket: connect with bridge-client or a WebSocket MCP client",
        );
    };
    if headers.get(SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
        let mut resp = text(
            StatusCode::UPGRADE_REQUIRED,
            "unsupported WebSocket version: use 13",
        );
        resp.headers_mut()
            .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return resp;
    }
    let offered = headers.get(SEC_WEBSOCKET_PROTOCOL);
    let (wire, protocol) = match offered {
        None => (Framing::Plain, None),
        Some(v) if header_has_token(Some(v), SUBPROTOCOL_V1) => (Framing::V1, Some(SUBPROTOCOL_V1)),
        Some(v) if header_has_token(Some(v), SUBPROTOCOL_MCP) => (Framing::Plain, Some(SUBPROTOCOL_MCP)),
        Some(v) => {
            return text(
                StatusCode::BAD_REQUEST,
                &format!(
                    "unsupported WebSocket subprotocol `{}`: this relay speaks `{SUBPROTOCOL_V1}` and `{SUBPROTOCOL_MCP}`",
                    String::from_utf8_lossy(v.as_bytes())
                ),
            )
        }
    };
    let resume = match (wire, headers.get(HEADER_SESSION)) {
        (Framing::V1, Some(id)) => {
            let id = String::from_utf8_lossy(id.as_bytes()).into_owned();
            let last_seq = headers
                .get(HEADER_LAST_SEQ)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let Some(last_seq) = last_seq else {
                return text(
                    StatusCode::BAD_REQUEST,
                    &format!("a resume needs the `{HEADER_LAST_SEQ}` header (a number)"),
                );
            };
            Some((id, last_seq))
        }
        _ => None,
    };

    let ws_config = WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(ws_hard_limit(tool.max_message_size)))
        .max_frame_size(Some(ws_hard_limit(tool.max_message_size)));
    let heartbeat = relay.limits.heartbeat;
    let on_upgrade = hyper::upgrade::on(&mut req);

    if let Some((id, last_seq)) = resume {
        let attach = match relay
            .registry
            .attach_handle(&id, &tool.name, &principal.user)
        {
            Ok(attach) => attach,
            Err(refusal) => {
                let (status, reason) = match refusal {
                    ResumeRefusal::Ended(why) => {
                        (StatusCode::GONE, format!("session ended: {why}"))
                    }
                    ResumeRefusal::Unknown | ResumeRefusal::NotYours => (
                        StatusCode::NOT_FOUND,
                        "unknown session: the relay may have restarted, or the session lives on another node"
                            .to_owned(),
                    ),
                };
                warn!(target: "audit", event = "refused", reason = "resume_refused", %peer, tool = %tool.name, user = %principal.user, detail = ?reason, "resume refused");
                relay.metrics.reject("resume_unknown");
                return text(status, &reason);
            }
        };
        let span = info_span!("session", id = %short(&id), user = %principal.user, tool = %tool.name, %peer);
        relay
            .metrics
            .connects
            .get_or_create(&ConnectLabels {
                tool: tool.name.clone(),
                kind: "resume",
            })
            .inc();
        let registry = relay.registry.clone();
        relay.tracker.spawn(
            async move {
                let Ok(upgraded) = on_upgrade.await else {
                    return;
                };
                let carrier = open_conn(upgraded, ws_config, heartbeat).await;
                if let Err(e) = attach.send(Attach { carrier, last_seq }).await {
                    // The session ended between the check and now: say why on this connection.
                    let reason = registry
                        .ended_reason(&id)
                        .unwrap_or_else(|| "session ended".to_owned());
                    let end = tunnel::encode_control(&Control::End { reason });
                    e.0.carrier
                        .close(vec![Transmit::Binary(end)], None, Duration::from_secs(1))
                        .await;
                }
            }
            .instrument(span),
        );
        return switching(&key, protocol);
    }

    if relay.shutdown.drain.is_cancelled() {
        relay.metrics.reject("draining");
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the relay is shutting down; connect to another node",
        );
    }
    // Check the limits and take the slot in one step, so a burst cannot overshoot them.
    let session_id = crate::new_session_id();
    let (attach_tx, attach_rx) = mpsc::channel(4);
    let limits = session::SessionLimits {
        total: relay.limits.max_sessions,
        per_user: relay.limits.max_sessions_per_user,
        per_tool: tool.max_sessions,
    };
    if let Err(over) =
        relay
            .registry
            .try_insert(&session_id, &tool.name, &principal.user, attach_tx, limits)
    {
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
        return text(status, &text_);
    }

    let span = info_span!("session", id = %short(&session_id), user = %principal.user, tool = %tool.name, %peer);
    let prepared = match relay.host.prepare(&tool, &principal.user) {
        Ok(p) => p,
        Err(e) => {
            relay.registry.end_quietly(&session_id);
            return if e.is_users() {
                warn!(target: "audit", parent: &span, event = "refused", reason = "tool_setup", "{e}");
                relay.metrics.reject("tool_setup");
                text(StatusCode::FORBIDDEN, &e.to_string())
            } else {
                error!(parent: &span, "{e}");
                relay.metrics.reject("spawn_failed");
                text(
                    StatusCode::BAD_GATEWAY,
                    &format!("{e}; ask the relay's operator to check its config"),
                )
            };
        }
    };
    let tool_proc = match ToolProcess::spawn(&tool, prepared) {
        Ok(p) => p,
        Err(e) => {
            error!(parent: &span, "{e}");
            relay.registry.end_quietly(&session_id);
            relay.metrics.reject("spawn_failed");
            return text(
                StatusCode::BAD_GATEWAY,
                &format!("{e}; ask the relay's operator to check its config"),
            );
        }
    };
    info!(target: "audit", parent: &span, event = "session_started", pid = tool_proc.pid(), ?wire, "session started");
    let tool_label = ToolLabel {
        tool: tool.name.clone(),
    };
    relay.metrics.tool_starts.get_or_create(&tool_label).inc();
    let kind = if req.headers().contains_key(HEADER_REESTABLISH) {
        "reestablish"
    } else {
        "new"
    };
    relay
        .metrics
        .connects
        .get_or_create(&ConnectLabels {
            tool: tool.name.clone(),
            kind,
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
        tool,
        framing: wire,
        limits: relay.limits.clone(),
        shutdown: relay.shutdown.clone(),
        registry: relay.registry.clone(),
        metrics: relay.metrics.clone(),
        access,
    };
    let kill_grace = relay.limits.kill_grace;
    relay.tracker.spawn(
        async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let carrier = open_conn(upgraded, ws_config, heartbeat).await;
                    session::run(params, tool_proc, carrier, attach_rx).await;
                }
                Err(e) => {
                    warn!("WebSocket upgrade failed: {e}");
                    params.registry.end_quietly(&params.id);
                    let mut tool_proc = tool_proc;
                    drop(tool_proc.stdin.take());
                    let pgid = tool_proc.pgid;
                    let _ = crate::child::terminate(&mut tool_proc.child, pgid, kill_grace).await;
                }
            }
        }
        .instrument(span),
    );
    switching(&key, protocol)
}

use crate::session::short_id as short;

/// The upgraded connection as a WebSocket carrier for the session's driver.
async fn open_conn(
    upgraded: hyper::upgrade::Upgraded,
    config: WebSocketConfig,
    heartbeat: shared::carrier::Heartbeat,
) -> WsCarrier<session::Socket> {
    let ws =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
    WsCarrier::new(ws, heartbeat)
}

/// The `101 Switching Protocols` answer.
fn switching(key: &HeaderValue, protocol: Option<&'static str>) -> Response<Body> {
    let mut resp = Response::new(Body::default());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert(SEC_WEBSOCKET_ACCEPT, accept);
    }
    if let Some(p) = protocol {
        h.insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(p));
    }
    resp
}

/// The WebSocket layer's own cap. Messages between the tool's limit and this cap are answered
/// with a JSON-RPC error by the session (which goes on); past this cap the connection is closed,
/// since only a misbehaving peer sends that much.
fn ws_hard_limit(tool_limit: usize) -> usize {
    // At least bridge-client's default limit, so a default client's message is answered with a
    // JSON-RPC error rather than a broken connection.
    tool_limit
        .saturating_mul(4)
        .max(shared::DEFAULT_MAX_MESSAGE_SIZE)
        .saturating_add(64 * 1024)
}

/// Whether a comma-separated header value contains `token` (case-insensitive).
fn header_has_token(value: Option<&HeaderValue>, token: &str) -> bool {
    value
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// A short plain-text response: the body is the reason, on one line.
pub(crate) fn text(status: StatusCode, body: &str) -> Response<Body> {
    response(status, "text/plain; charset=utf-8", format!("{body}\n"))
}

/// Every non-upgrade answer: one request per connection (`Connection: close`), so a
/// connection never holds its handshake slot past its one answer.
fn response(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut resp = Response::new(Body::new(Bytes::from(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CONNECTION, HeaderValue::from_static("close"));
    resp
}

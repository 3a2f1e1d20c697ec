//! The WebSocket side of `/mcp/<tool>`: the upgrade request checked, a session resumed or
//! started, `101 Switching Protocols`, and the upgraded socket handed to the session as its
//! carrier. Admission (Origin, auth, grant) happened before; refusals are HTTP statuses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use tracing::{info_span, warn, Instrument};

use shared::carrier::WsCarrier;
use shared::endpoint::{Framing, Transmit};
use shared::tunnel::{
    self, Control, HEADER_LAST_SEQ, HEADER_REESTABLISH, HEADER_SESSION, SUBPROTOCOL_V1,
};
use shared::SUBPROTOCOL_MCP;

use super::start::{start, Opening, Started};
use super::{header_has_token, text, Body};
use crate::auth::Principal;
use crate::config::ToolConfig;
use crate::metrics::ConnectLabels;
use crate::session::{self, Attach, Carrier, Door, ResumeRefusal};
use crate::Relay;

/// Checks the upgrade request, then either resumes a session or starts a tool for a new one,
/// answers 101 and hands the socket over. Every refusal is an HTTP status with a reason.
pub(super) fn upgrade(
    mut req: Request<Incoming>,
    tool: Arc<ToolConfig>,
    relay: Arc<Relay>,
    peer: SocketAddr,
    principal: Principal,
) -> Response<Body> {
    if req.method() != Method::GET {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "use GET with a WebSocket upgrade, or POST for MCP Streamable HTTP",
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

    let (attach_tx, attach_rx) = mpsc::channel(4);
    let kind = if req.headers().contains_key(HEADER_REESTABLISH) {
        "reestablish"
    } else {
        "new"
    };
    let opening = Opening {
        framing: wire,
        kind,
        carrier: "ws",
    };
    let started = match start(&relay, &tool, principal, peer, Door::Ws(attach_tx), opening) {
        Ok(s) => s,
        Err(resp) => return *resp,
    };
    let Started {
        params,
        tool: tool_proc,
        span,
    } = started;
    let kill_grace = relay.limits.kill_grace;
    relay.tracker.spawn(
        async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let carrier = open_conn(upgraded, ws_config, heartbeat).await;
                    session::run(params, tool_proc, Carrier::Ws(carrier), Some(attach_rx)).await;
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
    let mut resp = Response::new(super::empty());
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

//! HTTP routing and the WebSocket upgrade: `/mcp/<tool>`, `/healthz`, and refusals.
//!
//! Every refusal happens here, before the upgrade, with a status code and a one-line reason in
//! the body, so a client can tell its user what went wrong. Forwarding is the session's job.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{
    CONNECTION, CONTENT_TYPE, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use tracing::{error, info, info_span, warn, Instrument};

use shared::SUBPROTOCOL_MCP;

use crate::child::ToolProcess;
use crate::config::ToolConfig;
use crate::Relay;

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
    } else if let Some(name) = path.strip_prefix("/mcp/") {
        match relay.tools.iter().find(|t| t.name == name) {
            Some(tool) => upgrade(req, tool.clone(), relay.clone(), peer),
            None => {
                let hosted: Vec<&str> = relay.tools.iter().map(|t| t.name.as_str()).collect();
                info!(%peer, tool = %name, "refused: unknown tool");
                text(
                    StatusCode::NOT_FOUND,
                    &format!(
                        "unknown tool `{name}`; this relay hosts: {}",
                        hosted.join(", ")
                    ),
                )
            }
        }
    } else {
        text(
            StatusCode::NOT_FOUND,
            "not found: MCP sessions are at /mcp/<tool>, health at /healthz",
        )
    };
    Ok(response)
}

/// Checks the upgrade request, starts the tool, answers 101 and hands the socket to a session.
fn upgrade(
    mut req: Request<Incoming>,
    tool: Arc<ToolConfig>,
    relay: Arc<Relay>,
    peer: SocketAddr,
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
    let protocol = match offered {
        None => None,
        Some(v) if header_has_token(Some(v), SUBPROTOCOL_MCP) => Some(SUBPROTOCOL_MCP),
        Some(v) => {
            return text(
                StatusCode::BAD_REQUEST,
                &format!(
                    "unsupported WebSocket subprotocol `{}`: this relay speaks `{SUBPROTOCOL_MCP}`",
                    String::from_utf8_lossy(v.as_bytes())
                ),
            )
        }
    };

    let session_id = crate::new_session_id();
    let span = info_span!("session", id = %session_id, tool = %tool.name, %peer);
    let tool_proc = match ToolProcess::spawn(&tool) {
        Ok(p) => p,
        Err(e) => {
            error!(parent: &span, "{e}");
            return text(
                StatusCode::BAD_GATEWAY,
                &format!("{e}; ask the relay's operator to check its config"),
            );
        }
    };
    info!(parent: &span, pid = tool_proc.pid(), "session started");

    let on_upgrade = hyper::upgrade::on(&mut req);
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(ws_hard_limit(tool.max_message_size)))
        .max_frame_size(Some(ws_hard_limit(tool.max_message_size)));
    let kill_grace = relay.limits.kill_grace;
    let shutdown = relay.shutdown.child_token();
    relay.tracker.spawn(
        async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let ws = WebSocketStream::from_raw_socket(
                        TokioIo::new(upgraded),
                        Role::Server,
                        Some(ws_config),
                    )
                    .await;
                    crate::session::run(ws, tool_proc, tool, kill_grace, shutdown).await;
                }
                Err(e) => {
                    warn!("WebSocket upgrade failed: {e}");
                    let _ =
                        crate::child::terminate(tool_proc.child, tool_proc.stdin, kill_grace).await;
                }
            }
        }
        .instrument(span),
    );

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
    tool_limit.saturating_mul(4).saturating_add(64 * 1024)
}

/// Whether a comma-separated header value contains `token` (case-insensitive).
fn header_has_token(value: Option<&HeaderValue>, token: &str) -> bool {
    value
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// A short plain-text response: the body is the reason, on one line.
pub(crate) fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut resp = Response::new(Body::new(Bytes::from(format!("{body}\n"))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

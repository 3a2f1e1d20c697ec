//! HTTP routing and admission: `/mcp/<tool>` (a WebSocket upgrade in [`ws`], Streamable HTTP
//! in [`streamable`]), `/healthz`, `/readyz`, `/metrics`, and refusals; the session admin API
//! ([`admin`]) for the private metrics listener.
//!
//! Every refusal happens before a session sees the request, with a status code and a one-line
//! reason in the body, so a client can tell its user what went wrong. Forwarding is the
//! session's job.

pub(crate) mod admin;
mod forward;
mod metadata;
mod modern;
mod origin;
mod sse;
mod start;
mod streamable;
mod ws;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{
    ACCEPT, AUTHORIZATION, CONNECTION, CONTENT_TYPE, HOST, ORIGIN, UPGRADE, WWW_AUTHENTICATE,
};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use tracing::{info, warn};

use crate::auth::resource::{self, ChallengeError};
use crate::auth::{AuthConfig, AuthError, CertIdentity, KeySource, Principal};
use crate::config::ToolConfig;
use crate::live::Live;
use crate::metrics::ReasonLabel;
use crate::Relay;

pub(crate) use sse::StreamBody;

/// The Streamable HTTP header naming a session.
const SESSION_ID: &str = "mcp-session-id";
/// The Streamable HTTP header with the protocol version.
const PROTOCOL_VERSION: &str = "mcp-protocol-version";

/// Every answer's body: a whole one, an SSE stream, or another node's answer passed back.
pub(crate) type Body = Either<Full<Bytes>, Either<StreamBody, Incoming>>;

/// Serves one HTTP request.
pub(crate) async fn handle(
    req: Request<Incoming>,
    relay: Arc<Relay>,
    peer: SocketAddr,
    cert: Option<Arc<CertIdentity>>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path();
    let response = if path == "/healthz" {
        text(StatusCode::OK, "ok")
    } else if path == "/readyz" {
        readyz(&relay)
    } else if path == "/metrics" && relay.metrics_on_main {
        metrics(&relay)
    } else if let Some(rest) = path.strip_prefix(resource::METADATA_PATH) {
        metadata::serve(&req, rest, &relay)
    } else if let Some(name) = path.strip_prefix("/mcp/") {
        match admit(&req, name, &relay, peer, cert.as_deref()).await {
            Ok((tool, principal)) if modern::is_modern(&req) => {
                modern::serve(req, tool, relay.clone(), peer, principal).await
            }
            Ok((tool, principal)) if is_streamable(&req) => {
                match forward::elsewhere(&req, &relay) {
                    Some(target) => forward::forward(req, &target, &relay, peer).await,
                    None => streamable::serve(req, tool, relay.clone(), peer, principal).await,
                }
            }
            Ok((tool, principal)) => ws::upgrade(req, tool, relay.clone(), peer, principal),
            Err(resp) => *resp,
        }
    } else {
        text(
            StatusCode::NOT_FOUND,
            "not found: MCP sessions are at /mcp/<tool>; health at /healthz and /readyz",
        )
    };
    Ok(closing_if_draining(response, &relay))
}

/// While the relay drains, a kept-alive connection ends after its answer, so the client's next
/// request opens a new connection (to another relay, behind a load balancer).
fn closing_if_draining(mut resp: Response<Body>, relay: &Relay) -> Response<Body> {
    if relay.shutdown.drain.is_cancelled() && resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        resp.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    resp
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

/// Decides whether this caller may open (or resume) a session of tool `name`: Origin (see
/// [`origin`]), then authentication, then the tool and the grant. Every refusal is logged as an
/// audit event (with the reason and the remote address, never the credentials).
async fn admit(
    req: &Request<Incoming>,
    name: &str,
    relay: &Relay,
    peer: SocketAddr,
    cert: Option<&CertIdentity>,
) -> Result<(Arc<ToolConfig>, Principal), Box<Response<Body>>> {
    // The config in force for this request, whatever a reload does meanwhile.
    let live = relay.live();
    if let Some(origin) = req.headers().get(ORIGIN) {
        let host = req
            .headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()));
        let allowed = origin
            .to_str()
            .is_ok_and(|o| origin::allowed(o, host, &live.allowed_origins));
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
    let principal = match authenticate(req, name, &live, cert).await {
        Ok(p) => p,
        Err(e) => {
            warn!(target: "audit", event = "auth_failure", reason = e.code(), %peer, tool = %name, "authentication failed");
            relay
                .metrics
                .auth_failures
                .get_or_create(&ReasonLabel { reason: e.code() })
                .inc();
            relay.metrics.reject("unauthenticated");
            return Err(Box::new(unauthorized(&e, name, &live)));
        }
    };
    let Some(tool) = live.tool(name) else {
        let hosted: Vec<&str> = live
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
        let scopes = live
            .resource
            .as_ref()
            .map(|r| r.scopes(Some(name)).join(" "))
            .unwrap_or_default();
        let Some(r) = live.resource.as_ref().filter(|_| !scopes.is_empty()) else {
            return Err(Box::new(text(
                StatusCode::FORBIDDEN,
                &format!("user `{}` is not granted tool `{name}`", principal.user),
            )));
        };
        // RFC 6750 §3.1: the token lacks a scope that grants this tool; say which would.
        let mut resp = text(
            StatusCode::FORBIDDEN,
            &format!(
                "insufficient_scope: user `{}` holds no scope that grants tool `{name}`; sign in \
                 asking for one of: {scopes}",
                principal.user
            ),
        );
        if let Ok(v) = HeaderValue::from_str(&r.challenge(name, ChallengeError::InsufficientScope))
        {
            resp.headers_mut().insert(WWW_AUTHENTICATE, v);
        }
        return Err(Box::new(resp));
    }
    Ok((tool.clone(), principal))
}

/// Checks the `Authorization` header for tool `name`'s endpoint. A JWT signed by a key the
/// relay does not hold makes it fetch the identity provider's keys once more (rate-limited)
/// and check again: the provider may have rotated its keys.
async fn authenticate(
    req: &Request<Incoming>,
    name: &str,
    live: &Live,
    cert: Option<&CertIdentity>,
) -> Result<Principal, AuthError> {
    if let AuthConfig::Certs(_) = &live.auth {
        return live.auth.authenticate_cert(cert);
    }
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .map(|v| v.as_bytes().to_vec());
    let audiences = live
        .resource
        .as_ref()
        .map(|r| r.audiences(name))
        .unwrap_or_default();
    let result = live.auth.authenticate(header.as_deref(), &audiences);
    let remote = match &live.auth {
        AuthConfig::Jwt(j) => match &j.keys {
            KeySource::Remote(k) => Some(k.clone()),
            _ => None,
        },
        _ => None,
    };
    match (result, remote) {
        (Err(AuthError::UnknownKey | AuthError::KeysUnavailable), Some(keys)) => {
            keys.refetch().await;
            live.auth.authenticate(header.as_deref(), &audiences)
        }
        (result, _) => result,
    }
}

/// The 401 (503 while the identity provider's keys are not there yet) for a refused
/// credential, with a Bearer challenge: naming the resource metadata and the scopes when the
/// relay is an OAuth resource server.
fn unauthorized(e: &AuthError, name: &str, live: &Live) -> Response<Body> {
    if matches!(e, AuthError::NoCertificate | AuthError::UnknownCertificate) {
        // A certificate is not a bearer credential: no challenge to answer, so 403.
        return text(StatusCode::FORBIDDEN, &e.to_string());
    }
    let status = if *e == AuthError::KeysUnavailable {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::UNAUTHORIZED
    };
    let mut resp = text(status, &e.to_string());
    // RFC 6750 §3.1: no error code when no credentials were sent at all.
    let error = if *e == AuthError::Missing {
        ChallengeError::None
    } else {
        ChallengeError::InvalidToken(e.code())
    };
    let challenge = match (&live.resource, error) {
        (Some(r), _) => r.challenge(name, error),
        (None, ChallengeError::InvalidToken(code)) => format!(
            "Bearer realm=\"mcp-bridge\", error=\"invalid_token\", error_description=\"{code}\""
        ),
        (None, _) => "Bearer realm=\"mcp-bridge\"".to_owned(),
    };
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        resp.headers_mut().insert(WWW_AUTHENTICATE, v);
    }
    resp
}

/// Whether a request at `/mcp/<tool>` is Streamable HTTP rather than a WebSocket upgrade: a
/// POST or DELETE, or a GET that asks for an event stream and no upgrade.
fn is_streamable(req: &Request<Incoming>) -> bool {
    let h = req.headers();
    match *req.method() {
        Method::POST | Method::DELETE => true,
        Method::GET => {
            !header_has_token(h.get(UPGRADE), "websocket")
                && h.get(ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.contains("text/event-stream"))
        }
        _ => false,
    }
}

/// Whether a comma-separated header value contains `token` (case-insensitive).
pub(super) fn header_has_token(value: Option<&HeaderValue>, token: &str) -> bool {
    value
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// A short plain-text response: the body is the reason, on one line.
pub(crate) fn text(status: StatusCode, body: &str) -> Response<Body> {
    response(status, "text/plain; charset=utf-8", format!("{body}\n"))
}

/// An empty body.
pub(super) fn empty() -> Body {
    Either::Left(Full::default())
}

/// A JSON answer (a JSON-RPC error for a refused Streamable HTTP request).
pub(super) fn json(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(Either::Left(Full::new(Bytes::from(body))));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// A whole answer that ends its connection (`Connection: close`): probes, metrics and every
/// refusal. Only Streamable HTTP's own answers keep a connection open for another request
/// (`streamable`); a connection that was refused, or only probed, goes away after its answer.
fn response(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut resp = Response::new(Either::Left(Full::new(Bytes::from(body))));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CONNECTION, HeaderValue::from_static("close"));
    resp
}

//! MCP Streamable HTTP (spec 2025-11-25) at `/mcp/<tool>`: POST, GET and DELETE mapped onto a
//! relay session. An `initialize` POST without `Mcp-Session-Id` starts a session (the same
//! registry, limits and tool process as a WebSocket one); later requests name it. This module
//! checks the HTTP side (headers, body size, which session) and hands the body to the
//! session's driver through its door; which stream an answer goes to is the session's business
//! (`session::http`). Admission (Origin, auth, grant) happened before.
//!
//! Its answers (SSE streams, 202, DELETE's 200) leave the connection open for the client's
//! next request (HTTP/1.1 keep-alive); its refusals close it, like every other refusal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Limited};
use hyper::body::Incoming;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::Instrument;

use shared::endpoint::Framing;
use shared::jsonrpc::{self, ClassifyError, Kind};

use super::sse::StreamBody;
use super::start::{start, Opening, Started};
use super::{empty, json, Body, PROTOCOL_VERSION, SESSION_ID};
use crate::auth::Principal;
use crate::config::ToolConfig;
use crate::session::http::{self as carrier, Chunk, Ctl, Events, HttpCarrier, Post, PostReply};
use crate::session::{self, Carrier, Door, HttpDoor};
use crate::Relay;

/// The handshake-era protocol versions this carrier serves.
use crate::session::modern::check::HANDSHAKE_VERSIONS as SUPPORTED_VERSIONS;
/// How long a request body may take to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

type Refusal = Box<Response<Body>>;

/// Serves a Streamable HTTP request for `tool`, from an admitted `principal`.
pub(super) async fn serve(
    req: Request<Incoming>,
    tool: Arc<ToolConfig>,
    relay: Arc<Relay>,
    peer: SocketAddr,
    principal: Principal,
) -> Response<Body> {
    let result = match *req.method() {
        Method::POST => post(req, &tool, &relay, peer, principal).await,
        Method::GET => get(req.headers(), &tool, &relay, &principal).await,
        _ => delete(req.headers(), &tool, &relay, &principal).await,
    };
    result.unwrap_or_else(|refusal| *refusal)
}

async fn post(
    req: Request<Incoming>,
    tool: &Arc<ToolConfig>,
    relay: &Arc<Relay>,
    peer: SocketAddr,
    principal: Principal,
) -> Result<Response<Body>, Refusal> {
    let h = req.headers();
    if !accepts(h, "application/json") || !accepts(h, "text/event-stream") {
        return Err(error(
            StatusCode::NOT_ACCEPTABLE,
            jsonrpc::INVALID_REQUEST,
            "a POST must accept both application/json and text/event-stream",
        ));
    }
    if !body_is_json(h) {
        return Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            jsonrpc::INVALID_REQUEST,
            "the body must be one JSON-RPC message (Content-Type: application/json)",
        ));
    }
    let existing = session_of(h, tool, relay, &principal.user)?;
    let body = read_body(req, tool.max_message_size).await?;
    let mut cancels = None;
    let request = match jsonrpc::classify(&body) {
        Ok(Kind::Request { id, method }) => Some((id, method == "initialize")),
        Ok(Kind::Notification { method }) => {
            if method == "notifications/cancelled" {
                cancels = jsonrpc::cancelled_request_id(&body);
            }
            None
        }
        Ok(Kind::Response { .. }) => None,
        Err(e) => {
            let code = match e {
                ClassifyError::Parse(_) => jsonrpc::PARSE_ERROR,
                _ => jsonrpc::INVALID_REQUEST,
            };
            return Err(error(StatusCode::BAD_REQUEST, code, &e.to_string()));
        }
    };
    let (session_id, door) = match (existing, &request) {
        (Some(s), _) => s,
        (None, Some((_, true))) => open(tool, relay, peer, principal)?,
        (None, _) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                jsonrpc::INVALID_REQUEST,
                "missing Mcp-Session-Id header: start a session with `initialize` first",
            ))
        }
    };
    let (reply, answer) = oneshot::channel();
    let post = Post {
        body,
        request: request.map(|(id, _)| id),
        cancels,
        reply,
    };
    if door.posts.send(post).await.is_err() {
        return Err(gone());
    }
    let mut resp = match answer.await.map_err(|_| gone())? {
        PostReply::Accepted => {
            let mut r = Response::new(empty());
            *r.status_mut() = StatusCode::ACCEPTED;
            r
        }
        PostReply::Stream(events) => sse(None, events),
        PostReply::Json(answer) => {
            let mut r = Response::new(Either::Right(Either::Left(StreamBody::whole(answer))));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        PostReply::DuplicateId => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                jsonrpc::INVALID_REQUEST,
                "a request with this id is already waiting for its answer on this session",
            ))
        }
    };
    if let Ok(v) = HeaderValue::from_str(&session_id) {
        resp.headers_mut().insert(SESSION_ID, v);
    }
    Ok(resp)
}

/// Starts a new session for an `initialize` request; returns its id and door.
fn open(
    tool: &Arc<ToolConfig>,
    relay: &Arc<Relay>,
    peer: SocketAddr,
    principal: Principal,
) -> Result<(String, HttpDoor), Refusal> {
    let (door, inlet) = carrier::door();
    let opening = Opening {
        framing: Framing::Plain,
        kind: "new",
        carrier: "http",
    };
    let Started {
        params,
        tool: tool_proc,
        span,
    } = start(
        relay,
        tool,
        principal,
        peer,
        Door::Http(door.clone()),
        opening,
    )?;
    let id = params.id.clone();
    let http = HttpCarrier::new(
        inlet,
        tool.max_message_size,
        relay.limits.resume_window,
        Instant::now(),
    );
    relay.tracker.spawn(
        session::run(params, tool_proc, Carrier::Http(Box::new(http)), None).instrument(span),
    );
    Ok((id, door))
}

/// GET: the standalone stream of the session's messages not tied to a request, or, with
/// `Last-Event-ID`, the stream that event was on, resumed.
async fn get(
    h: &HeaderMap,
    tool: &ToolConfig,
    relay: &Relay,
    principal: &Principal,
) -> Result<Response<Body>, Refusal> {
    let (_, door) = session_of(h, tool, relay, &principal.user)?.ok_or_else(missing_session)?;
    let last_event_id = h
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    let (reply, stream) = oneshot::channel();
    let get = Ctl::Get {
        last_event_id,
        reply,
    };
    if door.ctl.send(get).await.is_err() {
        return Err(gone());
    }
    let events = stream.await.map_err(|_| gone())?;
    Ok(sse(None, events))
}

/// DELETE: ends the session (its tool's stdin closed, the tool reaped, its slot freed).
async fn delete(
    h: &HeaderMap,
    tool: &ToolConfig,
    relay: &Relay,
    principal: &Principal,
) -> Result<Response<Body>, Refusal> {
    let (_, door) = session_of(h, tool, relay, &principal.user)?.ok_or_else(missing_session)?;
    let (reply, done) = oneshot::channel();
    if door.ctl.send(Ctl::Delete { reply }).await.is_err() || done.await.is_err() {
        return Err(gone());
    }
    Ok(Response::new(empty()))
}

/// The session named by `Mcp-Session-Id`, if the request names one: unknown, ended, another
/// user's or another tool's are all 404 (so the client starts a new one). A known session
/// checks `MCP-Protocol-Version`.
fn session_of(
    h: &HeaderMap,
    tool: &ToolConfig,
    relay: &Relay,
    user: &str,
) -> Result<Option<(String, HttpDoor)>, Refusal> {
    let Some(id) = h.get(SESSION_ID) else {
        return Ok(None);
    };
    let id = String::from_utf8_lossy(id.as_bytes()).into_owned();
    let door = relay
        .registry
        .http_handle(&id, &tool.name, user)
        .map_err(|_| gone())?;
    if let Some(v) = h.get(PROTOCOL_VERSION) {
        let v = v.to_str().unwrap_or_default().trim();
        if !SUPPORTED_VERSIONS.contains(&v) {
            let msg = format!(
                "unsupported MCP-Protocol-Version `{}`; supported: {}",
                shared::log_safe(v),
                SUPPORTED_VERSIONS.join(", ")
            );
            return Err(error(
                StatusCode::BAD_REQUEST,
                jsonrpc::INVALID_REQUEST,
                &msg,
            ));
        }
    }
    Ok(Some((id, door)))
}

/// The request body, at most `limit` bytes, within [`BODY_TIMEOUT`].
pub(super) async fn read_body(req: Request<Incoming>, limit: usize) -> Result<Bytes, Refusal> {
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            jsonrpc::MESSAGE_TOO_LARGE,
            &format!(
                "the message is larger than this tool's limit of {}",
                shared::human_bytes(limit)
            ),
        )
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let collect = Limited::new(req.into_body(), limit).collect();
    match tokio::time::timeout(BODY_TIMEOUT, collect).await {
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(_)) | Err(_) => Err(error(
            StatusCode::BAD_REQUEST,
            jsonrpc::INVALID_REQUEST,
            "the request body did not arrive whole",
        )),
    }
}

/// An SSE answer.
pub(super) fn sse(first: Option<Chunk>, events: Events) -> Response<Body> {
    let mut resp = Response::new(Either::Right(Either::Left(StreamBody::sse(first, events))));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

/// Whether `Content-Type` says the body is JSON (`application/json`, parameters allowed).
pub(super) fn body_is_json(h: &HeaderMap) -> bool {
    h.get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"))
}

/// Whether `Accept` admits `ty` (exactly, or through `type/*` or `*/*`).
pub(super) fn accepts(h: &HeaderMap, ty: &str) -> bool {
    let major = ty.split('/').next().unwrap_or(ty);
    h.get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|r| r.split(';').next().unwrap_or("").trim())
        .any(|r| {
            r.eq_ignore_ascii_case(ty)
                || r == "*/*"
                || r.strip_suffix("/*")
                    .is_some_and(|m| m.eq_ignore_ascii_case(major))
        })
}

/// 404 for an unknown or ended session: the client starts a new one.
fn gone() -> Refusal {
    error(
        StatusCode::NOT_FOUND,
        jsonrpc::INVALID_REQUEST,
        "session not found (it ended, or never existed here): start a new one with `initialize`",
    )
}

fn missing_session() -> Refusal {
    error(
        StatusCode::BAD_REQUEST,
        jsonrpc::INVALID_REQUEST,
        "missing Mcp-Session-Id header",
    )
}

/// A refusal with a JSON-RPC error body.
fn error(status: StatusCode, code: i64, message: &str) -> Refusal {
    Box::new(json(
        status,
        jsonrpc::error_response(None, code, message, None),
    ))
}

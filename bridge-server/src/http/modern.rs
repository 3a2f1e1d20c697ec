//! Session-less MCP Streamable HTTP (revision 2026-07-28) at `/mcp/<tool>`: a POST without
//! `Mcp-Session-Id` whose `MCP-Protocol-Version` is not a handshake-era version. The body is
//! checked against its headers (`session::modern::check`), then sent to the user's pooled
//! process of the tool (started through `start`, the same limits and spawn as a session; its
//! carrier checks a `tools/call`'s `Mcp-Param-*` headers against its tools' annotations);
//! the answer comes back as one JSON body or an SSE stream, as `Accept` allows. GET and DELETE
//! have no meaning in this revision (405). A tool that speaks only the handshake era gets its
//! modern clients told, with an error that is not a modern one, to fall back to `initialize`.
//! Admission (Origin, auth, grant) happened before; deciding about messages is the session's.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, UPGRADE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{debug, Instrument};

use shared::endpoint::Framing;
use shared::jsonrpc::{self, Id};
use shared::mcp_params;

use super::start::{start, Opening, Started};
use super::streamable::{accepts, body_is_json, read_body, sse};
use super::{header_has_token, Body, PROTOCOL_VERSION, SESSION_ID};
use crate::auth::Principal;
use crate::config::ToolConfig;
use crate::session::modern::carrier::{Call, ModernCarrier, Reply};
use crate::session::modern::check::{self, Checked, Headers, Refusal};
use crate::session::modern::params::ParamHeaders;
use crate::session::modern::wire;
use crate::session::{self, Carrier, Door};
use crate::Relay;

/// Whether a request at `/mcp/<tool>` is of the session-less revision: no `Mcp-Session-Id`,
/// no WebSocket upgrade, and an `MCP-Protocol-Version` that names no handshake-era version.
pub(super) fn is_modern(req: &Request<Incoming>) -> bool {
    let h = req.headers();
    matches!(*req.method(), Method::POST | Method::GET | Method::DELETE)
        && !h.contains_key(SESSION_ID)
        && !header_has_token(h.get(UPGRADE), "websocket")
        && check::is_modern(h.get(PROTOCOL_VERSION).map(HeaderValue::as_bytes))
}

/// Serves a session-less request for `tool`, from an admitted `principal`.
pub(super) async fn serve(
    req: Request<Incoming>,
    tool: Arc<ToolConfig>,
    relay: Arc<Relay>,
    peer: SocketAddr,
    principal: Principal,
) -> Response<Body> {
    if *req.method() != Method::POST {
        let mut resp = refusal(
            None,
            Refusal {
                status: 405,
                code: jsonrpc::INVALID_REQUEST,
                message: "the 2026-07-28 revision has no GET stream and no sessions to DELETE: POST each request (subscriptions/listen for notifications)".into(),
                data: None,
            },
        );
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
        return resp;
    }
    match post(req, &tool, &relay, peer, principal).await {
        Ok(resp) | Err(resp) => resp,
    }
}

async fn post(
    req: Request<Incoming>,
    tool: &Arc<ToolConfig>,
    relay: &Arc<Relay>,
    peer: SocketAddr,
    principal: Principal,
) -> Result<Response<Body>, Response<Body>> {
    let h = req.headers();
    let want_sse = accepts(h, "text/event-stream");
    if !want_sse && !accepts(h, "application/json") {
        return Err(plain_refusal(
            406,
            "a POST must accept application/json or text/event-stream (both, says the spec)",
        ));
    }
    if !body_is_json(h) {
        return Err(plain_refusal(
            415,
            "the body must be one JSON-RPC message (Content-Type: application/json)",
        ));
    }
    let version = h.get(PROTOCOL_VERSION).map(|v| v.as_bytes().to_vec());
    let method = h.get("mcp-method").map(|v| v.as_bytes().to_vec());
    let name = h.get("mcp-name").map(|v| v.as_bytes().to_vec());
    let duplicated = [PROTOCOL_VERSION, "mcp-method", "mcp-name"]
        .iter()
        .any(|n| h.get_all(*n).iter().count() > 1);
    let param_headers: Vec<(String, Vec<u8>)> = h
        .iter()
        .filter(|(n, _)| n.as_str().starts_with(mcp_params::HEADER_PREFIX))
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect();
    let body = read_body(req, tool.max_message_size)
        .await
        .map_err(|refusal| *refusal)?;
    let headers = Headers {
        version: version.as_deref(),
        method: method.as_deref(),
        name: name.as_deref(),
        duplicated,
    };
    let (id, request, call_of) = match check::check(&headers, &body) {
        // Refused: the id is read again for the error (off the path of a call that goes on).
        Err(r) => return Err(refusal(request_id(&body).as_ref(), r)),
        Ok(Checked::Notification) => {
            let mut r = Response::new(super::empty());
            *r.status_mut() = StatusCode::ACCEPTED;
            return Ok(r);
        }
        Ok(Checked::Request(f)) => {
            debug!(method = ?f.method, "a session-less request");
            let spans = f.request_spans();
            let call_of = (f.method.as_deref() == Some("tools/call"))
                .then(|| f.name.as_deref().map(str::to_owned))
                .flatten();
            (f.id.and_then(|(raw, _)| wire::to_id(raw)), spans, call_of)
        }
    };
    if relay.pool.is_handshake(&tool.name, Instant::now()) {
        return Err(fall_back(id.as_ref(), &tool.name));
    }
    if relay.shutdown.drain.is_cancelled() {
        return Err(refusal(
            id.as_ref(),
            Refusal {
                status: 503,
                code: jsonrpc::RELAY_UNAVAILABLE,
                message: "the relay is shutting down; send the request to another node".into(),
                data: None,
            },
        ));
    }
    // A process that ends between the look-up and the send is replaced once.
    for _ in 0..2 {
        let door = relay
            .pool
            .door_or_start(&principal.user, &tool.name, |rx| {
                open(tool, relay, peer, principal.clone(), rx)
            })
            .map_err(|refusal| *refusal)?;
        let (reply, answer) = oneshot::channel();
        let call = Call {
            body: body.clone(),
            request: request.clone(),
            sse: want_sse,
            params: call_of.as_ref().map(|tool| ParamHeaders {
                tool: tool.clone(),
                headers: param_headers.clone(),
            }),
            reply,
        };
        if door.send(call).await.is_err() {
            continue;
        }
        let Ok(reply) = answer.await else {
            // The process ended with the call queued: it found the tool handshake-era, or
            // stopped for another reason (a second try starts a new one).
            if relay.pool.is_handshake(&tool.name, Instant::now()) {
                return Err(fall_back(id.as_ref(), &tool.name));
            }
            continue;
        };
        return match reply {
            // The carrier begins the answer: the whole answer (JSON) when it is the first
            // thing for the request and soon, else an SSE stream.
            Reply::Stream(mut events) if want_sse => match events.recv().await {
                Some(first) if first.whole => Ok(json_answer(first.bytes)),
                Some(first) => Ok(sse(Some(first), events)),
                None => Err(unavailable(id.as_ref(), "the tool's process ended before it answered")),
            },
            Reply::Stream(mut events) => match events.recv().await {
                Some(chunk) => Ok(json_answer(chunk.bytes)),
                None => Err(unavailable(id.as_ref(), "the tool's process ended before it answered")),
            },
            Reply::Refused(r) => Err(refusal(id.as_ref(), r)),
            Reply::Busy(n) => Err(refusal(
                id.as_ref(),
                Refusal {
                    status: 429,
                    code: jsonrpc::TOO_MANY_REQUESTS,
                    message: format!(
                        "the tool's process for user `{}` has {n} requests in flight; try again when some are answered",
                        principal.user
                    ),
                    data: None,
                },
            )),
        };
    }
    Err(unavailable(
        id.as_ref(),
        "the tool's process ended before it took the request",
    ))
}

/// Starts `principal`'s pooled process of `tool`, its carrier reading `calls`.
fn open(
    tool: &Arc<ToolConfig>,
    relay: &Arc<Relay>,
    peer: SocketAddr,
    principal: Principal,
    calls: tokio::sync::mpsc::Receiver<Call>,
) -> Result<(), Box<Response<Body>>> {
    let user = principal.user.clone();
    let opening = Opening {
        framing: Framing::Plain,
        kind: "new",
        carrier: "http-modern",
    };
    let Started {
        params,
        tool: tool_proc,
        span,
    } = start(relay, tool, principal, peer, Door::Modern, opening)?;
    let carrier = ModernCarrier::new(
        calls,
        relay.pool.clone(),
        user,
        tool.name.clone(),
        relay.shutdown.drain.clone(),
        relay.limits.resume_window,
        Instant::now(),
    );
    relay.tracker.spawn(
        session::run(params, tool_proc, Carrier::Modern(Box::new(carrier)), None).instrument(span),
    );
    Ok(())
}

/// The request's id, for the error that answers it.
fn request_id(body: &[u8]) -> Option<Id> {
    match jsonrpc::classify(body) {
        Ok(jsonrpc::Kind::Request { id, .. }) => Some(id),
        _ => None,
    }
}

/// The answer to a modern request at a tool that speaks only the handshake era: a 400 whose
/// JSON-RPC error is no modern one, which the spec's backward-compatibility rules make a
/// dual-era client read as "fall back to `initialize`".
fn fall_back(id: Option<&Id>, tool: &str) -> Response<Body> {
    refusal(
        id,
        Refusal {
            status: 400,
            code: jsonrpc::INVALID_REQUEST,
            message: format!(
                "tool `{tool}` speaks only the handshake era of MCP: start a session with `initialize` (MCP-Protocol-Version 2025-11-25 or earlier)"
            ),
            data: None,
        },
    )
}

fn unavailable(id: Option<&Id>, why: &str) -> Response<Body> {
    refusal(
        id,
        Refusal {
            status: 503,
            code: jsonrpc::RELAY_UNAVAILABLE,
            message: format!("{why}; try again"),
            data: None,
        },
    )
}

/// A refusal: its status, and a JSON-RPC error answering the request.
fn refusal(id: Option<&Id>, r: Refusal) -> Response<Body> {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST);
    super::json(
        status,
        jsonrpc::error_response(id, r.code, &r.message, r.data.as_ref()),
    )
}

fn plain_refusal(status: u16, message: &str) -> Response<Body> {
    refusal(
        None,
        Refusal {
            status,
            code: jsonrpc::INVALID_REQUEST,
            message: message.into(),
            data: None,
        },
    )
}

/// The answer as one JSON body (the connection stays open for the next request): `200`, or
/// `404` for "method not found", as the revision asks of a server.
fn json_answer(bytes: Bytes) -> Response<Body> {
    // A result (most answers) is not parsed again: only a body naming an error is.
    let not_found = bytes.windows(7).any(|w| w == b"\"error\"")
        && jsonrpc::error_code(&bytes) == Some(jsonrpc::METHOD_NOT_FOUND);
    let mut resp = Response::new(Either::Left(Full::new(bytes)));
    if not_found {
        *resp.status_mut() = StatusCode::NOT_FOUND;
    }
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

//! The session admin API, on the private metrics listener only: `GET /admin/sessions` (every
//! live session), `GET /admin/sessions/{id}` (one), `DELETE /admin/sessions/{id}` (end it: the
//! client is told why, its calls in flight are answered, the tool is ended and reaped). Every
//! request needs an admin token (`[[admin.token]]`); without one configured the API is off.
//! Every action is an audit event naming the admin. Answers are JSON; errors are
//! `{"error": "…"}`. What a session shows is `session::info`'s business, how it ends the
//! session driver's.

use std::net::SocketAddr;

use http::header::{ALLOW, AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use serde_json::json;
use tracing::{info, warn};

use super::{json as json_response, Body};
use crate::auth;
use crate::metrics::ReasonLabel;
use crate::session::{self, short_id, Lookup};
use crate::Relay;

/// What a request under `/admin/` asks for (sans-IO: from its method and path).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route<'a> {
    List,
    Show(&'a str),
    End(&'a str),
    /// A known path with a method it does not take; the methods it does.
    Method(&'static str),
    NotFound,
}

/// Routes a request under `/admin/`.
pub(crate) fn route<'a>(method: &Method, path: &'a str) -> Route<'a> {
    let rest = path.trim_end_matches('/');
    if rest == "/admin/sessions" {
        return match *method {
            Method::GET | Method::HEAD => Route::List,
            _ => Route::Method("GET"),
        };
    }
    match rest.strip_prefix("/admin/sessions/") {
        Some(id) if !id.is_empty() && !id.contains('/') => match *method {
            Method::GET | Method::HEAD => Route::Show(id),
            Method::DELETE => Route::End(id),
            _ => Route::Method("GET, DELETE"),
        },
        _ => Route::NotFound,
    }
}

/// A JSON error answer.
fn error(status: StatusCode, message: &str) -> Response<Body> {
    json_response(status, body(&json!({ "error": message })))
}

fn body(v: &serde_json::Value) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(v).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Serves one request under `/admin/`.
pub(crate) async fn handle<B>(req: &Request<B>, relay: &Relay, peer: SocketAddr) -> Response<Body> {
    if relay.admin_tokens.is_empty() {
        return error(
            StatusCode::FORBIDDEN,
            "the admin API is off: add an [[admin.token]] table (name, sha256 from \
             `bridge-server new-token admin.token`) to the relay's config and restart it",
        );
    }
    let admin = match auth::authenticate_admin(
        &relay.admin_tokens,
        req.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes),
    ) {
        Ok(name) => name,
        Err(e) => {
            warn!(target: "audit", event = "auth_failure", reason = e.code(), api = "admin", %peer, "admin API: authentication failed");
            relay
                .metrics
                .auth_failures
                .get_or_create(&ReasonLabel { reason: e.code() })
                .inc();
            let mut resp = error(
                StatusCode::UNAUTHORIZED,
                &format!(
                    "{e}; the admin API takes an admin token (`bridge-server sessions \
                     --token-file FILE`)"
                ),
            );
            resp.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"mcp-bridge-admin\""),
            );
            return resp;
        }
    };
    let path = req.uri().path();
    match route(req.method(), path) {
        Route::List => {
            let now = session::now_ms();
            let sessions: Vec<session::Snapshot> = relay
                .registry
                .list()
                .iter()
                .map(|s| s.snapshot(now))
                .collect();
            info!(target: "audit", event = "admin", admin = %admin, action = "list", result = "ok", count = sessions.len(), %peer, "admin listed the sessions");
            json_response(StatusCode::OK, body(&json!({ "sessions": sessions })))
        }
        Route::Show(id) => match relay.registry.find(id) {
            Ok(s) => {
                info!(target: "audit", event = "admin", admin = %admin, action = "show", session = %short_id(&s.id), result = "ok", %peer, "admin looked at a session");
                let snap = s.snapshot(session::now_ms());
                json_response(StatusCode::OK, body(&json!({ "session": snap })))
            }
            Err(e) => not_found(&admin, "show", id, &e, peer),
        },
        Route::End(id) => end(relay, &admin, id, peer).await,
        Route::Method(allow) => {
            let mut resp = error(
                StatusCode::METHOD_NOT_ALLOWED,
                &format!("{} is not served here: use {allow}", req.method()),
            );
            resp.headers_mut()
                .insert(ALLOW, HeaderValue::from_static(allow));
            resp
        }
        Route::NotFound => error(
            StatusCode::NOT_FOUND,
            "not found: the admin API has GET /admin/sessions, GET and DELETE /admin/sessions/{id}",
        ),
    }
}

/// The answer for an id that names no one session.
fn not_found(admin: &str, action: &str, id: &str, e: &Lookup, peer: SocketAddr) -> Response<Body> {
    let shown = shared::log_safe_max(id, 64);
    let (status, result, message) = match e {
        Lookup::Unknown => (
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no live session `{shown}` (give its whole id, or its first {} or more digits)",
                session::MIN_PREFIX
            ),
        ),
        Lookup::Ambiguous(n) => (
            StatusCode::CONFLICT,
            "ambiguous",
            format!("{n} live sessions start with `{shown}`: give more of the id"),
        ),
    };
    info!(target: "audit", event = "admin", admin = %admin, action, session = ?shown, result, %peer, "admin named no one session");
    error(status, &message)
}

/// Ends a session and waits (bounded) until its tool is reaped.
async fn end(relay: &Relay, admin: &str, id: &str, peer: SocketAddr) -> Response<Body> {
    let s = match relay.registry.find(id) {
        Ok(s) => s,
        Err(e) => return not_found(admin, "end", id, &e, peer),
    };
    let sid = short_id(&s.id).to_owned();
    let before = s.snapshot(session::now_ms());
    if before.state == session::State::Ending || !s.request_end(session::EndRequest::Admin) {
        info!(target: "audit", event = "admin", admin = %admin, action = "end", session = %sid, user = %s.user, tool = %s.tool, result = "already_ending", %peer, "admin asked to end a session already ending");
        return error(
            StatusCode::CONFLICT,
            &format!("session `{sid}` is already ending"),
        );
    }
    let wait = session::end_wait(relay.limits.kill_grace);
    let reaped = tokio::time::timeout(wait, s.wait_done()).await.is_ok();
    let reason = relay.registry.ended_reason(&s.id).unwrap_or_default();
    let result = if reaped { "ok" } else { "ending" };
    info!(target: "audit", event = "admin", admin = %admin, action = "end", session = %sid, user = %s.user, tool = %s.tool, result, tool_pid = before.tool_pid, %peer, "admin ended a session");
    let snap = s.snapshot(session::now_ms());
    let status = if reaped {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    json_response(
        status,
        body(&json!({
            "ended": reaped,
            "reason": reason,
            "tool_reaped": reaped,
            "session": snap,
        })),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let id = "0123456789abcdef";
        assert_eq!(route(&Method::GET, "/admin/sessions"), Route::List);
        assert_eq!(route(&Method::GET, "/admin/sessions/"), Route::List);
        assert_eq!(
            route(&Method::GET, "/admin/sessions/0123456789abcdef"),
            Route::Show(id)
        );
        assert_eq!(
            route(&Method::DELETE, "/admin/sessions/0123456789abcdef"),
            Route::End(id)
        );
        assert_eq!(
            route(&Method::POST, "/admin/sessions"),
            Route::Method("GET")
        );
        assert_eq!(
            route(&Method::PUT, "/admin/sessions/x"),
            Route::Method("GET, DELETE")
        );
        assert_eq!(route(&Method::GET, "/admin/sessions/a/b"), Route::NotFound);
        assert_eq!(route(&Method::GET, "/admin/other"), Route::NotFound);
        assert_eq!(route(&Method::DELETE, "/admin"), Route::NotFound);
    }
}

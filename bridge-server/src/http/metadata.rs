//! Protected Resource Metadata (RFC 9728) at `/.well-known/oauth-protected-resource` (the
//! relay) and `/.well-known/oauth-protected-resource/mcp/<tool>` (each hosted tool): public
//! documents naming the authorization servers and scopes, served only when the relay checks
//! OAuth access tokens (JWT auth). Not responsible for what they say (`auth::resource`).

use http::header::{ACCESS_CONTROL_ALLOW_ORIGIN, CACHE_CONTROL};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::{json, text, Body};
use crate::Relay;

/// Answers a request for the metadata at `rest` (the path after the well-known prefix).
pub(super) fn serve(req: &Request<Incoming>, rest: &str, relay: &Relay) -> Response<Body> {
    let live = relay.live();
    let Some(resource) = &live.resource else {
        return text(
            StatusCode::NOT_FOUND,
            "not found: this relay does not take OAuth access tokens (its [auth] mode is not \
             \"jwt\")",
        );
    };
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "protected-resource metadata is read with GET",
        );
    }
    let tool =
        match rest.trim_end_matches('/') {
            "" => None,
            other => match other.strip_prefix("/mcp/") {
                Some(name) if live.tool(name).is_some() => Some(name),
                _ => return text(
                    StatusCode::NOT_FOUND,
                    "not found: metadata is at /.well-known/oauth-protected-resource/mcp/<tool> \
                     for a hosted tool",
                ),
            },
        };
    let body = resource.metadata(tool).to_string().into_bytes();
    let mut resp = json(StatusCode::OK, body);
    let h = resp.headers_mut();
    // Public, and read by browser-based MCP clients too.
    h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=300"));
    resp
}

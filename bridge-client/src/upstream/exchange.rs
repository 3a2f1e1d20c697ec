//! The rules of one Streamable HTTP exchange, as plain functions: which protocol headers a
//! message needs (`MCP-Protocol-Version`, `Mcp-Session-Id`, and for the 2026-07-28 revision
//! `Mcp-Method` / `Mcp-Name`), and what a response's status and content type mean. Static
//! headers (the token, `-H`) are the driver's; sessions and streams are the core's.

use std::borrow::Cow;

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use serde::Deserialize;

use shared::ingress::{Msg, MsgKind};

/// `Mcp-Session-Id`.
pub(crate) const SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
/// `MCP-Protocol-Version`.
pub(crate) const PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
/// `Mcp-Method` (2026-07-28).
pub(crate) const MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
/// `Mcp-Name` (2026-07-28).
pub(crate) const MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");
/// `Last-Event-ID`.
pub(crate) const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

/// `Accept` of a POST: both answers a server may give.
const ACCEPT_POST: &str = "application/json, text/event-stream";

/// One HTTP request the core wants made.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    /// Names the exchange in the events the driver reports back.
    pub(crate) ex: u64,
    pub(crate) method: Method,
    /// The URL (the MCP endpoint, or a legacy server's POST endpoint).
    pub(crate) url: http::Uri,
    /// Protocol headers; the driver adds the token and `-H` headers.
    pub(crate) headers: HeaderMap,
    pub(crate) body: bytes::Bytes,
}

/// What the headers need from a request's body (one borrowed parse, requests only).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct RequestMeta {
    /// `params.name` or `params.uri` of `tools/call`, `prompts/get`, `resources/read`.
    pub(crate) name: Option<String>,
    /// `params._meta["io.modelcontextprotocol/protocolVersion"]` (2026-07-28 requests).
    pub(crate) version: Option<String>,
}

#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(borrow, default)]
    params: Option<Params<'a>>,
}

#[derive(Deserialize)]
struct Params<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    uri: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "_meta")]
    meta: Option<Meta<'a>>,
}

#[derive(Deserialize)]
struct Meta<'a> {
    #[serde(borrow, default, rename = "io.modelcontextprotocol/protocolVersion")]
    version: Option<Cow<'a, str>>,
}

impl RequestMeta {
    /// Reads what the headers need from a request or notification.
    pub(crate) fn of(msg: &Msg) -> RequestMeta {
        let method = match &msg.kind {
            MsgKind::Request { method, .. } | MsgKind::Notification { method } => method,
            MsgKind::Response { .. } => return RequestMeta::default(),
        };
        let Ok(probe) = serde_json::from_slice::<Probe<'_>>(&msg.bytes) else {
            return RequestMeta::default();
        };
        let Some(params) = probe.params else {
            return RequestMeta::default();
        };
        let name = match &**method {
            "tools/call" | "prompts/get" => params.name,
            "resources/read" => params.uri,
            _ => None,
        };
        RequestMeta {
            name: name.map(Cow::into_owned),
            version: params.meta.and_then(|m| m.version).map(Cow::into_owned),
        }
    }
}

/// A header value as the 2026-07-28 revision writes it: plain when it is safe ASCII without
/// surrounding spaces, else `=?base64?…?=`.
pub(crate) fn encoded_value(text: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&shared::mcp_params::encoded_value(text)).ok()
}

/// The protocol headers of a POST carrying `msg`.
pub(crate) fn post_headers(
    msg: &Msg,
    session: Option<&str>,
    negotiated: Option<&str>,
) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(http::header::ACCEPT, HeaderValue::from_static(ACCEPT_POST));
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    common(&mut h, session);
    let meta = RequestMeta::of(msg);
    if let Some(v) = meta
        .version
        .as_deref()
        .or(negotiated)
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        h.insert(PROTOCOL_VERSION, v);
    }
    if let MsgKind::Request { method, .. } = &msg.kind {
        if let Some(v) = encoded_value(method) {
            h.insert(MCP_METHOD, v);
        }
        if let Some(v) = meta.name.as_deref().and_then(encoded_value) {
            h.insert(MCP_NAME, v);
        }
    }
    h
}

/// The headers of a POST to a legacy (2024-11-05) server's endpoint.
pub(crate) fn legacy_post_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(http::header::ACCEPT, HeaderValue::from_static(ACCEPT_POST));
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h
}

/// The URL a legacy server's `endpoint` event names, resolved against the URL of its stream
/// (an absolute path, a path relative to the stream's directory, or a full URL); `None` unless
/// it is on the same origin, since the token goes with every POST.
pub(crate) fn resolve_endpoint(base: &http::Uri, endpoint: &str) -> Option<http::Uri> {
    if endpoint.is_empty() || endpoint.len() > 4096 || endpoint.starts_with("//") {
        return None;
    }
    if endpoint.contains("://") {
        let u: http::Uri = endpoint.parse().ok()?;
        let same = u.scheme() == base.scheme() && u.authority() == base.authority();
        return same.then_some(u);
    }
    let path = if endpoint.starts_with('/') {
        endpoint.to_owned()
    } else {
        let p = base.path();
        let dir = p.rfind('/').map_or("/", |i| &p[..=i]);
        format!("{dir}{endpoint}")
    };
    http::Uri::builder()
        .scheme(base.scheme()?.clone())
        .authority(base.authority()?.clone())
        .path_and_query(path)
        .build()
        .ok()
}

/// The headers of a GET for a stream (the standalone one, or a resume with `last_event_id`).
pub(crate) fn get_headers(
    session: Option<&str>,
    negotiated: Option<&str>,
    last_event_id: Option<&str>,
) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        http::header::ACCEPT,
        HeaderValue::from_static("text/event-stream"),
    );
    common(&mut h, session);
    if let Some(v) = negotiated.and_then(|v| HeaderValue::from_str(v).ok()) {
        h.insert(PROTOCOL_VERSION, v);
    }
    if let Some(v) = last_event_id.and_then(|v| HeaderValue::from_str(v).ok()) {
        h.insert(LAST_EVENT_ID, v);
    }
    h
}

/// The headers of the DELETE that ends a session.
pub(crate) fn delete_headers(session: &str, negotiated: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    common(&mut h, Some(session));
    if let Some(v) = negotiated.and_then(|v| HeaderValue::from_str(v).ok()) {
        h.insert(PROTOCOL_VERSION, v);
    }
    h
}

fn common(h: &mut HeaderMap, session: Option<&str>) {
    if let Some(v) = session.and_then(|s| HeaderValue::from_str(s).ok()) {
        h.insert(SESSION_ID, v);
    }
}

/// What a response head means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// A JSON body: one JSON-RPC message.
    Json,
    /// An SSE stream of JSON-RPC messages.
    Sse,
    /// Accepted, nothing to read (202, or a 2xx without a body type).
    Accepted,
    /// 404 for a request that carried a session id: the session is gone.
    SessionGone,
    /// 401, or 403 with `error="insufficient_scope"`: the server wants (other) credentials;
    /// `WWW-Authenticate` says how.
    AuthRequired {
        status: u16,
        www_authenticate: Option<String>,
    },
    /// 404 or 405 for a request without a session: maybe an HTTP+SSE (2024-11-05) server.
    NotStreamable { status: u16 },
    /// Any other failure; the body (bounded) may hold a JSON-RPC error.
    Failed { status: u16 },
}

/// Reads a response head. `had_session`: the request carried `Mcp-Session-Id`.
pub(crate) fn answer(status: StatusCode, headers: &HeaderMap, had_session: bool) -> Answer {
    let s = status.as_u16();
    if status.is_success() {
        let ct = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        return match (s, ct.as_str()) {
            (202, _) | (204, _) => Answer::Accepted,
            (_, "text/event-stream") => Answer::Sse,
            (_, "application/json") => Answer::Json,
            _ => Answer::Accepted,
        };
    }
    let www_authenticate = || {
        headers
            .get(http::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    match s {
        401 => Answer::AuthRequired {
            status: s,
            www_authenticate: www_authenticate(),
        },
        403 if www_authenticate().is_some_and(|w| w.contains("insufficient_scope")) => {
            Answer::AuthRequired {
                status: s,
                www_authenticate: www_authenticate(),
            }
        }
        404 if had_session => Answer::SessionGone,
        404 | 405 => Answer::NotStreamable { status: s },
        _ => Answer::Failed { status: s },
    }
}

/// The `Mcp-Session-Id` a response assigns, if any.
pub(crate) fn session_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get(SESSION_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.bytes().all(|b| (0x21..0x7f).contains(&b)))
        .map(str::to_owned)
}

/// The first line of an error body, for a message to the user.
pub(crate) fn first_line(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line = text.lines().next().unwrap_or("").trim();
    shared::log_safe_max(line, 200).into_owned()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn msg(s: &'static str) -> Msg {
        Msg::classify(Bytes::from_static(s.as_bytes())).expect("valid")
    }

    #[test]
    fn modern_request_gets_method_name_and_its_own_version() {
        let m = msg(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_weather","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
        );
        let h = post_headers(&m, None, Some("2025-11-25"));
        assert_eq!(h[PROTOCOL_VERSION], "2026-07-28");
        assert_eq!(h[MCP_METHOD], "tools/call");
        assert_eq!(h[MCP_NAME], "get_weather");
        assert_eq!(h[http::header::ACCEPT], ACCEPT_POST);
        assert!(h.get(SESSION_ID).is_none());
    }

    #[test]
    fn legacy_request_gets_session_and_negotiated_version() {
        let m = msg(
            r#"{"jsonrpc":"2.0","id":"a","method":"resources/read","params":{"uri":"file:///x y"}}"#,
        );
        let h = post_headers(&m, Some("s-1"), Some("2025-11-25"));
        assert_eq!(h[SESSION_ID], "s-1");
        assert_eq!(h[PROTOCOL_VERSION], "2025-11-25");
        assert_eq!(h[MCP_NAME], "file:///x y");
        let n = msg(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        let h = post_headers(&n, Some("s-1"), None);
        assert!(h.get(MCP_METHOD).is_none() && h.get(PROTOCOL_VERSION).is_none());
    }

    #[test]
    fn legacy_endpoints_resolve_on_the_same_origin_only() {
        let base: http::Uri = "http://127.0.0.1:9/a/sse".parse().expect("uri");
        let r = |e: &str| resolve_endpoint(&base, e).map(|u| u.to_string());
        assert_eq!(
            r("/messages/?session_id=ab").as_deref(),
            Some("http://127.0.0.1:9/messages/?session_id=ab")
        );
        assert_eq!(
            r("msg?s=1").as_deref(),
            Some("http://127.0.0.1:9/a/msg?s=1")
        );
        assert_eq!(
            r("http://127.0.0.1:9/m").as_deref(),
            Some("http://127.0.0.1:9/m")
        );
        assert_eq!(r("http://evil.example/m"), None);
        assert_eq!(r("https://127.0.0.1:9/m"), None);
        assert_eq!(r("//evil.example/m"), None);
        assert_eq!(r(""), None);
        assert_eq!(r("/a b"), None);
    }

    #[test]
    fn statuses_mean_what_the_spec_says() {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream; charset=utf-8"),
        );
        assert_eq!(answer(StatusCode::OK, &h, true), Answer::Sse);
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        assert_eq!(answer(StatusCode::OK, &h, false), Answer::Json);
        assert_eq!(answer(StatusCode::ACCEPTED, &h, false), Answer::Accepted);
        assert_eq!(answer(StatusCode::NOT_FOUND, &h, true), Answer::SessionGone);
        assert_eq!(
            answer(StatusCode::METHOD_NOT_ALLOWED, &h, false),
            Answer::NotStreamable { status: 405 }
        );
        h.insert(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer resource_metadata=\"https://x/.well-known/y\""),
        );
        assert_eq!(
            answer(StatusCode::UNAUTHORIZED, &h, true),
            Answer::AuthRequired {
                status: 401,
                www_authenticate: Some(
                    "Bearer resource_metadata=\"https://x/.well-known/y\"".into()
                )
            }
        );
        assert_eq!(
            answer(StatusCode::FORBIDDEN, &h, true),
            Answer::Failed { status: 403 }
        );
        h.insert(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"insufficient_scope\", scope=\"a b\""),
        );
        assert!(matches!(
            answer(StatusCode::FORBIDDEN, &h, true),
            Answer::AuthRequired { status: 403, .. }
        ));
        assert_eq!(
            answer(StatusCode::BAD_GATEWAY, &h, true),
            Answer::Failed { status: 502 }
        );
    }
}

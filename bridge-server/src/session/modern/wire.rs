//! The few fields of a 2026-07-28 message the relay reads or rewrites, found in one borrowing
//! parse, with the byte span of each value it may replace: the request id, the progress token
//! and the subscription id (`_meta`). Rewriting splices new bytes into those spans, so the rest
//! of the message passes as it came. What the fields mean is the mux's business.

use std::borrow::Cow;
use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

/// `_meta` key of the protocol version a request speaks.
pub(crate) const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";

#[derive(Deserialize, Default)]
struct Meta<'a> {
    #[serde(borrow, rename = "io.modelcontextprotocol/protocolVersion", default)]
    version: Option<&'a RawValue>,
    #[serde(borrow, rename = "progressToken", default)]
    progress_token: Option<&'a RawValue>,
    #[serde(borrow, rename = "io.modelcontextprotocol/subscriptionId", default)]
    subscription: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
struct Params<'a> {
    #[serde(borrow, default)]
    name: Option<&'a RawValue>,
    #[serde(borrow, default)]
    uri: Option<&'a RawValue>,
    #[serde(borrow, rename = "progressToken", default)]
    progress_token: Option<&'a RawValue>,
    #[serde(borrow, rename = "requestId", default)]
    request_id: Option<&'a RawValue>,
    #[serde(borrow, rename = "_meta", default)]
    meta: Option<Meta<'a>>,
}

#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

/// What the relay needs of one message, borrowed from its bytes.
#[derive(Debug, Default, Clone)]
pub(crate) struct Fields<'a> {
    /// The `method`, if any.
    pub(crate) method: Option<Cow<'a, str>>,
    /// The raw `id` and its span (absent for a notification).
    pub(crate) id: Option<(&'a str, Range<usize>)>,
    /// Whether it has a `result` or an `error`: a response.
    pub(crate) is_response: bool,
    /// `params.name` or `params.uri` as a string (for `Mcp-Name`), if a string.
    pub(crate) name: Option<Cow<'a, str>>,
    /// `params.uri` was the one found (else `params.name`).
    pub(crate) name_is_uri: bool,
    /// `params._meta` protocol version, when it is a string.
    pub(crate) version: Option<Cow<'a, str>>,
    /// `params._meta` has the version key, whatever its type.
    pub(crate) has_version: bool,
    /// `params._meta.progressToken` (a request) or `params.progressToken` (a progress
    /// notification): raw value and span.
    pub(crate) progress_token: Option<(&'a str, Range<usize>)>,
    /// `_meta` subscription id in `params` or `result`: raw value and span.
    pub(crate) subscription: Option<(&'a str, Range<usize>)>,
    /// `params.requestId` (of `notifications/cancelled`): raw value.
    pub(crate) cancelled: Option<&'a str>,
}

/// What the mux needs of a request, owned: found by the handler's one parse and carried with
/// the call, so the carrier does not parse the body again. Spans are into the same body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RequestSpans {
    /// The `method`, if any.
    pub(crate) method: Option<Box<str>>,
    /// The span of the raw `id` (absent for a notification).
    pub(crate) id: Option<Range<usize>>,
    /// The span of the raw progress token (`params._meta.progressToken`).
    pub(crate) progress_token: Option<Range<usize>>,
}

impl Fields<'_> {
    /// The owned part of these fields the mux needs to take the request.
    pub(crate) fn request_spans(&self) -> RequestSpans {
        RequestSpans {
            method: self.method.as_deref().map(Box::from),
            id: self.id.as_ref().map(|(_, span)| span.clone()),
            progress_token: self.progress_token.as_ref().map(|(_, span)| span.clone()),
        }
    }
}

/// Why a message cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WireError {
    #[error("the body is not one JSON-RPC message: {0}")]
    Invalid(String),
}

/// Reads the fields of `msg` (a JSON object) in one pass.
pub(crate) fn fields(msg: &[u8]) -> Result<Fields<'_>, WireError> {
    if msg.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(WireError::Invalid("expected a JSON object".into()));
    }
    let p: Probe<'_> =
        serde_json::from_slice(msg).map_err(|e| WireError::Invalid(e.to_string()))?;
    // `params` and `result` are read only when they are objects (a struct would take an array).
    let params: Option<Params<'_>> = match object(p.params) {
        Some(raw) => {
            Some(serde_json::from_str(raw.get()).map_err(|e| WireError::Invalid(e.to_string()))?)
        }
        None if p.params.is_some_and(|r| r.get() != "null") => {
            return Err(WireError::Invalid("params must be an object".into()))
        }
        None => None,
    };
    let result: Option<Params<'_>> =
        object(p.result).and_then(|raw| serde_json::from_str(raw.get()).ok());
    let mut f = Fields {
        method: p.method,
        id: p.id.filter(|r| r.get() != "null").map(|r| span_of(msg, r)),
        is_response: p.result.is_some() || p.error.is_some(),
        ..Fields::default()
    };
    if let Some(params) = &params {
        let name = params
            .uri
            .map(|u| (u, true))
            .or(params.name.map(|n| (n, false)));
        if let Some((raw, is_uri)) = name {
            f.name = serde_json::from_str::<Cow<'_, str>>(raw.get()).ok();
            f.name_is_uri = is_uri;
        }
        f.cancelled = params.request_id.map(RawValue::get);
        if let Some(meta) = &params.meta {
            f.has_version = meta.version.is_some();
            f.version = meta
                .version
                .and_then(|v| serde_json::from_str::<Cow<'_, str>>(v.get()).ok());
            f.progress_token = meta.progress_token.map(|r| span_of(msg, r));
            f.subscription = meta.subscription.map(|r| span_of(msg, r));
        }
        if f.progress_token.is_none() {
            f.progress_token = params.progress_token.map(|r| span_of(msg, r));
        }
    }
    if let Some(meta) = result.as_ref().and_then(|r| r.meta.as_ref()) {
        f.subscription = f
            .subscription
            .or(meta.subscription.map(|r| span_of(msg, r)));
    }
    Ok(f)
}

/// A raw JSON id (as [`Fields::id`] holds it) as a normalized JSON-RPC id.
pub(crate) fn to_id(raw: &str) -> Option<shared::jsonrpc::Id> {
    RawValue::from_string(raw.to_owned())
        .ok()
        .and_then(|r| shared::jsonrpc::Id::from_raw(&r))
}

/// `raw` when it is a JSON object.
fn object(raw: Option<&RawValue>) -> Option<&RawValue> {
    raw.filter(|r| r.get().starts_with('{'))
}

/// `raw` (borrowed from `msg`) and where in `msg` its bytes are.
fn span_of<'a>(msg: &[u8], raw: &'a RawValue) -> (&'a str, Range<usize>) {
    let text = raw.get();
    let start = (text.as_ptr() as usize).saturating_sub(msg.as_ptr() as usize);
    (text, start..start + text.len())
}

/// `msg` with each span replaced by its text (spans must not overlap).
pub(crate) fn splice(msg: &[u8], mut edits: Vec<(Range<usize>, &str)>) -> Bytes {
    edits.sort_by_key(|(r, _)| r.start);
    let mut out = BytesMut::with_capacity(msg.len() + 16);
    let mut at = 0;
    for (r, text) in edits {
        if r.start < at || r.end > msg.len() {
            continue;
        }
        out.put_slice(&msg[at..r.start]);
        out.put_slice(text.as_bytes());
        at = r.end;
    }
    out.put_slice(&msg[at..]);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_gives_its_fields_and_spans() {
        let msg = br#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"t","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","progressToken":7}}}"#;
        let f = fields(msg).expect("fields");
        assert_eq!(f.method.as_deref(), Some("tools/call"));
        let (id, span) = f.id.clone().expect("id");
        assert_eq!(id, r#""a""#);
        assert_eq!(&msg[span.clone()], br#""a""#);
        assert_eq!(f.name.as_deref(), Some("t"));
        assert_eq!(f.version.as_deref(), Some("2026-07-28"));
        let (tok, tspan) = f.progress_token.clone().expect("token");
        assert_eq!(tok, "7");
        let out = splice(msg, vec![(tspan, "42"), (span, "9")]);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["id"], 9);
        assert_eq!(v["params"]["_meta"]["progressToken"], 42);
        assert_eq!(v["params"]["name"], "t");
    }

    #[test]
    fn notifications_and_results_give_their_subscription_and_token() {
        let n = br#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed","params":{"_meta":{"io.modelcontextprotocol/subscriptionId":3}}}"#;
        let f = fields(n).expect("fields");
        assert_eq!(f.subscription.as_ref().map(|s| s.0), Some("3"));
        assert!(f.id.is_none());
        let r = br#"{"jsonrpc":"2.0","id":3,"result":{"_meta":{"io.modelcontextprotocol/subscriptionId":3}}}"#;
        let f = fields(r).expect("fields");
        assert!(f.is_response);
        assert_eq!(f.subscription.as_ref().map(|s| s.0), Some("3"));
        let p = br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"x","progress":1}}"#;
        assert_eq!(
            fields(p).expect("p").progress_token.map(|t| t.0),
            Some(r#""x""#)
        );
        let c = br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":5}}"#;
        assert_eq!(fields(c).expect("c").cancelled, Some("5"));
    }

    #[test]
    fn a_uri_is_the_name_of_a_read_and_escapes_are_undone() {
        let msg = br#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///a\u0020b"}}"#;
        let f = fields(msg).expect("fields");
        assert_eq!(f.name.as_deref(), Some("file:///a b"));
        assert!(f.name_is_uri);
    }

    #[test]
    fn duplicate_keys_and_non_objects_are_refused() {
        assert!(fields(br#"{"id":1,"id":2,"method":"x"}"#).is_err());
        assert!(fields(br#"[1]"#).is_err());
        assert!(fields(br#"{"id":1,"method":"x","params":"p"}"#).is_err());
    }
}

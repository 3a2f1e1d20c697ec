//! Light JSON-RPC 2.0 classification and the error responses the bridge itself writes.
//!
//! A message is parsed only far enough to learn its kind, id and method (borrowing from the
//! input, no body re-serialization); the bytes are forwarded as they came. This module does not
//! route or track anything.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

mod batch;
mod head;
mod params;

pub use batch::{
    batch_error_response, batch_reply, batch_request_ids, BatchReply, BATCH_UNSUPPORTED,
};
pub use head::{scan_head, HeadInfo};
use params::ParamsName;

/// Invalid JSON was received.
pub const PARSE_ERROR: i64 = -32700;
/// The JSON sent is not a valid request object (also: too large, or a batch).
pub const INVALID_REQUEST: i64 = -32600;
/// The method does not exist or is not available.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// Invalid method parameters.
pub const INVALID_PARAMS: i64 = -32602;
/// Internal error.
pub const INTERNAL_ERROR: i64 = -32603;
/// The tool process exited or crashed before it answered.
pub const TOOL_EXITED: i64 = -32010;
/// The connection to the relay was lost or could not be made; the request's fate is unknown.
pub const RELAY_UNAVAILABLE: i64 = -32011;
/// A message exceeded the bridge's size limit.
pub const MESSAGE_TOO_LARGE: i64 = -32012;
/// Too many requests in flight on one session; wait for answers, then send again.
pub const TOO_MANY_REQUESTS: i64 = -32013;
/// HeaderMismatch (MCP 2026-07-28): the HTTP headers of a request do not match its body.
pub const HEADER_MISMATCH: i64 = -32020;

/// A JSON-RPC id, normalized so that it can key a table of requests in flight.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Id {
    /// A number, as written (`7`, `-1`, `1.5`).
    Num(Box<str>),
    /// A string, unescaped.
    Str(Box<str>),
}

impl Id {
    /// Normalizes a raw JSON id; `None` for `null` and for anything that is not a string or number.
    pub fn from_raw(raw: &RawValue) -> Option<Id> {
        let text = raw.get();
        match text.as_bytes().first()? {
            b'"' => serde_json::from_str::<Cow<'_, str>>(text)
                .ok()
                .map(|s| Id::Str(s.into())),
            b'-' | b'0'..=b'9' => Some(Id::Num(text.into())),
            _ => None,
        }
    }

    /// The id as a JSON value, ready to put into a response.
    pub fn to_json(&self) -> Option<Box<RawValue>> {
        match self {
            Id::Num(n) => RawValue::from_string(n.to_string()).ok(),
            Id::Str(s) => serde_json::value::to_raw_value(s).ok(),
        }
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Id::Num(n) => f.write_str(n),
            Id::Str(s) => write!(f, "{s:?}"),
        }
    }
}

/// What a single JSON-RPC message is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind<'a> {
    /// Has a method and an id: expects exactly one response.
    Request { id: Id, method: Cow<'a, str> },
    /// Has a method and no id.
    Notification { method: Cow<'a, str> },
    /// Has a result or an error. `id` is `None` for `"id": null`.
    Response {
        /// The request answered.
        id: Option<Id>,
        /// Whether it is an error response.
        is_error: bool,
    },
}

/// Why a line is not a forwardable JSON-RPC message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClassifyError {
    /// Not JSON at all (or not UTF-8).
    #[error("not valid JSON: {0}")]
    Parse(String),
    /// A JSON array: a JSON-RPC batch, which MCP no longer allows and the bridge does not forward.
    #[error("JSON-RPC batches are not supported")]
    Batch,
    /// JSON, but not a JSON-RPC request, notification or response.
    #[error("not a JSON-RPC message: {0}")]
    Invalid(&'static str),
}

#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "present")]
    result: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    error: Option<&'a RawValue>,
    #[serde(default, borrow)]
    params: ParamsName<'a>,
}

/// Deserializes a field that is present (even as `null`) into `Some`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Classifies one message. Validates that the whole input is JSON; allocates only for an id.
pub fn classify(msg: &[u8]) -> Result<Kind<'_>, ClassifyError> {
    classify_full(msg).map(|c| c.kind)
}

/// A message's kind and, for a `tools/call` request, the tool it calls: both learned in one
/// parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified<'a> {
    /// What the message is.
    pub kind: Kind<'a>,
    /// The `params.name` of a `tools/call` request when it is a string; `None` for anything
    /// else.
    pub tool_name: Option<Cow<'a, str>>,
}

/// Classifies one message as [`classify`] does, also picking up the tool name of a
/// `tools/call` request in the same pass (for audit logs).
pub fn classify_full(msg: &[u8]) -> Result<Classified<'_>, ClassifyError> {
    let first = msg.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        Some(b'{') => {}
        Some(b'[') => {
            return match serde_json::from_slice::<&RawValue>(msg) {
                Ok(_) => Err(ClassifyError::Batch),
                Err(e) => Err(ClassifyError::Parse(e.to_string())),
            }
        }
        _ => {
            return match serde_json::from_slice::<serde::de::IgnoredAny>(msg) {
                Ok(_) => Err(ClassifyError::Invalid("expected a JSON object")),
                Err(e) => Err(ClassifyError::Parse(e.to_string())),
            }
        }
    }
    let mut probe: Probe<'_> = serde_json::from_slice(msg).map_err(|e| {
        if e.is_data() {
            ClassifyError::Invalid("a field has the wrong type")
        } else {
            ClassifyError::Parse(e.to_string())
        }
    })?;
    let name = probe.params.0.take();
    let kind = kind_of(probe)?;
    let tool_name = match &kind {
        Kind::Request { method, .. } if method == "tools/call" => name,
        _ => None,
    };
    Ok(Classified { kind, tool_name })
}

fn kind_of(probe: Probe<'_>) -> Result<Kind<'_>, ClassifyError> {
    match (probe.method, probe.id) {
        (Some(method), Some(raw)) => match Id::from_raw(raw) {
            Some(id) => Ok(Kind::Request { id, method }),
            None if raw.get() == "null" => Err(ClassifyError::Invalid("a request id is null")),
            None => Err(ClassifyError::Invalid("an id must be a string or a number")),
        },
        (Some(method), None) => Ok(Kind::Notification { method }),
        (None, id) if probe.result.is_some() || probe.error.is_some() => Ok(Kind::Response {
            id: id.and_then(Id::from_raw),
            is_error: probe.error.is_some(),
        }),
        (None, _) => Err(ClassifyError::Invalid("no method, result or error member")),
    }
}

/// The `params.requestId` of a `notifications/cancelled` message.
pub fn cancelled_request_id(msg: &[u8]) -> Option<Id> {
    #[derive(Deserialize)]
    struct Cancelled<'a> {
        #[serde(borrow)]
        params: CancelledParams<'a>,
    }
    #[derive(Deserialize)]
    struct CancelledParams<'a> {
        #[serde(borrow, rename = "requestId")]
        request_id: &'a RawValue,
    }
    let c: Cancelled<'_> = serde_json::from_slice(msg).ok()?;
    Id::from_raw(c.params.request_id)
}

#[derive(Serialize)]
struct ErrorResponse<'a> {
    jsonrpc: &'static str,
    /// `None` serializes as `null`.
    id: Option<Box<RawValue>>,
    error: ErrorObject<'a>,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    code: i64,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a serde_json::Value>,
}

/// A JSON-RPC error response, serialized on one line. `id` `None` writes `"id": null`.
pub fn error_response(
    id: Option<&Id>,
    code: i64,
    message: &str,
    data: Option<&serde_json::Value>,
) -> Vec<u8> {
    let resp = ErrorResponse {
        jsonrpc: "2.0",
        id: id.and_then(Id::to_json),
        error: ErrorObject {
            code,
            message,
            data,
        },
    };
    serde_json::to_vec(&resp).unwrap_or_else(|_| {
        br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"internal error"}}"#
            .to_vec()
    })
}

/// The `error.code` of an error response (of the first one, for a batch of them); `None` when
/// the message is not an error response or its code is not an integer. For counting errors
/// and telling error answers apart only: it parses the message, so keep it off the path of
/// ordinary messages.
pub fn error_code(msg: &[u8]) -> Option<i64> {
    #[derive(Deserialize)]
    struct Code {
        code: i64,
    }
    #[derive(Deserialize)]
    struct WithError {
        error: Code,
    }
    if msg.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        let all: Vec<&RawValue> = serde_json::from_slice(msg).ok()?;
        return error_code(all.first()?.get().as_bytes());
    }
    serde_json::from_slice::<WithError>(msg)
        .ok()
        .map(|e| e.error.code)
}

/// Who must hear about a message that was too large to forward, and what they get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Oversize {
    /// It was a request: its sender is waiting, and gets `error` (a -32012 response).
    Request {
        /// The request's id.
        id: Id,
        /// The error response to send back to the sender.
        error: Vec<u8>,
    },
    /// It was a response: the side that asked is waiting, and gets `error` instead.
    Response {
        /// The id of the request it answered.
        id: Id,
        /// The error response to deliver in its place.
        error: Vec<u8>,
    },
    /// A notification, or nothing recognizable: nobody waits for it.
    Other,
}

/// Decides, from the head of a message too large to forward, who gets a
/// [`MESSAGE_TOO_LARGE`] error saying `message`.
pub fn oversize(head: &[u8], message: &str) -> Oversize {
    let info = scan_head(&head[..head.len().min(crate::framing::OVERSIZE_HEAD)]);
    match info.id {
        Some(id) => {
            let error = error_response(Some(&id), MESSAGE_TOO_LARGE, message, None);
            if info.is_response {
                Oversize::Response { id, error }
            } else {
                Oversize::Request { id, error }
            }
        }
        None => Oversize::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_code_of_error_responses_only() {
        let e = error_response(Some(&Id::Num("3".into())), TOOL_EXITED, "gone", None);
        assert_eq!(error_code(&e), Some(TOOL_EXITED));
        assert_eq!(
            error_code(br#"{"jsonrpc":"2.0","id":1,"error":{"code":7,"message":"x","data":[1]}}"#),
            Some(7)
        );
        assert_eq!(
            error_code(br#" [{"jsonrpc":"2.0","id":1,"error":{"code":-32600,"message":"x"}}]"#),
            Some(INVALID_REQUEST)
        );
        assert_eq!(error_code(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#), None);
        assert_eq!(
            error_code(br#"{"jsonrpc":"2.0","id":1,"error":{"code":"x"}}"#),
            None
        );
        assert_eq!(error_code(b"not json"), None);
    }
    use proptest::prelude::*;

    #[test]
    fn classifies_the_four_shapes() {
        assert_eq!(
            classify(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#),
            Ok(Kind::Request {
                id: Id::Num("1".into()),
                method: "tools/list".into()
            })
        );
        assert_eq!(
            classify(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            Ok(Kind::Notification {
                method: "notifications/initialized".into()
            })
        );
        assert_eq!(
            classify(br#"{"jsonrpc":"2.0","id":"a\u0062","result":null}"#),
            Ok(Kind::Response {
                id: Some(Id::Str("ab".into())),
                is_error: false,
            })
        );
        assert_eq!(
            classify(br#"{"jsonrpc":"2.0","id":null,"error":{"code":-1,"message":"x"}}"#),
            Ok(Kind::Response {
                id: None,
                is_error: true
            })
        );
        assert_eq!(classify(br#"[{"id":1}]"#), Err(ClassifyError::Batch));
        assert!(matches!(classify(b"{nope"), Err(ClassifyError::Parse(_))));
        assert!(matches!(classify(b"hello"), Err(ClassifyError::Parse(_))));
        assert!(matches!(classify(b"42"), Err(ClassifyError::Invalid(_))));
        assert!(matches!(
            classify(br#"{"jsonrpc":"2.0"}"#),
            Err(ClassifyError::Invalid(_))
        ));
    }

    #[test]
    fn error_response_echoes_the_id() {
        let id = Id::Str("q\"1".into());
        let out = error_response(Some(&id), PARSE_ERROR, "bad", None);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["id"], "q\"1");
        assert_eq!(v["error"]["code"], PARSE_ERROR);
        let out = error_response(None, PARSE_ERROR, "bad", None);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert!(v["id"].is_null());
    }

    #[test]
    fn oversize_routes_the_error_to_whoever_waits() {
        let req = oversize(
            br#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"x":"aaaa"#,
            "big",
        );
        assert!(matches!(req, Oversize::Request { id: Id::Num(ref n), .. } if &**n == "4"));
        let resp = oversize(
            br#"{"jsonrpc":"2.0","id":"s1","result":{"content":"aaaa"#,
            "big",
        );
        match resp {
            Oversize::Response { id, error } => {
                assert_eq!(id, Id::Str("s1".into()));
                let v: serde_json::Value = serde_json::from_slice(&error).expect("json");
                assert_eq!(v["error"]["code"], MESSAGE_TOO_LARGE);
                assert_eq!(v["error"]["message"], "big");
            }
            other => panic!("expected a response, got {other:?}"),
        }
        assert_eq!(
            oversize(
                br#"{"jsonrpc":"2.0","method":"notifications/x","params":"#,
                "big"
            ),
            Oversize::Other
        );
    }

    #[test]
    fn cancelled_id_is_found() {
        let msg = br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"7","reason":"x"}}"#;
        assert_eq!(cancelled_request_id(msg), Some(Id::Str("7".into())));
        assert_eq!(cancelled_request_id(br#"{"method":"x"}"#), None);
    }

    #[test]
    fn the_tool_name_comes_with_the_classification() {
        let c = classify_full(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{"name":"no","x":[1,{"name":2}]},"name":"ech\u006f"}}"#,
        )
        .expect("request");
        assert_eq!(c.tool_name.as_deref(), Some("echo"));
        for msg in [
            &br#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"p"}}"#[..],
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["echo"]}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":7}}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":null}"#,
            br#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"n"}}"#,
        ] {
            let c = classify_full(msg).expect("valid");
            assert_eq!(c.tool_name, None, "{}", String::from_utf8_lossy(msg));
        }
    }

    proptest! {
        #[test]
        fn classify_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = classify(&bytes);
            let _ = scan_head(&bytes);
            let _ = batch_request_ids(&bytes);
            let _ = batch_reply(&bytes, INVALID_REQUEST, "x", 100);
        }
    }
}

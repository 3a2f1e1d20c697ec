//! Light JSON-RPC 2.0 classification and the error responses the bridge itself writes.
//!
//! A message is parsed only far enough to learn its kind, id and method (borrowing from the
//! input, no body re-serialization); the bytes are forwarded as they came. This module does not
//! route or track anything.

use std::borrow::Cow;
use std::fmt;

use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

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

/// The `name` member of `params`, if `params` is an object with a string `name`; anything else
/// in `params` is skipped without being kept.
#[derive(Default)]
struct ParamsName<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for ParamsName<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Params<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Params<'a> {
            type Value = ParamsName<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut name = None;
                while let Some(IsName(is_name)) = map.next_key()? {
                    if is_name && name.is_none() {
                        name = map.next_value::<MaybeStr<'de>>()?.0;
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(ParamsName(name))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(ParamsName(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(ParamsName(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(ParamsName(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(ParamsName(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(ParamsName(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(ParamsName(None))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(ParamsName(None))
            }
        }
        d.deserialize_any(Params(std::marker::PhantomData))
    }
}

/// Whether an object key is `name` (escaped or not), without keeping the key.
struct IsName(bool);

impl<'de> Deserialize<'de> for IsName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Key;
        impl Visitor<'_> for Key {
            type Value = IsName;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E>(self, v: &str) -> Result<IsName, E> {
                Ok(IsName(v == "name"))
            }
        }
        d.deserialize_str(Key)
    }
}

/// A string (borrowed when it has no escapes), or `None` for any other JSON value.
struct MaybeStr<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for MaybeStr<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Str<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Str<'a> {
            type Value = MaybeStr<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(MaybeStr(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(MaybeStr(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(MaybeStr(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(MaybeStr(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(MaybeStr(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(MaybeStr(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(MaybeStr(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(MaybeStr(None))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(MaybeStr(None))
            }
        }
        d.deserialize_any(Str(std::marker::PhantomData))
    }
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

/// The `params.name` of a `tools/call` request (for audit logs); `None` for anything else.
/// This parses the message again: [`classify_full`] learns it in the same pass as the kind.
pub fn tool_call_name(msg: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Call<'a> {
        #[serde(borrow)]
        params: CallParams<'a>,
    }
    #[derive(Deserialize)]
    struct CallParams<'a> {
        #[serde(borrow)]
        name: Cow<'a, str>,
    }
    let c: Call<'_> = serde_json::from_slice(msg).ok()?;
    Some(c.params.name.into_owned())
}

/// The ids of the requests inside a batch (so each can be answered with an error).
pub fn batch_request_ids(msg: &[u8]) -> Vec<Id> {
    let items: Vec<&RawValue> = serde_json::from_slice(msg).unwrap_or_default();
    items
        .into_iter()
        .filter_map(|item| match classify(item.get().as_bytes()) {
            Ok(Kind::Request { id, .. }) => Some(id),
            _ => None,
        })
        .collect()
}

/// The answer to a JSON-RPC batch, from [`batch_reply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchReply {
    /// How many requests the batch holds (notifications and responses need no answer).
    pub requests: usize,
    /// One error per request, as a JSON array; `None` when there is no request, or when the
    /// array would be larger than the cap it was built with.
    pub errors: Option<Vec<u8>>,
}

/// Answers a batch with one error per request inside, as a JSON array of at most `cap` bytes.
///
/// The batch is read one element at a time and the array is written as it goes: neither the
/// batch's ids nor its elements are collected, and the array is dropped as soon as it would
/// pass `cap` (the requests are still counted). Input that is not a JSON array holds no request.
pub fn batch_reply(msg: &[u8], code: i64, message: &str, cap: usize) -> BatchReply {
    struct Batch<'m> {
        code: i64,
        message: &'m str,
        cap: usize,
    }
    impl<'de> Visitor<'de> for Batch<'_> {
        type Value = BatchReply;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON array")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<BatchReply, A::Error> {
            let mut requests = 0;
            let mut out = Some(Vec::new());
            while let Some(item) = seq.next_element::<&'de RawValue>()? {
                let Ok(Kind::Request { id, .. }) = classify(item.get().as_bytes()) else {
                    continue;
                };
                requests += 1;
                let Some(buf) = out.as_mut() else { continue };
                buf.push(if requests == 1 { b'[' } else { b',' });
                buf.extend_from_slice(&error_response(Some(&id), self.code, self.message, None));
                if buf.len() + 1 > self.cap {
                    out = None;
                }
            }
            let errors = out.filter(|_| requests > 0).map(|mut buf| {
                buf.push(b']');
                buf
            });
            Ok(BatchReply { requests, errors })
        }
    }
    let mut de = serde_json::Deserializer::from_slice(msg);
    serde::Deserializer::deserialize_seq(&mut de, Batch { code, message, cap }).unwrap_or(
        BatchReply {
            requests: 0,
            errors: None,
        },
    )
}

/// The error message for a JSON-RPC batch, which the bridge answers instead of forwarding.
pub const BATCH_UNSUPPORTED: &str = "JSON-RPC batches are not supported (MCP removed them in \
     2025-06-18): send each message on its own line";

/// One error response per id, as a JSON array (the JSON-RPC answer to a batch).
pub fn batch_error_response(ids: &[Id], code: i64, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(ids.len() * (message.len() + 64) + 2);
    out.push(b'[');
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&error_response(Some(id), code, message, None));
    }
    out.push(b']');
    out
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

/// What could be learned from the first bytes of a message too large to parse whole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeadInfo {
    /// The top-level `id`, if it appears within the head.
    pub id: Option<Id>,
    /// Whether a top-level `method` member appears within the head.
    pub has_method: bool,
    /// Whether a top-level `result` or `error` member appears within the head.
    pub is_response: bool,
}

/// Scans the head of a (possibly truncated) JSON object for its top-level `id`, `method`,
/// `result` and `error` members. Never fails: what cannot be seen stays unknown.
pub fn scan_head(head: &[u8]) -> HeadInfo {
    let mut info = HeadInfo::default();
    let mut s = Scanner { b: head, i: 0 };
    s.ws();
    if !s.eat(b'{') {
        return info;
    }
    loop {
        s.ws();
        let Some(key) = s.string() else {
            return info;
        };
        s.ws();
        if !s.eat(b':') {
            return info;
        }
        s.ws();
        match key.as_ref() {
            "method" => info.has_method = true,
            "result" | "error" => info.is_response = true,
            _ => {}
        }
        let start = s.i;
        if !s.skip_value() {
            return info;
        }
        if key == "id" {
            info.id = std::str::from_utf8(&head[start..s.i])
                .ok()
                .and_then(|t| serde_json::from_str::<&RawValue>(t).ok())
                .and_then(Id::from_raw);
        }
        s.ws();
        if !s.eat(b',') {
            return info;
        }
    }
}

/// A forgiving cursor over JSON bytes; each method returns false/None on anything unexpected.
struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    fn ws(&mut self) {
        while self.b.get(self.i).is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// Skips a string starting at `"`; returns its raw end position.
    fn skip_string(&mut self) -> bool {
        if !self.eat(b'"') {
            return false;
        }
        while let Some(&c) = self.b.get(self.i) {
            self.i += 1;
            match c {
                b'\\' => self.i += 1,
                b'"' => return true,
                _ => {}
            }
        }
        false
    }

    fn string(&mut self) -> Option<Cow<'static, str>> {
        let start = self.i;
        if !self.skip_string() {
            return None;
        }
        let raw = std::str::from_utf8(&self.b[start..self.i]).ok()?;
        serde_json::from_str::<Cow<'_, str>>(raw)
            .ok()
            .map(|c| Cow::Owned(c.into_owned()))
    }

    fn skip_value(&mut self) -> bool {
        match self.b.get(self.i) {
            Some(b'"') => self.skip_string(),
            Some(b'{') | Some(b'[') => {
                let mut depth = 0usize;
                while let Some(&c) = self.b.get(self.i) {
                    match c {
                        b'"' => {
                            if !self.skip_string() {
                                return false;
                            }
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.i += 1;
                                return true;
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
                false
            }
            Some(_) => {
                let start = self.i;
                while self
                    .b
                    .get(self.i)
                    .is_some_and(|c| !matches!(c, b',' | b'}' | b']') && !c.is_ascii_whitespace())
                {
                    self.i += 1;
                }
                // A scalar cut off by the end of the head is not trusted.
                self.i > start && self.i < self.b.len()
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
    fn batch_errors_form_an_array() {
        let out = batch_error_response(
            &[Id::Num("1".into()), Id::Str("b".into())],
            INVALID_REQUEST,
            "no",
        );
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v[0]["id"], 1);
        assert_eq!(v[1]["id"], "b");
    }

    #[test]
    fn batch_ids_are_found() {
        let ids = batch_request_ids(
            br#"[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","method":"n"},{"jsonrpc":"2.0","id":"x","method":"b"}]"#,
        );
        assert_eq!(ids, vec![Id::Num("1".into()), Id::Str("x".into())]);
    }

    #[test]
    fn batch_reply_is_capped_and_counts_every_request() {
        let batch = br#"[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","method":"n"},{"jsonrpc":"2.0","id":"x","method":"b"}]"#;
        let r = batch_reply(batch, INVALID_REQUEST, "no", 1 << 20);
        assert_eq!(r.requests, 2);
        let v: serde_json::Value =
            serde_json::from_slice(&r.errors.expect("errors")).expect("json");
        assert_eq!(v[0]["id"], 1);
        assert_eq!(v[1]["id"], "x");
        let r = batch_reply(batch, INVALID_REQUEST, "no", 80);
        assert_eq!((r.requests, r.errors), (2, None), "over the cap");
        let r = batch_reply(
            br#"[{"jsonrpc":"2.0","method":"n"}]"#,
            INVALID_REQUEST,
            "no",
            1000,
        );
        assert_eq!((r.requests, r.errors), (0, None));
        let r = batch_reply(b"[1,", INVALID_REQUEST, "no", 1000);
        assert_eq!(r.requests, 0);
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

    #[test]
    fn head_scan_finds_id_before_a_cut() {
        let head = br#"{"jsonrpc":"2.0","method":"tools/call","params":{"a":[1,{"id":9}]},"id":"r-7","x":"aaaaaaaa"#;
        let info = scan_head(head);
        assert_eq!(info.id, Some(Id::Str("r-7".into())));
        assert!(info.has_method);
        assert!(!info.is_response);
        let info = scan_head(br#"{"id":12"#);
        assert_eq!(info.id, None, "a number cut at the end is not trusted");
        let info = scan_head(br#"{"jsonrpc":"2.0","id":12,"result":{"content":"xxxx"#);
        assert_eq!(info.id, Some(Id::Num("12".into())));
        assert!(info.is_response);
    }

    proptest! {
        #[test]
        fn classify_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = classify(&bytes);
            let _ = scan_head(&bytes);
            let _ = batch_request_ids(&bytes);
            let _ = batch_reply(&bytes, INVALID_REQUEST, "x", 100);
        }

        #[test]
        fn head_scan_agrees_with_full_parse(id in 0u64..1_000_000, s in "[a-z]{0,20}") {
            let msg = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"m","params":{{"s":"{s}"}}}}"#);
            let info = scan_head(msg.as_bytes());
            prop_assert_eq!(info.id, Some(Id::Num(id.to_string().into())));
            let cut = &msg.as_bytes()[..msg.len() / 2];
            let _ = scan_head(cut);
        }
    }
}

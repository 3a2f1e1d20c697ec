//! JSON-RPC batches, which the bridge answers instead of forwarding: one error per request
//! inside, written while the batch is read.

use std::fmt;

use serde::de::{SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::{classify, error_response, Id, Kind};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsonrpc::INVALID_REQUEST;

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
}

//! The one ingress policy: what to do with a message from a peer that is not a bridge (the
//! IDE's stdin, a WebSocket MCP client, a tool's stdout).
//!
//! Each message is classified here once; the classification travels with its bytes as a
//! [`Msg`], so nothing downstream parses it again. Malformed, oversize, batch and
//! non-JSON-RPC input becomes either an error reply (for whoever waits for an answer) or
//! nothing, never a forwarded message. This module decides; it queues and writes nothing.

use bytes::Bytes;

use crate::framing::Frame;
use crate::jsonrpc::{self, Classified, ClassifyError, Id, Kind, Oversize};

/// Longest method name kept with a message (for the table of calls in flight and for logs);
/// the message's bytes are forwarded whole, whatever the length.
pub const METHOD_KEEP: usize = 128;

/// Who sent the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// The MCP client side (the IDE, a WebSocket client): malformed input is answered with a
    /// JSON-RPC error, as a server would.
    Client,
    /// The MCP server side (a tool's stdout): a line that is not JSON-RPC is skipped (tools
    /// print banners), never answered.
    Server,
}

/// A JSON-RPC message with what the bridge needs to know about it, learned once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    /// The message, exactly as it came.
    pub bytes: Bytes,
    /// What it is.
    pub kind: MsgKind,
}

/// The kind of a message, owning what it keeps (method names cut at [`METHOD_KEEP`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MsgKind {
    /// Expects one response.
    Request {
        /// Its id.
        id: Id,
        /// Its method (cut at [`METHOD_KEEP`] bytes).
        method: Box<str>,
        /// For `tools/call`: the tool it calls (its `params.name`, cut at [`METHOD_KEEP`]
        /// bytes), for audit logs.
        tool_name: Option<Box<str>>,
    },
    /// Expects nothing.
    Notification {
        /// Its method (cut at [`METHOD_KEEP`] bytes).
        method: Box<str>,
    },
    /// Answers a request.
    Response {
        /// The request answered (`None` for `"id": null`).
        id: Option<Id>,
        /// Whether it is an error.
        is_error: bool,
    },
}

impl Msg {
    /// Classifies a well-formed JSON-RPC message (`None` if it is not one).
    pub fn classify(bytes: Bytes) -> Option<Msg> {
        Msg::try_classify(bytes).ok()
    }

    /// Classifies a message, or says why it is not a forwardable JSON-RPC message.
    pub fn try_classify(bytes: Bytes) -> Result<Msg, (Bytes, ClassifyError)> {
        let kind = match jsonrpc::classify_full(&bytes) {
            Ok(Classified { kind, tool_name }) => match kind {
                Kind::Request { id, method } => MsgKind::Request {
                    id,
                    method: cut(&method),
                    tool_name: tool_name.map(|n| cut(&n)),
                },
                Kind::Notification { method } => MsgKind::Notification {
                    method: cut(&method),
                },
                Kind::Response { id, is_error } => MsgKind::Response { id, is_error },
            },
            Err(e) => return Err((bytes, e)),
        };
        Ok(Msg { bytes, kind })
    }

    /// The tool a `tools/call` request calls.
    pub fn tool_name(&self) -> Option<&str> {
        match &self.kind {
            MsgKind::Request { tool_name, .. } => tool_name.as_deref(),
            _ => None,
        }
    }

    /// The method of a request or notification.
    pub fn method(&self) -> Option<&str> {
        match &self.kind {
            MsgKind::Request { method, .. } | MsgKind::Notification { method } => Some(method),
            MsgKind::Response { .. } => None,
        }
    }

    /// The id of a request.
    pub fn request_id(&self) -> Option<&Id> {
        match &self.kind {
            MsgKind::Request { id, .. } => Some(id),
            _ => None,
        }
    }
}

/// `s` cut at [`METHOD_KEEP`] bytes on a character boundary.
fn cut(s: &str) -> Box<str> {
    let mut end = s.len().min(METHOD_KEEP);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].into()
}

/// What to do with one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingress {
    /// Forward it.
    Forward(Msg),
    /// Do not forward it; send this error back to its sender (its request gets an answer).
    ReplyToSender(Bytes),
    /// Do not forward it; it was a response too large to forward, so the side that asked gets
    /// this error in its place.
    ReplyToOther {
        /// The request the error answers.
        id: Id,
        /// The error response.
        error: Bytes,
    },
    /// Drop it: nobody waits for it.
    Drop,
}

/// Why a message was not forwarded, for one log line (peer text already escaped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What kind of problem it was.
    pub kind: RefusalKind,
    /// What was wrong, in words.
    pub what: String,
}

/// The kinds of message the policy does not forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// Larger than the limit.
    Oversize,
    /// Not JSON, or JSON but not a JSON-RPC message.
    Malformed,
    /// A JSON-RPC batch.
    Batch,
}

/// The policy's decision and, when it refused the message, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// What to do.
    pub action: Ingress,
    /// Why it was not forwarded (`None` when it is).
    pub refusal: Option<Refusal>,
}

/// Decides what to do with one unit read from a peer: a complete line (or WebSocket message)
/// or the head of an oversize one. `max` is the size limit that applies; `limit_name` names
/// it in the error ("bridge-client's limit (raise it with --max-message-size)", …).
pub fn decide(frame: Frame, from: Peer, max: usize, limit_name: &str) -> Decision {
    let (bytes, len) = match frame {
        Frame::Line(b) if b.len() <= max => (b, None),
        Frame::Line(b) => {
            let len = b.len();
            (b, Some(len))
        }
        Frame::Oversize { head, len } => (head, Some(len)),
    };
    if let Some(len) = len {
        return oversize(&bytes, len, max, limit_name);
    }
    match Msg::try_classify(bytes) {
        Ok(msg) => Decision {
            action: Ingress::Forward(msg),
            refusal: None,
        },
        Err((bytes, ClassifyError::Batch)) => batch(&bytes, from, max),
        Err((bytes, e)) => {
            let what = format!("{e}");
            let action = match from {
                Peer::Server => Ingress::Drop,
                Peer::Client => {
                    let code = match e {
                        ClassifyError::Parse(_) => jsonrpc::PARSE_ERROR,
                        _ => jsonrpc::INVALID_REQUEST,
                    };
                    let id = jsonrpc::scan_head(&bytes).id;
                    Ingress::ReplyToSender(Bytes::from(jsonrpc::error_response(
                        id.as_ref(),
                        code,
                        &what,
                        None,
                    )))
                }
            };
            let what = match from {
                // Say what the tool printed (its first bytes), so a banner is recognisable.
                Peer::Server => format!(
                    "{what}: {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                ),
                Peer::Client => what,
            };
            Decision {
                action,
                refusal: Some(Refusal {
                    kind: RefusalKind::Malformed,
                    what: crate::log_safe(&what).into_owned(),
                }),
            }
        }
    }
}

fn oversize(head: &[u8], len: usize, max: usize, limit_name: &str) -> Decision {
    let message = format!(
        "message of {} exceeds {limit_name} of {}",
        crate::human_bytes(len),
        crate::human_bytes(max)
    );
    let action = match jsonrpc::oversize(head, &message) {
        Oversize::Request { error, .. } => Ingress::ReplyToSender(Bytes::from(error)),
        Oversize::Response { id, error } => Ingress::ReplyToOther {
            id,
            error: Bytes::from(error),
        },
        Oversize::Other => Ingress::Drop,
    };
    Decision {
        action,
        refusal: Some(Refusal {
            kind: RefusalKind::Oversize,
            what: message,
        }),
    }
}

/// A batch is never forwarded. Each request in it is answered with an error, in one array;
/// when that answer would be larger than `max`, or more than four times the batch (at least
/// 4 KiB), one error with a null id says so instead. The answer is built while the batch is
/// read, never larger than that bound, and without collecting the batch's ids.
fn batch(bytes: &[u8], from: Peer, max: usize) -> Decision {
    let cap = match from {
        // Nobody is answered: only count.
        Peer::Server => 0,
        Peer::Client => max.min(bytes.len().saturating_mul(4).max(4096)),
    };
    let reply = jsonrpc::batch_reply(
        bytes,
        jsonrpc::INVALID_REQUEST,
        jsonrpc::BATCH_UNSUPPORTED,
        cap,
    );
    let what = format!("a JSON-RPC batch of {} request(s)", reply.requests);
    let action = match (from, reply) {
        (Peer::Server, _) => Ingress::Drop,
        (Peer::Client, jsonrpc::BatchReply { requests: 0, .. }) => Ingress::Drop,
        (
            Peer::Client,
            jsonrpc::BatchReply {
                errors: Some(body), ..
            },
        ) => Ingress::ReplyToSender(Bytes::from(body)),
        (Peer::Client, jsonrpc::BatchReply { requests, .. }) => {
            let message = format!(
                "{} ({requests} requests in one batch were not answered one by one)",
                jsonrpc::BATCH_UNSUPPORTED,
            );
            Ingress::ReplyToSender(Bytes::from(jsonrpc::error_response(
                None,
                jsonrpc::INVALID_REQUEST,
                &message,
                None,
            )))
        }
    };
    Decision {
        action,
        refusal: Some(Refusal {
            kind: RefusalKind::Batch,
            what,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(s: &str) -> Frame {
        Frame::Line(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn reply(d: &Decision) -> serde_json::Value {
        match &d.action {
            Ingress::ReplyToSender(b) => serde_json::from_slice(b).expect("json"),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    #[test]
    fn forwards_and_classifies_once() {
        let d = decide(
            line(r#"{"jsonrpc":"2.0","id":7,"method":"tools/call"}"#),
            Peer::Client,
            1024,
            "the limit",
        );
        let Ingress::Forward(msg) = d.action else {
            panic!("forward")
        };
        assert_eq!(msg.request_id(), Some(&Id::Num("7".into())));
        assert_eq!(msg.method(), Some("tools/call"));
        assert_eq!(msg.tool_name(), None, "no params.name");
        let d = decide(
            line(r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo"}}"#),
            Peer::Client,
            1024,
            "the limit",
        );
        let Ingress::Forward(msg) = d.action else {
            panic!("forward")
        };
        assert_eq!(msg.tool_name(), Some("echo"));
    }

    #[test]
    fn malformed_from_a_client_is_answered_from_a_server_skipped() {
        let d = decide(line("x"), Peer::Client, 1024, "the limit");
        assert_eq!(reply(&d)["error"]["code"], jsonrpc::PARSE_ERROR);
        let d = decide(
            line(r#"{"jsonrpc":"2.0","id":3}"#),
            Peer::Client,
            1024,
            "the limit",
        );
        assert_eq!(reply(&d)["error"]["code"], jsonrpc::INVALID_REQUEST);
        assert_eq!(reply(&d)["id"], 3);
        let d = decide(line("Server ready!"), Peer::Server, 1024, "the limit");
        assert_eq!(d.action, Ingress::Drop);
        assert!(d.refusal.is_some());
    }

    #[test]
    fn oversize_goes_to_whoever_waits() {
        let big = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"m","params":"{}"}}"#,
            "a".repeat(100)
        );
        let d = decide(line(&big), Peer::Client, 50, "the limit");
        assert_eq!(reply(&d)["error"]["code"], jsonrpc::MESSAGE_TOO_LARGE);
        let resp = format!(
            r#"{{"jsonrpc":"2.0","id":"q","result":"{}"}}"#,
            "a".repeat(100)
        );
        let d = decide(line(&resp), Peer::Server, 50, "the limit");
        assert!(matches!(
            d.action,
            Ingress::ReplyToOther { id: Id::Str(_), .. }
        ));
    }

    #[test]
    fn batch_answers_never_amplify() {
        let d = decide(
            line(r#"[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","method":"n"}]"#),
            Peer::Client,
            1 << 20,
            "the limit",
        );
        assert_eq!(reply(&d).as_array().map(Vec::len), Some(1));
        let many: Vec<String> = (0..2000)
            .map(|i| format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"a"}}"#))
            .collect();
        let text = format!("[{}]", many.join(","));
        let d = decide(line(&text), Peer::Client, 1 << 20, "the limit");
        let Ingress::ReplyToSender(b) = &d.action else {
            panic!("reply")
        };
        assert!(b.len() < text.len(), "{} >= {}", b.len(), text.len());
        assert!(reply(&d)["id"].is_null());
        assert!(reply(&d)["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("2000 requests")));
        let d = decide(line(&text), Peer::Server, 1 << 20, "the limit");
        assert_eq!(d.action, Ingress::Drop);
        assert!(d.refusal.is_some_and(|r| r.what.contains("2000")));
    }

    #[test]
    fn long_method_names_are_cut() {
        let m = "é".repeat(300);
        let msg = Msg::classify(Bytes::from(format!(
            r#"{{"jsonrpc":"2.0","method":"{m}"}}"#
        )))
        .expect("msg");
        assert!(msg.method().is_some_and(|s| s.len() <= METHOD_KEEP));
    }
}

//! One pooled tool process serving many session-less (2026-07-28) HTTP requests at once, as a
//! plain state machine: each request gets a relay id of its own (so two clients that both use
//! id 1 never collide at the tool), its progress token rewritten the same way, and what the
//! tool sends is mapped back — the answer to the request's stream (which it ends), progress by
//! token, a subscription's notifications by `subscriptionId` to its `subscriptions/listen`
//! stream. A stream closed before its answer becomes `notifications/cancelled` for the tool,
//! and the answer, if it still comes, is dropped. It also asks the tool, once, which era it
//! speaks (`server/discover`), and lists its tools (`tools/list`, page by page) so their
//! `Mcp-Param-*` annotations are known before the first call. No channels, HTTP or clocks:
//! the carrier does those.

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::json;

use shared::jsonrpc;

use super::check::MODERN_VERSIONS;
use super::wire::{self, Fields, RequestSpans};

/// A request's key: the id the tool sees for it, and its stream's name.
pub(crate) type Key = u64;

/// Which era a tool answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Era {
    /// It answered `server/discover` with a 2026-07-28 version: requests go to it.
    Modern,
    /// It did not: modern clients are told to fall back to `initialize`.
    Handshake,
}

/// What to do with a message from the tool.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FromTool {
    /// To request `key`'s stream; `last`: it is the answer, and the stream ends after it.
    Stream { key: Key, bytes: Bytes, last: bool },
    /// The tool ended subscription `key` without an answer: its stream ends.
    End(Key),
    /// The answer to the relay's own `server/discover`: the tool's era, or `None` when the
    /// relay answered it (the tool exited, or could not be reached): no verdict.
    Probe(Option<Era>),
    /// The answer to the relay's own `tools/list` (a result or an error, as it came).
    Listed(Bytes),
    /// A request from the tool: this revision has none over HTTP (server-to-client input goes
    /// in results, MRTR), so the tool is answered with this error.
    AnswerTool(Bytes),
    /// Nobody waits for it (the reason, for the log).
    Drop(&'static str),
}

/// Why a request cannot be taken.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Busy {
    /// This many requests are in flight already.
    Full(usize),
}

#[derive(Debug)]
struct Entry {
    /// The client's id, as JSON text.
    client_id: Box<str>,
    /// The client's progress token, as JSON text.
    token: Option<Box<str>>,
    /// A `subscriptions/listen` request: its stream carries the subscription.
    listen: bool,
}

/// The requests in flight at one pooled tool process.
#[derive(Debug)]
pub(crate) struct Mux {
    next: Key,
    inflight: HashMap<Key, Entry>,
    max_inflight: usize,
    probe: Option<Key>,
    listing: Option<Key>,
}

impl Mux {
    /// A mux that takes at most `max_inflight` requests at once.
    pub(crate) fn new(max_inflight: usize) -> Mux {
        Mux {
            next: 0,
            inflight: HashMap::new(),
            max_inflight,
            probe: None,
            listing: None,
        }
    }

    fn key(&mut self) -> Key {
        self.next += 1;
        self.next
    }

    /// The relay's own `server/discover`, to learn the tool's era before any client request.
    pub(crate) fn probe(&mut self) -> Bytes {
        let key = self.key();
        self.probe = Some(key);
        let msg = json!({
            "jsonrpc": "2.0",
            "id": key,
            "method": "server/discover",
            "params": {"_meta": relay_meta()}
        });
        Bytes::from(msg.to_string())
    }

    /// The relay's own `tools/list` (the page after `cursor`), to learn the tools' annotations.
    pub(crate) fn list_tools(&mut self, cursor: Option<&str>) -> Bytes {
        let key = self.key();
        self.listing = Some(key);
        let mut params = json!({"_meta": relay_meta()});
        if let Some(c) = cursor {
            params["cursor"] = json!(c);
        }
        let msg = json!({"jsonrpc": "2.0", "id": key, "method": "tools/list", "params": params});
        Bytes::from(msg.to_string())
    }

    /// The number of requests in flight.
    pub(crate) fn len(&self) -> usize {
        self.inflight.len()
    }

    /// Takes a client request (its `fields` read from `body`): its key, and the body to give
    /// the tool (the id, and the progress token if any, replaced by the key).
    pub(crate) fn request(&mut self, r: &RequestSpans, body: &[u8]) -> Result<(Key, Bytes), Busy> {
        if self.inflight.len() >= self.max_inflight {
            return Err(Busy::Full(self.max_inflight));
        }
        let key = self.key();
        let text = key.to_string();
        let raw = |span: &std::ops::Range<usize>| -> Box<str> {
            String::from_utf8_lossy(body.get(span.clone()).unwrap_or_default()).into()
        };
        let mut edits = Vec::with_capacity(2);
        let mut entry = Entry {
            client_id: Box::from(""),
            token: None,
            listen: r.method.as_deref() == Some("subscriptions/listen"),
        };
        if let Some(span) = &r.id {
            entry.client_id = raw(span);
            edits.push((span.clone(), text.as_str()));
        }
        if let Some(span) = &r.progress_token {
            entry.token = Some(raw(span));
            edits.push((span.clone(), text.as_str()));
        }
        let out = wire::splice(body, edits);
        self.inflight.insert(key, entry);
        Ok((key, out))
    }

    /// Request `key`'s stream closed before its answer: the `notifications/cancelled` to send
    /// the tool (none if it was answered already). Its answer, should it come, is dropped.
    pub(crate) fn closed(&mut self, key: Key) -> Option<Bytes> {
        self.inflight.remove(&key)?;
        let msg = json!({
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": key, "reason": "the client closed its response stream"}
        });
        Some(Bytes::from(msg.to_string()))
    }

    /// The relay drains: every open subscription ends gracefully — for each, its key, the
    /// completion result for the client (with its subscription id) and the cancel for the tool.
    pub(crate) fn end_listens(&mut self) -> Vec<(Key, Bytes, Bytes)> {
        let keys: Vec<Key> = self
            .inflight
            .iter()
            .filter(|(_, e)| e.listen)
            .map(|(k, _)| *k)
            .collect();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let Some(e) = self.inflight.get(&key) else {
                continue;
            };
            let id = e.client_id.clone();
            let done = format!(
                r#"{{"jsonrpc":"2.0","id":{id},"result":{{"resultType":"complete","_meta":{{"io.modelcontextprotocol/subscriptionId":{id}}}}}}}"#
            );
            if let Some(cancel) = self.closed(key) {
                out.push((key, Bytes::from(done), cancel));
            }
        }
        out
    }

    /// Request `key` was answered by the relay itself (an error the core made): forget it.
    pub(crate) fn forget(&mut self, key: Key) {
        self.inflight.remove(&key);
    }

    /// Where a message from the tool goes.
    pub(crate) fn on_tool_message(&mut self, msg: &[u8]) -> FromTool {
        let Ok(f) = wire::fields(msg) else {
            return FromTool::Drop("not a JSON-RPC message");
        };
        if f.is_response {
            return self.answer(&f, msg);
        }
        if let (Some(_), Some((raw, _))) = (&f.method, &f.id) {
            let id = wire::to_id(raw);
            return FromTool::AnswerTool(Bytes::from(jsonrpc::error_response(
                id.as_ref(),
                jsonrpc::METHOD_NOT_FOUND,
                "the client reached this tool over the 2026-07-28 revision, which has no server-to-client requests (ask for input in a result instead)",
                None,
            )));
        }
        let method = f.method.as_deref().unwrap_or_default();
        if method == "notifications/cancelled" {
            // A tool ends a subscription this way.
            return match f.cancelled.and_then(|k| k.parse::<Key>().ok()) {
                Some(key) if self.inflight.get(&key).is_some_and(|e| e.listen) => {
                    self.inflight.remove(&key);
                    FromTool::End(key)
                }
                _ => FromTool::Drop("a cancellation for no subscription"),
            };
        }
        if let Some((raw, span)) = &f.subscription {
            let Some((key, e)) = self.entry(raw).filter(|(_, e)| e.listen) else {
                return FromTool::Drop("a notification for no open subscription");
            };
            let bytes = wire::splice(msg, vec![(span.clone(), &*e.client_id)]);
            return FromTool::Stream {
                key,
                bytes,
                last: false,
            };
        }
        if method == "notifications/progress" {
            let Some((raw, span)) = &f.progress_token else {
                return FromTool::Drop("progress without a token");
            };
            let Some((key, e)) = self.entry(raw) else {
                return FromTool::Drop("progress for no request in flight");
            };
            let Some(token) = &e.token else {
                return FromTool::Drop("progress for a request that asked for none");
            };
            let bytes = wire::splice(msg, vec![(span.clone(), &**token)]);
            return FromTool::Stream {
                key,
                bytes,
                last: false,
            };
        }
        // Other notifications (a log message, say) name no request: they go to the one
        // request in flight, if there is exactly one.
        let mut calls = self.inflight.iter().filter(|(_, e)| !e.listen);
        match (calls.next(), calls.next()) {
            (Some((key, _)), None) => FromTool::Stream {
                key: *key,
                bytes: Bytes::copy_from_slice(msg),
                last: false,
            },
            _ => FromTool::Drop(
                "a notification that names no request, with not exactly one in flight",
            ),
        }
    }

    fn entry(&self, raw: &str) -> Option<(Key, &Entry)> {
        let key = raw.trim_matches('"').parse::<Key>().ok()?;
        self.inflight.get(&key).map(|e| (key, e))
    }

    fn answer(&mut self, f: &Fields<'_>, msg: &[u8]) -> FromTool {
        let Some((raw, span)) = &f.id else {
            return FromTool::Drop("an answer with a null id");
        };
        let Ok(key) = raw.parse::<Key>() else {
            return FromTool::Drop("an answer to no request of the relay's");
        };
        if self.probe == Some(key) {
            self.probe = None;
            return FromTool::Probe(era_of(msg));
        }
        if self.listing == Some(key) {
            self.listing = None;
            return FromTool::Listed(Bytes::copy_from_slice(msg));
        }
        let Some(e) = self.inflight.remove(&key) else {
            return FromTool::Drop("the answer to a cancelled request");
        };
        let mut edits = vec![(span.clone(), &*e.client_id)];
        if let Some((_, sspan)) = f.subscription.as_ref().filter(|_| e.listen) {
            edits.push((sspan.clone(), &*e.client_id));
        }
        FromTool::Stream {
            key,
            bytes: wire::splice(msg, edits),
            last: true,
        }
    }
}

/// The `_meta` of the relay's own requests: the version, no capabilities, who asks.
fn relay_meta() -> serde_json::Value {
    json!({
        wire::META_VERSION: MODERN_VERSIONS[0],
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "mcp-bridge-relay", "version": env!("CARGO_PKG_VERSION")},
    })
}

/// The era a `server/discover` answer shows: modern when it lists a version the relay serves;
/// none when the error is the relay's own (the tool exited, a relay limit).
fn era_of(msg: &[u8]) -> Option<Era> {
    #[derive(serde::Deserialize)]
    struct Answer {
        result: Option<Discover>,
        error: Option<ErrorCode>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorCode {
        code: i64,
    }
    #[derive(serde::Deserialize)]
    struct Discover {
        #[serde(rename = "supportedVersions", default)]
        versions: Vec<String>,
    }
    let answer = serde_json::from_slice::<Answer>(msg).ok();
    let relays = [
        jsonrpc::TOOL_EXITED,
        jsonrpc::RELAY_UNAVAILABLE,
        jsonrpc::MESSAGE_TOO_LARGE,
        jsonrpc::TOO_MANY_REQUESTS,
    ];
    if answer
        .as_ref()
        .and_then(|a| a.error.as_ref())
        .is_some_and(|e| relays.contains(&e.code))
    {
        return None;
    }
    let modern = answer.and_then(|a| a.result).is_some_and(|d| {
        d.versions
            .iter()
            .any(|v| MODERN_VERSIONS.contains(&v.as_str()))
    });
    Some(if modern { Era::Modern } else { Era::Handshake })
}

#[cfg(test)]
#[path = "mux_tests.rs"]
mod tests;

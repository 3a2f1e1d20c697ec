//! A `tools/call` refused with `-32020` (HeaderMismatch, 2026-07-28: the `Mcp-Param-*` headers
//! did not match what the server's tool now declares): as the spec asks of a client, list the
//! tools again — bridge-client's own `tools/list` with the call's `_meta`, its answer teaching
//! [`ParamHeaders`](crate::upstream::params::ParamHeaders) and never reaching the IDE — then
//! send the call once more with the headers that follow. One retry per call and one re-list at
//! a time; when the re-list fails, or the retry is refused too, the IDE gets the server's
//! `-32020` as it was. Not here: which headers a tool's schema asks for (`params`).

use bytes::Bytes;
use serde_json::{json, Value};
use tracing::{debug, warn};

use shared::ingress::{Msg, MsgKind};
use shared::jsonrpc::{self, Id};

use super::requests::Post;
use super::HttpCore;

/// The id prefix of bridge-client's own `tools/list` requests.
const RELIST_PREFIX: &str = "mcp-bridge-relist-";

/// A re-list in flight.
#[derive(Debug)]
pub(super) struct Relist {
    /// Its `tools/list` request's id.
    id: Id,
    /// The refused call, to send again.
    call: Post,
    /// The server's `-32020` answer, for the IDE if the re-list fails.
    refusal: Bytes,
}

/// Whether `answer` is a JSON-RPC error with code `-32020`.
fn is_header_mismatch(answer: &[u8]) -> bool {
    jsonrpc::error_code(answer) == Some(jsonrpc::HEADER_MISMATCH)
}

/// Whether `id` is one of bridge-client's own `tools/list` requests.
pub(super) fn is_relist_id(id: &Id) -> bool {
    matches!(id, Id::Str(s) if s.starts_with(RELIST_PREFIX))
}

impl HttpCore {
    /// Whether `id` is the re-list in flight.
    pub(super) fn relisting(&self, id: &Id) -> bool {
        self.relist.as_ref().is_some_and(|r| &r.id == id)
    }

    /// The server answered `call` with `answer` (an error body): whether a re-list and a retry
    /// take it over (`true`: the IDE gets nothing yet).
    pub(super) fn relist_for(&mut self, call: &Post, answer: &Bytes) -> bool {
        let is_call = matches!(&call.msg.kind,
            MsgKind::Request { method, .. } if &**method == "tools/call");
        if !is_call || call.relisted || self.relist.is_some() || !is_header_mismatch(answer) {
            return false;
        }
        let Ok(v) = serde_json::from_slice::<Value>(&call.msg.bytes) else {
            return false;
        };
        self.relist_count += 1;
        let id = format!("{RELIST_PREFIX}{}", self.relist_count);
        let mut params = json!({});
        if let Some(meta) = v.get("params").and_then(|p| p.get("_meta")) {
            let mut meta = meta.clone();
            // Progress belongs to the IDE's call, not to our own request.
            if let Some(m) = meta.as_object_mut() {
                m.remove("progressToken");
            }
            params["_meta"] = meta;
        }
        let list = json!({"jsonrpc": "2.0", "id": id, "method": "tools/list", "params": params});
        let Some(msg) = Msg::classify(Bytes::from(list.to_string())) else {
            return false;
        };
        warn!(
            "the MCP server refused a tools/call for header mismatch (-32020); listing its tools \
             again, then sending the call once more"
        );
        let id = Id::Str(id.into());
        self.tool_lists.insert(id.clone());
        self.queue_bytes += msg.bytes.len();
        self.queue.push_front(Post::new(msg));
        self.relist = Some(Relist {
            id,
            call: call.clone(),
            refusal: answer.clone(),
        });
        true
    }

    /// The answer to a re-list (`id`) arrived (`ok`: a result, whose tools `params` has
    /// learned): send the call again, or give the IDE the refusal.
    pub(super) fn on_relist_answer(&mut self, id: &Id, ok: bool) {
        let Some(r) = self.relist.take_if(|r| &r.id == id) else {
            return;
        };
        if !ok {
            return self.relist_failed(r);
        }
        if r.call
            .msg
            .request_id()
            .is_none_or(|id| !self.pending.contains(id))
        {
            return; // cancelled by the IDE meanwhile
        }
        debug!("tools listed again; sending the refused call once more");
        let mut call = r.call;
        call.relisted = true;
        self.queue_bytes += call.msg.bytes.len();
        self.queue.push_front(call);
    }

    /// The re-list `id` got no answer (unreachable, lost, refused).
    pub(super) fn on_relist_lost(&mut self, id: &Id) {
        self.tool_lists.remove(id);
        if let Some(r) = self.relist.take_if(|r| &r.id == id) {
            self.relist_failed(r);
        }
    }

    fn relist_failed(&mut self, r: Relist) {
        warn!("listing the tools again failed; the IDE gets the server's -32020");
        if let Some(id) = r.call.msg.request_id() {
            if self.pending.remove(id) {
                self.push_out(r.refusal);
            }
        }
    }
}

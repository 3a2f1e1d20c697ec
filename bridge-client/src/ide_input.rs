//! What bridge-client does with a unit read from the IDE's stdin, and the small waits both
//! drivers (the tunnel's and the HTTP upstream's) share. One policy for both upstreams.

use bytes::Bytes;
use tokio::io::AsyncRead;
use tokio::time::Instant;
use tracing::warn;

use shared::framing::{Frame, LineReader};
use shared::ingress::{self, Ingress, Msg, MsgKind, Peer, RefusalKind};
use shared::jsonrpc::{self, Id};

use crate::session::core::ide::is_reinit_id;

/// How the size limit is named in errors about messages of either side.
pub(crate) const LIMIT_NAME: &str = "bridge-client's --max-message-size limit";

/// What became of one unit from stdin.
#[derive(Debug)]
pub(crate) enum FromIde {
    /// A message to send upstream (an oversize answer to a server's request is already
    /// replaced by the error the server gets instead).
    Forward(Msg),
    /// An error for the IDE itself (malformed, oversize request, batch).
    Reply(Bytes),
    /// Nothing (a line that is not JSON-RPC and carries no id).
    Nothing,
}

/// Decides one unit read from stdin with the shared ingress policy, logging what it refused.
pub(crate) fn from_ide(frame: Frame, max_message: usize) -> FromIde {
    let d = ingress::decide(frame, Peer::Client, max_message, LIMIT_NAME);
    if let Some(r) = d.refusal {
        match r.kind {
            RefusalKind::Oversize => warn!("{}", r.what),
            RefusalKind::Batch => warn!("the IDE sent {}; answered with errors", r.what),
            RefusalKind::Malformed => warn!("the IDE sent an unusable line: {}", r.what),
        }
    }
    match d.action {
        Ingress::Forward(msg) => FromIde::Forward(msg),
        Ingress::ReplyToSender(error) => FromIde::Reply(error),
        // The IDE's answer to a server's request was too large: the server gets this instead.
        Ingress::ReplyToOther { id, error } => FromIde::Forward(Msg {
            bytes: error,
            kind: MsgKind::Response {
                id: Some(id),
                is_error: true,
            },
        }),
        Ingress::Drop => FromIde::Nothing,
    }
}

/// The next unit from stdin; `Ok(None)` at its end. Never resolves once stdin is gone.
pub(crate) async fn next_line<R: AsyncRead + Unpin>(
    r: Option<&mut LineReader<R>>,
) -> std::io::Result<Option<Frame>> {
    match r {
        Some(r) => r.next_frame().await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `t`; never resolves without one.
pub(crate) async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// The error the IDE gets for its request `id`; none for a request the IDE never sent (a
/// replayed `initialize`).
pub(crate) fn error_for_ide(id: &Id, code: i64, message: &str) -> Option<Bytes> {
    (!is_reinit_id(id)).then(|| Bytes::from(jsonrpc::error_response(Some(id), code, message, None)))
}

/// The answers for the IDE's requests still waiting when bridge-client exits (in `ids`' order),
/// said once in the log: both upstreams end the same way.
pub(crate) fn exit_answers(ids: Vec<Id>) -> Vec<Bytes> {
    if !ids.is_empty() {
        warn!(
            "ending with {} request(s) unanswered; answering them with an error",
            ids.len()
        );
    }
    let message = "bridge-client is exiting (stdin was closed, or it was asked to stop) before \
                   the answer came; the request's outcome is unknown";
    ids.iter()
        .filter_map(|id| error_for_ide(id, jsonrpc::RELAY_UNAVAILABLE, message))
        .collect()
}

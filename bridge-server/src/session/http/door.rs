//! How HTTP handlers reach a session's driver: two bounded channels (POST bodies; GET and
//! DELETE) and the answers that come back over oneshots. What the session does with them is
//! the carrier's business.

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use shared::jsonrpc::Id;

use super::{Chunk, Events};

/// A POST body for the session.
pub(crate) struct Post {
    pub(crate) body: Bytes,
    /// The request's id, if the body is a request (it then gets an answer stream).
    pub(crate) request: Option<Id>,
    /// For `notifications/cancelled`: the request cancelled (its stream ends: no answer
    /// comes, and the client has stopped reading it).
    pub(crate) cancels: Option<Id>,
    pub(crate) reply: oneshot::Sender<PostReply>,
}

/// What became of a POST.
pub(crate) enum PostReply {
    /// A notification or response, handed to the core: 202.
    Accepted,
    /// A request: its answer (and what relates to it) comes on this stream.
    Stream(Events),
    /// A request answered before anything else came for it, and soon: the answer, as the
    /// whole body (`application/json`), holding its share of the session's budget.
    Json(Chunk),
    /// A request whose id is already waiting for its answer on this session.
    DuplicateId,
}

/// GET and DELETE for the session.
pub(crate) enum Ctl {
    /// Open the standalone stream (replacing an earlier one), or, with the last event the
    /// client saw, resume the stream that event was on.
    Get {
        last_event_id: Option<u64>,
        reply: oneshot::Sender<Events>,
    },
    /// End the session.
    Delete { reply: oneshot::Sender<()> },
}

/// How HTTP handlers reach a session (kept in the registry).
#[derive(Clone)]
pub(crate) struct HttpDoor {
    pub(crate) posts: mpsc::Sender<Post>,
    pub(crate) ctl: mpsc::Sender<Ctl>,
}

/// The driver's ends of an [`HttpDoor`].
pub(crate) struct Inlet {
    pub(super) posts: mpsc::Receiver<Post>,
    pub(super) ctl: mpsc::Receiver<Ctl>,
}

/// A door and its inlet. 16 POSTs may queue for a busy session (a burst is taken in one
/// wake-up and reaches the tool in one write); further handlers wait.
pub(crate) fn door() -> (HttpDoor, Inlet) {
    let (posts_tx, posts) = mpsc::channel(16);
    let (ctl_tx, ctl) = mpsc::channel(4);
    (
        HttpDoor {
            posts: posts_tx,
            ctl: ctl_tx,
        },
        Inlet { posts, ctl },
    )
}

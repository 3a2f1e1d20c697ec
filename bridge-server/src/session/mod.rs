//! Relay sessions: a tool process on one side, and on the other a client that may come and go
//! (subprotocol `mcp-bridge.v1`), stays for the session's life (plain `mcp`), or sends HTTP
//! requests to it (Streamable HTTP: [`http`]).
//!
//! [`core`] decides (sans-IO), with the calls in flight in [`pending`] and the tool's input in
//! [`tool_queue`], and says what happened in [`event`]s; [`driver`] is the one task per session
//! that does the I/O, and [`record`] writes the events down; [`registry`] holds the relay-wide
//! table of sessions and their limits, with each one's [`info`] for the admin API; [`end`] says
//! why a session ended. Authenticating,
//! routing and spawning are the HTTP layer's job.

mod carrier;
mod core;
mod driver;
mod end;
mod event;
pub(crate) mod http;
mod info;
pub(crate) mod modern;
mod pending;
mod record;
mod registry;
mod tool_queue;

use std::sync::Arc;

use shared::carrier::WsCarrier;
use shared::endpoint::Framing;

use crate::config::{Limits, ToolConfig};
use crate::metrics::Metrics;

pub(crate) use carrier::Carrier;
pub(crate) use driver::{run, Socket};
pub(crate) use http::HttpDoor;
pub(crate) use info::{end_wait, now_ms, EndRequest, SessionInfo, Snapshot, State};
pub(crate) use registry::{
    Door, Lookup, Over, Registry, ResumeRefusal, SessionLimits, Shutdown, MIN_PREFIX,
};

/// A client connection being handed to an existing session.
pub(crate) struct Attach {
    pub(crate) carrier: WsCarrier<Socket>,
    /// The highest sequence number the client says it received from the relay.
    pub(crate) last_seq: u64,
}

/// What a session needs besides its tool and first connection.
pub(crate) struct Params {
    pub(crate) id: String,
    /// The authenticated user (for audit events).
    pub(crate) user: String,
    pub(crate) tool: Arc<ToolConfig>,
    pub(crate) framing: Framing,
    pub(crate) limits: Limits,
    pub(crate) shutdown: Shutdown,
    pub(crate) registry: Arc<Registry>,
    pub(crate) metrics: Arc<Metrics>,
    /// The user's rights on this tool (policy, call rates).
    pub(crate) access: crate::policy::Access,
    /// What the admin API shows of this session (kept current by the driver), and its way to
    /// end it.
    pub(crate) info: Arc<SessionInfo>,
}

/// The first 8 hex digits of a session id's random part: enough to follow a session in the logs, too few to
/// take it over.
pub(crate) fn short_id(id: &str) -> &str {
    // The random part, after the node id when there is one.
    let random = id.rsplit_once('.').map_or(id, |(_, r)| r);
    random.get(..8).unwrap_or(random)
}

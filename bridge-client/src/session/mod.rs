//! The client's session: a sans-IO [`core::Core`] that makes every decision, and the one
//! driver task ([`driver::run`]) that owns stdin, stdout and the connection to the relay and
//! does the I/O the core asks for.
//!
//! Opening a connection (TCP, proxy, TLS, the upgrade and the `welcome`) is `crate::connect`'s
//! job, with an OAuth sign-in when the relay asks ([`attempt`]); the driver polls it as a
//! future so that stdin is read and answered meanwhile.

use std::time::Duration;

mod attempt;
pub(crate) mod core;
pub(crate) mod driver;
pub(crate) mod stdout;

/// What the relay said when a connection opened (its `welcome`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Welcome {
    /// The session id.
    pub(crate) session: String,
    /// Whether this connection resumed the session we asked for.
    pub(crate) resumed: bool,
    /// Highest sequence number the relay has received from us.
    pub(crate) last_seq: u64,
    /// How long the relay keeps the session while we are away.
    pub(crate) resume_window: Duration,
}

/// A connection the core wants opened now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnectRequest {
    /// The session to resume and the last sequence number received from it, if any.
    pub(crate) resume: Option<(String, u64)>,
    /// Whether a new session replaces one that was lost (`mcp-bridge-reestablish: 1`).
    pub(crate) reestablish: bool,
    /// How long the attempt may take, `welcome` included.
    pub(crate) timeout: Duration,
}

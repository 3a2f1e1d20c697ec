//! The Streamable HTTP upstream: `bridge-client https://host/path` speaks the MCP Streamable
//! HTTP transport (2025-03-26 … 2026-07-28) to any MCP server, keeping the shim's promises —
//! every IDE request answered exactly once, the handshake replayed on a new session, never an
//! exit on a network blip.
//!
//! - [`sse`]: a sans-IO `text/event-stream` parser;
//! - [`exchange`]: which headers a message needs and what a response's status means;
//! - [`params`]: `Mcp-Param-*` headers learnt from the tools' `x-mcp-header` annotations;
//! - [`core`]: the sans-IO session core (requests in flight, sessions, streams, resumes);
//! - [`client`]: the hyper client over the tunnel's TCP / proxy / TLS code;
//! - [`driver`]: the one task that does the I/O the core asks for.
//!
//! Not here: the WebSocket tunnel (`crate::session`), OAuth (`crate::oauth`: the driver owns
//! an `Authorizer` — each request takes its current bearer, and an [`AuthChallenge`] runs its
//! `on_unauthorized` while the core holds the refused requests).

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

mod client;
mod core;
pub(crate) mod driver;
mod exchange;
mod params;
mod sse;

/// The server asked for credentials (HTTP 401, or 403 `insufficient_scope`): what an
/// authorizer needs to sign in.
///
/// With an authorizer, the core holds the refused requests and the driver runs
/// `Authorizer::on_unauthorized` with this challenge (its `WWW-Authenticate` carries the
/// `resource_metadata` URL and scopes), then tells the core how it ended. Without one (a
/// static token was given), the requests have been answered with an error that says to sign in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthChallenge {
    /// The MCP endpoint that refused.
    pub url: String,
    /// The HTTP status (401 or 403).
    pub status: u16,
    /// The `WWW-Authenticate` header, if the server sent one.
    pub www_authenticate: Option<String>,
}

/// Something the driver must act on besides I/O.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpstreamEvent {
    /// Sign-in is needed (the seam for the OAuth authorizer).
    AuthRequired(AuthChallenge),
}

/// What happened to one HTTP exchange, as the driver reports it to the core.
#[derive(Debug)]
pub(crate) enum HttpIo {
    /// The response head.
    Head {
        status: StatusCode,
        headers: HeaderMap,
    },
    /// A piece of the body.
    Data(Bytes),
    /// The body ended.
    End,
    /// The request or the body failed (connection refused, reset, timed out).
    Error(String),
}

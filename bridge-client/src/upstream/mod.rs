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
//! Not here: the WebSocket tunnel (`crate::session`), OAuth (`crate::oauth`, which plugs in
//! through [`AuthChallenge`]).

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

mod client;
mod core;
pub(crate) mod driver;
mod exchange;
mod params;
mod sse;

/// The server asked for credentials (HTTP 401): what an authorizer needs to sign in.
///
/// Today bridge-client answers the waiting requests with an error that says to sign in; an
/// OAuth authorizer takes this challenge (its `WWW-Authenticate` carries the
/// `resource_metadata` URL and scopes), obtains a token and lets the driver retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthChallenge {
    /// The MCP endpoint that refused.
    pub url: String,
    /// The HTTP status (401).
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

//! Session-less requests of the 2026-07-28 revision (no `initialize`, no `Mcp-Session-Id`):
//! [`check`] decides whether a POST may go to a tool (headers against body, version; [`params`]
//! the `Mcp-Param-*` headers against the tool's annotations), [`pool`]
//! finds (or starts) the tool process that serves the user, and [`carrier`] is that process's
//! session carrier, with [`mux`] deciding which HTTP request each message belongs to. The
//! session behind it is an ordinary relay session (core, driver, registry, limits, policy,
//! audit). HTTP parsing and admission are the HTTP layer's job.

pub(crate) mod carrier;
pub(crate) mod check;
pub(crate) mod mux;
pub(crate) mod params;
pub(crate) mod pool;
pub(crate) mod wire;

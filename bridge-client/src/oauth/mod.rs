//! OAuth 2.1 sign-in for bridge-client, as the MCP authorization spec (2025-11-25, with the
//! 2026-07-28 additions) asks of a client. Not responsible for carrying MCP messages: the HTTP
//! upstream asks it for a token and tells it about a 401.
//!
//! # The flow
//! 1. An unauthenticated request answers 401 with `WWW-Authenticate: Bearer
//!    resource_metadata=…, scope=…` ([`challenge`]).
//! 2. Protected-resource metadata (RFC 9728) from `resource_metadata`, else the well-known URL
//!    with the server's path inserted, then the root one; its `resource` must contain the
//!    server's URL. Then the authorization server's metadata (RFC 8414 path-inserted, then
//!    OpenID discovery inserted and appended), whose `issuer` must equal the one we asked for;
//!    PKCE S256 must be offered, or we refuse ([`metadata`]).
//! 3. A client: pre-registered (`--oauth-client-id`), a Client ID Metadata Document
//!    (`--oauth-client-metadata-url`) where the server accepts them, else Dynamic Client
//!    Registration (RFC 7591) as a native client, with the token endpoint authentication the
//!    server offers ([`registration`]).
//! 4. The browser (`$BROWSER`, else `xdg-open`/`open`; the URL always on stderr) goes to the
//!    authorization endpoint with PKCE, `state`, `scope` and `resource` (RFC 8707, left out with
//!    `--oauth-no-resource`); the redirect comes back to `127.0.0.1` on an OS-picked port with a
//!    per-flow path ([`callback`]); `state` and RFC 9207 `iss` are checked before the code is
//!    redeemed ([`flow`]). `--device`: the device grant (RFC 8628) instead ([`device`]).
//! 5. Access token, refresh token, expiry and the client live in the OS keyring, keyed by
//!    issuer and resource ([`store`]); a flock'd file in the user's runtime (or cache) folder
//!    lets one process at a time sign in or refresh for an issuer and resource — the others
//!    wait (bounded), then use what it stored.
//!
//! # The seam for an HTTP upstream
//! ```text
//! let auth = Arc::new(Authorizer::new(url, OAuthArgs::resolve(&args)?)?);
//! // before each request:
//! if let Some(t) = auth.bearer().await? { req.header("Authorization", format!("Bearer {}", t.expose())) }
//! // on 401, or 403 with error="insufficient_scope": retry once with
//! let t = auth.on_unauthorized(www_authenticate).await?;
//! ```
//! [`Authorizer::bearer`] refreshes a token about to expire (30 s margin) and returns `None`
//! when not signed in. [`Authorizer::on_unauthorized`] takes tokens another process stored,
//! else refreshes, else signs in once; a second 401 within a minute of a sign-in is
//! [`AuthError::Refused`], never a loop. `invalid_grant` on refresh drops the stored tokens.
//! Calls are serialized per `Authorizer`; while a sign-in runs, other callers wait for it
//! (the upstream should bound that wait and answer the IDE with a JSON-RPC error).
//!
//! # Why hand-written over reqwest, not the `oauth2` or `openidconnect` crates
//! `oauth2` (5.x) gives typed PKCE, code exchange, refresh, device flow and client auth, but
//! none of what makes MCP sign-in MCP: no RFC 9728 discovery, no RFC 8414 path insertion, no
//! RFC 9207 `iss` check, no Client ID Metadata Documents; `resource` only as an untyped extra
//! parameter; its bundled HTTP client is reqwest 0.12 (a second copy beside ours), and its
//! error types would still need mapping to messages a user can act on. `openidconnect` adds
//! ID-token and JWKS validation we do not need (MCP uses plain OAuth access tokens) and
//! requires the `openid` scope semantics. What remains to hand-write is small, sans-IO and unit
//! tested: form bodies, three JSON documents, PKCE (sha2 + base64), the redirect checks. The
//! I/O is reqwest 0.13 with `rustls-no-provider` and our own rustls config (ring, platform
//! roots plus `--oauth-ca-file`; no OpenSSL, no aws-lc), redirects off, bodies capped at 1 MiB,
//! 30 s per request.
//!
//! Tokens never reach logs, errors or `Debug` output: they are held in [`crate::Secret`] or in
//! types whose `Debug` hides them, and error messages carry only codes and log-safe
//! descriptions.

mod authorizer;
mod browser;
mod callback;
pub mod challenge;
mod device;
mod error;
pub mod flow;
mod http;
pub mod metadata;
mod options;
pub mod pkce;
pub mod registration;
mod revoke;
mod signin;
mod store;
pub mod tokens;

pub use authorizer::{parse_server, Authorizer, CheckReport, LoginOutcome};
pub use error::AuthError;
pub use options::{OAuthArgs, Options, CLIENT_SECRET_ENV, MAX_IDE_WAIT};
pub use revoke::{logout, LogoutReport};
pub use store::Binding;

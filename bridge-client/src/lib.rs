//! bridge-client: the IDE-side shim. It is an MCP stdio server to the IDE and forwards every
//! JSON-RPC message, unchanged, over a WebSocket to an mcp-bridge relay — and keeps doing so
//! across dropped connections (resume) and lost sessions (re-establishment).
//!
//! [`run`] is generic over its input and output so tests can drive it with in-memory pipes; the
//! binary passes the process's stdin and stdout. Nothing here ever writes anything but JSON-RPC
//! messages to the output: logs go through `tracing` (to stderr).

use std::fmt;
use std::future::Future;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use tokio::io::{AsyncRead, AsyncWrite};

use shared::carrier::Heartbeat;

mod connect;
pub mod credentials;
mod ide_input;
pub mod oauth;
pub mod relay_url;
mod session;
pub mod settings;
pub mod stdio;
mod transport;
pub mod upstream;

pub use settings::parse_header;
pub use transport::Proxy;

/// A secret that never shows in `Debug` output or logs.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: String) -> Secret {
        Secret(s)
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// Reconnection delays: exponential from `initial` to `max`, each with random jitter.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// First delay.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    /// The delay before attempt `n` (0-based): `initial * 2^n`, capped, then scaled by a random
    /// factor in [0.5, 1.0] so that many clients cut at once do not return at once.
    pub fn delay(&self, n: u32) -> Duration {
        let mut b = [0u8; 2];
        let r = if getrandom::fill(&mut b).is_ok() {
            u16::from_le_bytes(b) as f64 / u16::MAX as f64
        } else {
            1.0
        };
        self.delay_with(n, r)
    }

    /// [`Self::delay`] with `r` in [0, 1] as its random part.
    pub fn delay_with(&self, n: u32, r: f64) -> Duration {
        let base = self.initial.saturating_mul(1u32 << n.min(16)).min(self.max);
        base.mul_f64(0.5 + 0.5 * r.clamp(0.0, 1.0))
    }
}

/// What the client needs to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// `ws://HOST:PORT/mcp/<tool>` (the tunnel) or an MCP server's `http(s)://` endpoint.
    pub url: String,
    /// What to speak to `url` (its scheme decides: see [`relay_url::upstream`]).
    pub upstream: relay_url::Upstream,
    /// Extra headers for the upgrade request.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Bearer token for the relay, if any.
    pub token: Option<Secret>,
    /// Sign-in options when no static token is given: the driver builds an
    /// [`oauth::Authorizer`] from them, for an http(s) upstream and for the tunnel alike
    /// (`None`: no sign-in; a 401 is answered at once).
    pub oauth: Option<oauth::Options>,
    /// Largest message accepted from the IDE or the relay, in bytes.
    pub max_message_size: usize,
    /// WebSocket ping interval and dead-peer timeout.
    pub heartbeat: Heartbeat,
    /// Delays between reconnection attempts.
    pub backoff: Backoff,
    /// TLS settings for `wss://` (roots, private CA, client certificate).
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// HTTP CONNECT proxy to go through, if any.
    pub proxy: Option<Proxy>,
    /// Sent as `mcp-bridge-affinity` on every connect, for load balancers.
    pub affinity: Option<String>,
}

/// Why the client could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The URL cannot be used.
    #[error("invalid relay URL {url}: {reason}; expected ws://HOST:PORT/mcp/TOOL")]
    BadUrl {
        /// The URL given.
        url: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The token contains characters that cannot go into an HTTP header.
    #[error("the relay token contains characters that cannot be sent in a header; check it")]
    BadToken,
    /// The relay could not be reached at all.
    #[error("cannot reach the relay at {url}: {reason}; is it running, and is the address right?")]
    Unreachable {
        /// The URL.
        url: String,
        /// What the network said.
        reason: String,
    },
    /// The relay answered the upgrade with an HTTP error.
    #[error("the relay at {url} refused the connection: HTTP {status}: {reason}")]
    Refused {
        /// The URL.
        url: String,
        /// HTTP status code.
        status: u16,
        /// The relay's one-line reason.
        reason: String,
        /// Its `WWW-Authenticate` challenge (a 401 or 403), for an OAuth sign-in.
        www_authenticate: Option<String>,
    },
    /// The relay asked for an OAuth sign-in, and it did not succeed.
    #[error("signing in to {url} failed: {reason}")]
    SignIn {
        /// The URL.
        url: String,
        /// Why (never a token).
        reason: String,
    },
    /// The WebSocket handshake failed for another reason.
    #[error("WebSocket handshake with {url} failed: {reason}")]
    Handshake {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// Writing to the IDE failed (it has gone away).
    #[error("writing to stdout failed: {0}")]
    Stdout(std::io::Error),
}

impl ClientError {
    /// Whether trying again later may work (the relay is down or busy, not refusing us).
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } | ClientError::Handshake { .. } => true,
            ClientError::Refused { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

/// Runs the client: reads JSON-RPC lines from `input`, forwards them to the relay, and writes
/// the relay's messages to `output`, until `input` ends (the IDE closed stdin: `Ok`). Fails only
/// when the very first connection cannot be made (a wrong URL, a relay that refuses, none there)
/// or when `output` cannot be written.
pub async fn run<R, W>(opts: Options, input: R, output: W) -> Result<(), ClientError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    run_until(opts, input, output, std::future::pending()).await
}

/// [`run`], but `stop` resolving (a signal from the IDE: SIGINT, SIGTERM, SIGHUP) ends the
/// session exactly as the end of `input` does: answers in flight are awaited briefly, the
/// relay is told the session is over (so it frees the session and the tool at once), then it
/// returns.
pub async fn run_until<R, W, S>(
    opts: Options,
    input: R,
    output: W,
    stop: S,
) -> Result<(), ClientError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    S: Future<Output = ()>,
{
    match opts.upstream {
        relay_url::Upstream::Tunnel => session::driver::run(opts, input, output, stop).await,
        relay_url::Upstream::Http => upstream::driver::run(opts, input, output, stop).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        for n in 0..10 {
            let d = b.delay(n);
            let base = (100u64 << n).min(2000);
            assert!(
                d >= Duration::from_millis(base / 2) && d <= Duration::from_millis(base),
                "{n}: {d:?}"
            );
        }
    }
}

//! bridge-server: the mcp-bridge relay.
//!
//! [`run`] serves a bound listener until a shutdown future resolves: each WebSocket session at
//! `/mcp/<tool>` gets its own tool process, and messages flow both ways unchanged. The binary is a
//! thin shell over this crate, so tests can run the relay in-process.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

mod child;
pub mod config;
pub mod demo_tool;
mod http;
mod session;

pub use child::SpawnError;
pub use config::{Config, ConfigError, Limits, ToolConfig};

/// State shared by every connection of one relay.
#[derive(Debug)]
pub(crate) struct Relay {
    pub(crate) tools: Vec<Arc<ToolConfig>>,
    pub(crate) limits: Limits,
    /// Cancelled when the relay shuts down; each session holds a child token.
    pub(crate) shutdown: CancellationToken,
    /// Every connection and session task, so shutdown can wait for them.
    pub(crate) tracker: TaskTracker,
}

/// A new session id: 128 random bits, as 32 hex digits.
pub(crate) fn new_session_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // The OS RNG failing is not recoverable in any useful way; fall back to a value that is
        // unique within this process so logs still tell sessions apart.
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        bytes = n.to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Serves `listener` with `config` until `shutdown` resolves, then closes every session (telling
/// clients), ends every tool process and returns. The caller binds the listener, so it chooses
/// the port (tests use port 0).
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let relay = Arc::new(Relay {
        tools: config.tools.into_iter().map(Arc::new).collect(),
        limits: config.limits,
        shutdown: CancellationToken::new(),
        tracker: TaskTracker::new(),
    });
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off a little instead of spinning.
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let relay2 = relay.clone();
        let conn_shutdown = relay.shutdown.clone();
        let header_timeout = relay.limits.header_read_timeout;
        relay.tracker.spawn(async move {
            let service = service_fn(move |req| http::handle(req, relay2.clone(), peer));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(e) = res {
                        debug!(%peer, "HTTP connection ended: {e}");
                    }
                }
                () = conn_shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    info!("shutting down: closing sessions");
    drop(listener);
    relay.shutdown.cancel();
    relay.tracker.close();
    if tokio::time::timeout(relay.limits.shutdown_grace, relay.tracker.wait())
        .await
        .is_err()
    {
        warn!("some sessions did not finish within the shutdown grace period");
    }
    Ok(())
}

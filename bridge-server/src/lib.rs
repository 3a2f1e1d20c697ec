//! bridge-server: the mcp-bridge relay.
//!
//! [`run`] serves a bound listener until a shutdown future resolves: each WebSocket session at
//! `/mcp/<tool>` gets its own tool process, and messages flow both ways unchanged. The binary is a
//! thin shell over this crate, so tests can run the relay in-process.

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

pub mod admin_cli;
pub mod auth;
mod child;
pub mod config;
pub mod confine;
pub mod demo_tool;
mod handshake;
mod http;
mod live;
pub mod log_batch;
mod metrics;
pub mod policy;
pub mod reload;
mod session;

pub use child::SpawnError;
pub use config::{Config, ConfigError, Limits, Loaded, Problem, Severity, ToolConfig};
pub use reload::Reload;

/// State shared by every connection of one relay.
pub(crate) struct Relay {
    /// This node's name (`node_id`), the first part of every session id it makes.
    pub(crate) node_id: Option<String>,
    /// The address the relay serves (its canonical URI when none is configured).
    pub(crate) local: std::net::SocketAddr,
    /// Tools, auth, origins, the other nodes, the certificate and what the relay publishes as
    /// an OAuth protected resource: what a reload replaces.
    pub(crate) live: live::LiveCell,
    pub(crate) limits: Limits,
    pub(crate) metrics: Arc<metrics::Metrics>,
    /// Whether `/metrics` is served on the main listener (no separate metrics address).
    pub(crate) metrics_on_main: bool,
    /// The admin API's tokens (served on the metrics listener only); empty: the API is off.
    pub(crate) admin_tokens: Vec<auth::TokenEntry>,
    /// Drain, then force: see [`ShutdownHandle`].
    pub(crate) shutdown: session::Shutdown,
    /// Live sessions (for resume and limits) and why recent ones ended.
    pub(crate) registry: Arc<session::Registry>,
    /// Every connection and session task, so shutdown can wait for them.
    pub(crate) tracker: TaskTracker,
    /// How tool processes are confined on this host (cgroups, what sandboxes hide).
    pub(crate) host: confine::Host,
    /// Call rate buckets, shared by every session.
    pub(crate) limiter: Arc<policy::rate::Limiter>,
    /// The pooled tool processes that serve session-less (2026-07-28) requests.
    pub(crate) pool: Arc<session::modern::pool::Pool>,
}

/// Tells a running relay to stop: [`ShutdownHandle::drain`] stops accepting, tells clients, and
/// lets calls in flight finish (up to the configured grace); [`ShutdownHandle::force`] ends every
/// session and tool at once. Clone it freely.
#[derive(Clone, Debug, Default)]
pub struct ShutdownHandle {
    inner: session::Shutdown,
}

impl Relay {
    /// The config in force for new requests and sessions (see [`live::Live`]).
    pub(crate) fn live(&self) -> Arc<live::Live> {
        self.live.get()
    }
}

impl ShutdownHandle {
    /// A handle for a relay not yet started.
    pub fn new() -> ShutdownHandle {
        ShutdownHandle::default()
    }

    /// Graceful: stop accepting, let calls in flight finish, then end.
    pub fn drain(&self) {
        self.inner.drain.cancel();
    }

    /// Immediate: end every session and tool now.
    pub fn force(&self) {
        self.inner.drain.cancel();
        self.inner.force.cancel();
    }
}

/// A new session id: 128 random bits as 32 hex digits, after `NODE.` when the relay has a
/// `node_id` (so a load balancer can send the session's requests to this node).
pub(crate) fn new_session_id(node: Option<&str>) -> String {
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
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    match node {
        Some(node) => format!("{node}.{hex}"),
        None => hex,
    }
}

/// Connections the separate metrics listener serves at once.
const METRICS_CONNECTIONS: usize = 64;

/// The separate metrics listener: `/metrics`, `/healthz`, `/readyz` and the session admin API
/// (`/admin/`, behind its own tokens) only.
async fn serve_metrics(listener: TcpListener, relay: Arc<Relay>) {
    // A scraper, a probe and an admin need a few connections; more at once are closed, so the
    // listener cannot be made to hold unbounded tasks.
    let slots = Arc::new(tokio::sync::Semaphore::new(METRICS_CONNECTIONS));
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!(%peer, "metrics listener: {METRICS_CONNECTIONS} connections open; closing a new one");
            continue;
        };
        let relay = relay.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let relay = relay.clone();
                async move {
                    let resp = match req.uri().path() {
                        "/metrics" => http::metrics(&relay),
                        "/readyz" => http::readyz(&relay),
                        "/healthz" => http::text(hyper::StatusCode::OK, "ok"),
                        p if p == "/admin" || p.starts_with("/admin/") => {
                            http::admin::handle(&req, &relay, peer).await
                        }
                        _ => http::text(
                            hyper::StatusCode::NOT_FOUND,
                            "not found: /metrics, /healthz, /readyz, /admin/sessions",
                        ),
                    };
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .keep_alive(false)
                .max_buf_size(8192)
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Streams one HTTP/2 connection may have open at once (each a request of a session, or an
/// SSE stream); more wait for one to end (the client's limit, by the protocol).
const H2_MAX_STREAMS: u32 = 128;

/// Serves one connection: HTTP/1.1 (with WebSocket upgrades) or HTTP/2 (chosen by ALPN on TLS,
/// by the client's preface on cleartext: "prior knowledge").
async fn serve_http<S>(
    stream: S,
    relay: Arc<Relay>,
    peer: std::net::SocketAddr,
    shutdown: tokio_util::sync::CancellationToken,
    slot: Arc<handshake::Slot>,
    cert: Option<Arc<auth::CertIdentity>>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let header_timeout = relay.limits.header_read_timeout;
    let max_head = relay.limits.max_header_bytes;
    let service = service_fn(move |req| {
        // The request head has arrived: the handshake is over, and its slot free for another
        // connection, before the answer is written. So a probe or a refusal never waits behind
        // slow handshakes, and a client that is slow to read its answer holds no slot.
        slot.finish();
        http::handle(req, relay.clone(), peer, cert.clone())
    });
    // Keep-alive only after a Streamable HTTP answer: refusals, probes and metrics say
    // `Connection: close` (see `http::text`), an upgrade takes the connection over. Between
    // two requests on a kept-alive connection, hyper runs `header_read_timeout` from the
    // moment the connection goes idle, so an idle connection is closed then; the slot was
    // freed at the first request head, and `Slot::finish` is idempotent (ids are never reused),
    // so later requests neither take nor free a slot.
    //
    // HTTP/2 carries Streamable HTTP only (a WebSocket needs HTTP/1.1: RFC 8441 is not
    // served); its bounds: streams at once, the header list, and the flow-control windows
    // (a peer that does not read its answers stalls only its own streams).
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(max_head);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_header_list_size(u32::try_from(max_head).unwrap_or(u32::MAX))
        .initial_stream_window_size(256 * 1024)
        .initial_connection_window_size(1024 * 1024)
        .max_send_buf_size(256 * 1024)
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20));
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let res = tokio::select! {
        res = conn.as_mut() => res,
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = res {
        debug!(%peer, "HTTP connection ended: {e}");
    }
}

/// The names of the client certificate the TLS handshake verified, when the relay maps
/// certificates to users (`mtls` mode; parsed once per connection).
fn client_identity<S>(
    relay: &Relay,
    stream: &tokio_rustls::server::TlsStream<S>,
) -> Option<Arc<auth::CertIdentity>> {
    if !matches!(relay.live().auth, auth::AuthConfig::Certs(_)) {
        return None;
    }
    let der = stream.get_ref().1.peer_certificates()?.first()?;
    auth::CertIdentity::from_der(der).map(Arc::new)
}

/// Checks what the config asks of the host that only running can tell: every tool that wants
/// a sandbox can have one. The error names the tool and what to install or allow; the relay
/// must not start without it (exit 64).
pub fn preflight(config: &Config) -> Result<(), String> {
    let mut checked: Vec<bool> = Vec::new();
    for tool in &config.tools {
        let Some(sb) = &tool.sandbox else { continue };
        if checked.contains(&sb.network) {
            continue;
        }
        confine::sandbox::preflight(sb.network).map_err(|why| {
            format!(
                "tool `{}` asks for a sandbox, which this host cannot give: {why}",
                tool.name
            )
        })?;
        checked.push(sb.network);
    }
    Ok(())
}

/// Serves `listener` with `config` until `shutdown` is told to drain, then drains: no new
/// connections, clients told, calls in flight given the configured grace, then every session
/// and tool ended. Returns when all are gone. The caller binds the listener, so it chooses the
/// port (tests use port 0).
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: ShutdownHandle,
) -> std::io::Result<()> {
    run_reloading(listener, config, None, shutdown).await
}

/// [`run`], and with `reloading`, the config file read again on SIGHUP and whenever its
/// contents change (see [`reload`]).
pub async fn run_reloading(
    listener: TcpListener,
    config: Config,
    reloading: Option<Reload>,
    shutdown: ShutdownHandle,
) -> std::io::Result<()> {
    // The config check covers `listen`, but the caller may have bound elsewhere (--listen):
    // check the address actually served.
    let local = listener.local_addr()?;
    if matches!(config.auth, auth::AuthConfig::None) && !local.ip().is_loopback() {
        return Err(std::io::Error::other(format!(
            "refusing to serve {local} without authentication: configure [auth] with tokens or \
             jwt, or listen on a loopback address"
        )));
    }
    let tls = match &config.tls {
        Some(t) => Some(reload::tls_acceptor(t).map_err(std::io::Error::other)?),
        None => None,
    };
    preflight(&config).map_err(std::io::Error::other)?;
    let host = confine::Host::detect(&config);
    let metrics = Arc::new(metrics::Metrics::new());
    metrics.set_limits(&config.limits, &config.tools);
    let handshakes = handshake::Gate::new(&config.limits, metrics.clone());
    let mut shed_log = handshake::ShedLog::new(metrics.clone());
    let mut config = config;
    let resource = live::resource_of(&mut config, local, None, &metrics, &shutdown.inner.force)
        .map_err(std::io::Error::other)?;
    let hash = reloading.as_ref().map_or_else(
        || "builtin".to_owned(),
        |r| reload::file_hash(&r.path).unwrap_or_else(|| "unreadable".to_owned()),
    );
    info!(config_hash = %hash, "config in force");
    metrics.config_loaded(None, &hash);
    let relay = Arc::new(Relay {
        node_id: config.node_id.clone(),
        local,
        live: live::LiveCell::new(live::Live::of(&config, tls.clone(), resource, hash)),
        limits: config.limits.clone(),
        metrics,
        metrics_on_main: config.metrics_listen.is_none(),
        admin_tokens: config.admin_tokens.clone(),
        shutdown: shutdown.inner.clone(),
        registry: Arc::default(),
        tracker: TaskTracker::new(),
        host,
        limiter: Arc::default(),
        pool: Arc::default(),
    });
    if let Some(addr) = config.metrics_listen {
        let listener = TcpListener::bind(addr).await?;
        info!("metrics on http://{}/metrics", listener.local_addr()?);
        let relay = relay.clone();
        tokio::spawn(serve_metrics(listener, relay));
    }
    if let Some(reloading) = reloading {
        relay
            .tracker
            .spawn(reload::watch(relay.clone(), reloading, config));
    }
    // While draining, the listener stays open so clients that were away can still resume and
    // collect their answers; new sessions are refused (503). It closes once every session has
    // ended or the grace period is over.
    let drained = {
        let relay = relay.clone();
        async move {
            relay.shutdown.drain.cancelled().await;
            relay.metrics.ready.set(0);
            info!(
                grace_s = relay.limits.shutdown_grace.as_secs_f64(),
                "draining: no new sessions; letting calls in flight finish"
            );
            let deadline = tokio::time::Instant::now() + relay.limits.shutdown_grace;
            while !relay.registry.is_empty()
                && tokio::time::Instant::now() < deadline
                && !relay.shutdown.force.is_cancelled()
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    tokio::pin!(drained);
    // Shedding is logged once a second at most (see `handshake::ShedLog`).
    let mut shed_tick = tokio::time::interval(Duration::from_secs(1));
    shed_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_flush = tokio::time::Instant::now();
    loop {
        let (stream, peer) = tokio::select! {
            now = shed_tick.tick() => {
                shed_log.flush(now.duration_since(last_flush));
                last_flush = now;
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off a little instead of spinning.
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut drained => break,
        };
        let _ = stream.set_nodelay(true);
        // Bound the connections still in their TLS/HTTP handshake, per source and in total, so
        // that neither memory nor the slots can be tied up by slow connections (slowloris,
        // connection floods): a newcomer over its source's bound is closed at once; when every
        // slot is taken, the oldest handshake of the source holding the most gives way.
        let source = handshake::Source::of(peer.ip());
        let slot = match handshakes.admit(source) {
            Ok(admitted) => {
                if let Some((victim, age)) = admitted.shed {
                    debug!(%peer, %victim, ?age, "every handshake slot busy: shed the oldest");
                    shed_log.record(victim, handshake::ShedReason::Oldest);
                }
                Arc::new(admitted.slot)
            }
            Err(reason) => {
                debug!(%peer, reason = reason.label(), "closing a connection before its handshake");
                shed_log.record(source, reason);
                continue;
            }
        };
        let relay2 = relay.clone();
        let conn_shutdown = relay.shutdown.force.clone();
        // Each new connection gets the certificate in force now (a reload may renew it).
        let tls = tls.as_ref().and(relay2.live().tls.clone());
        relay.tracker.spawn(async move {
            let header_timeout = relay2.limits.header_read_timeout;
            let serve = async {
                match tls {
                    Some(acceptor) => {
                        match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => {
                                let cert = client_identity(&relay2, &stream);
                                serve_http(stream, relay2, peer, conn_shutdown, slot.clone(), cert)
                                    .await
                            }
                            Ok(Err(e)) => debug!(%peer, "TLS handshake failed: {e}"),
                            Err(_) => debug!(%peer, "TLS handshake timed out"),
                        }
                    }
                    None => {
                        serve_http(stream, relay2, peer, conn_shutdown, slot.clone(), None).await
                    }
                }
            };
            tokio::select! {
                () = slot.shed() => debug!(%peer, "handshake shed for a newcomer"),
                () = serve => {}
            }
        });
    }
    drop(listener);
    shed_log.flush(last_flush.elapsed());
    relay.tracker.close();
    if !relay.registry.is_empty() {
        warn!("calls still in flight after the grace period; ending them");
    }
    // Whatever is left (sessions past the grace, idle keep-alive connections) ends now.
    relay.shutdown.force.cancel();
    // Sessions end their tools (close stdin, TERM, KILL), which takes up to twice the kill grace.
    let force_wait = relay.limits.kill_grace * 2 + Duration::from_secs(2);
    if tokio::time::timeout(force_wait, relay.tracker.wait())
        .await
        .is_err()
    {
        warn!("some sessions did not end in time");
    }
    info!("relay stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn session_ids_start_with_the_node_id() {
        let plain = super::new_session_id(None);
        assert_eq!(plain.len(), 32);
        assert!(plain.bytes().all(|b| b.is_ascii_hexdigit()), "{plain}");
        let named = super::new_session_id(Some("relay-2"));
        let (node, random) = named.split_once('.').expect("a dot after the node id");
        assert_eq!(node, "relay-2");
        assert_eq!(random.len(), 32);
        assert_ne!(random, plain);
        assert_eq!(crate::session::short_id(&named), &random[..8]);
    }
}

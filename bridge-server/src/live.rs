//! The part of the relay's config that a reload replaces while the relay runs: the hosted
//! tools, authentication, the allowed origins, the other nodes, and the TLS certificate. Each
//! request takes the current one once (an `Arc`) and keeps it to its end; a session keeps the
//! tool config it started with. What only a restart can change stays in `Relay` itself.

use std::sync::{Arc, RwLock};

use tokio_rustls::TlsAcceptor;

use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;

use crate::auth::resource::Resource;
use crate::auth::{AuthConfig, KeySource};
use crate::config::{Cluster, Config, OnRevoke, ToolConfig};
use crate::metrics::Metrics;

/// The config in force for new requests and sessions.
pub(crate) struct Live {
    pub(crate) tools: Vec<Arc<ToolConfig>>,
    pub(crate) auth: AuthConfig,
    pub(crate) allowed_origins: Vec<String>,
    pub(crate) cluster: Cluster,
    /// The certificate served to new TLS connections (`None`: plain TCP).
    pub(crate) tls: Option<TlsAcceptor>,
    /// What the relay publishes as an OAuth protected resource (JWT auth only).
    pub(crate) resource: Option<Resource>,
    /// The first 12 hex digits of the config file's SHA-256, or `builtin`.
    pub(crate) hash: String,
    /// `[auth] on_revoke`: how a reload ends a session whose credentials it removed.
    pub(crate) on_revoke: OnRevoke,
}

impl Live {
    /// What can change of `config`, with the TLS acceptor already made from its files.
    pub(crate) fn of(
        config: &Config,
        tls: Option<TlsAcceptor>,
        resource: Option<Resource>,
        hash: String,
    ) -> Live {
        Live {
            tools: config.tools.iter().cloned().map(Arc::new).collect(),
            auth: config.auth.clone(),
            allowed_origins: config.allowed_origins.clone(),
            cluster: config.cluster.clone(),
            tls,
            resource,
            hash,
            on_revoke: config.on_revoke,
        }
    }

    /// The hosted tool served at `/mcp/<name>`.
    pub(crate) fn tool(&self, name: &str) -> Option<&Arc<ToolConfig>> {
        self.tools.iter().find(|t| t.name == name)
    }
}

/// The current [`Live`], swapped whole by a reload.
pub(crate) struct LiveCell(RwLock<Arc<Live>>);

impl LiveCell {
    pub(crate) fn new(live: Live) -> LiveCell {
        LiveCell(RwLock::new(Arc::new(live)))
    }

    /// The config in force now.
    pub(crate) fn get(&self) -> Arc<Live> {
        // A panic while holding the lock cannot leave a half-written `Arc`: take it anyway.
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Puts `live` in force for every request from now on.
    pub(crate) fn set(&self, live: Live) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(live);
    }
}

/// The OAuth protected resource `config` makes of the relay serving `local` (JWT auth only),
/// with its identity provider's keys fetched and refreshed: the keys of `previous` when they
/// come from the same provider (their cache and refresh go on), else a new fetcher started
/// until `stop`. An error when nothing names the resource that tokens must be for.
pub(crate) fn resource_of(
    config: &mut Config,
    local: SocketAddr,
    previous: Option<&Live>,
    metrics: &Arc<Metrics>,
    stop: &CancellationToken,
) -> Result<Option<Resource>, String> {
    let tls = config.tls.is_some();
    let AuthConfig::Jwt(j) = &mut config.auth else {
        return Ok(None);
    };
    if j.resource.url.is_none() && j.audience.is_empty() && local.ip().is_unspecified() {
        return Err(format!(
            "serving {local} (every address) with JWT auth: set [auth.jwt] resource_url to the \
             relay's public URL, so that tokens are checked against it"
        ));
    }
    if let KeySource::Remote(keys) = &mut j.keys {
        let running = previous.and_then(|p| match &p.auth {
            AuthConfig::Jwt(old) => match &old.keys {
                KeySource::Remote(old) if old.same_source(keys) => Some(old.clone()),
                _ => None,
            },
            _ => None,
        });
        match running {
            Some(old) => *keys = old,
            None => keys.start(metrics.clone(), stop.clone()),
        }
    }
    Ok(Some(Resource::new(j, local, tls)))
}

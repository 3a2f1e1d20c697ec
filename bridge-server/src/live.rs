//! The part of the relay's config that a reload replaces while the relay runs: the hosted
//! tools, authentication, the allowed origins, the other nodes, and the TLS certificate. Each
//! request takes the current one once (an `Arc`) and keeps it to its end; a session keeps the
//! tool config it started with. What only a restart can change stays in `Relay` itself.

use std::sync::{Arc, RwLock};

use tokio_rustls::TlsAcceptor;

use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;

use crate::auth::keys::RemoteKeys;
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

    /// The identity provider's keys fetched for JWT auth, if any.
    fn remote_keys(&self) -> Option<&Arc<RemoteKeys>> {
        match &self.auth {
            AuthConfig::Jwt(j) => match &j.keys {
                KeySource::Remote(k) => Some(k),
                _ => None,
            },
            _ => None,
        }
    }

    /// Once `next` is in force in place of `self`: stops refreshing keys `next` does not use
    /// (another provider, or one reached another way), so that the replaced fetcher stops
    /// polling its provider and writing the key gauges.
    pub(crate) fn retire_keys(&self, next: &Live) {
        if let Some(old) = self.remote_keys() {
            if !next.remote_keys().is_some_and(|new| Arc::ptr_eq(old, new)) {
                old.stop();
            }
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
            None => keys.start(metrics.clone(), stop),
        }
    }
    Ok(Some(Resource::new(j, local, tls)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A JWT-auth config fetching keys from `jwks_url` (nothing needs to answer there).
    fn jwt_config(jwks_url: &str, refresh_s: u64) -> Config {
        let text = format!(
            "[auth]\nmode = \"jwt\"\n[auth.jwt]\nissuer = \"http://127.0.0.1:9\"\n\
             jwks_url = \"{jwks_url}\"\njwks_refresh_s = {refresh_s}\naudience = \"relay\"\n\
             [[tool]]\nname = \"a\"\ncommand = \"/bin/sh\"\n"
        );
        Config::parse(&text, std::path::Path::new("relay.toml"))
            .expect("valid")
            .config
    }

    /// Puts `config` in force after `previous`, as a reload does.
    fn reload(mut config: Config, previous: Option<&Live>, stop: &CancellationToken) -> Live {
        let local: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let metrics = Arc::new(Metrics::new());
        let resource = resource_of(&mut config, local, previous, &metrics, stop).expect("ok");
        let live = Live::of(&config, None, resource, "test".into());
        if let Some(p) = previous {
            p.retire_keys(&live);
        }
        live
    }

    #[tokio::test]
    async fn a_reload_to_another_key_source_stops_the_old_refresher_only() {
        let stop = CancellationToken::new();
        let first = reload(jwt_config("http://127.0.0.1:9/a", 300), None, &stop);
        let keys = |l: &Live| l.remote_keys().expect("remote keys").clone();
        assert!(keys(&first).is_refreshing());

        let same = reload(jwt_config("http://127.0.0.1:9/a", 300), Some(&first), &stop);
        assert!(Arc::ptr_eq(&keys(&first), &keys(&same)), "same source kept");
        assert!(keys(&same).is_refreshing());

        let slower = reload(jwt_config("http://127.0.0.1:9/a", 600), Some(&same), &stop);
        assert!(
            !keys(&same).is_refreshing(),
            "a new refresh policy replaces it"
        );
        assert!(keys(&slower).is_refreshing());

        let moved = reload(
            jwt_config("http://127.0.0.1:9/b", 600),
            Some(&slower),
            &stop,
        );
        assert!(
            !keys(&slower).is_refreshing(),
            "another provider replaces it"
        );
        assert!(keys(&moved).is_refreshing());
        assert!(!stop.is_cancelled());
    }
}

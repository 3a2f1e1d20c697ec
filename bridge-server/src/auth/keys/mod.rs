//! Signing keys from an identity provider, kept fresh: the JWKS URL from the issuer's discovery
//! metadata (or configured), fetched at start, refreshed on an interval, and again — rate
//! limited — when a token names a `kid` not held; the last good keys serve while the provider
//! is unreachable. One fetch at a time; each failure is logged once with the URL and the
//! reason, and counted. The decisions are [`cache`]'s; this is the I/O shell around it.

mod cache;
mod fetch;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use jsonwebtoken::jwk::Jwk;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use url::Url;

pub(crate) use cache::CachePolicy;
use cache::{KeyCache, Lookup};
pub use fetch::FetchError;
pub(crate) use fetch::{allowed_url, Fetcher};

use crate::metrics::{JwksFetchLabels, Metrics};

/// What a lookup found.
#[derive(Debug)]
pub(crate) enum KeyLookup {
    /// The key.
    Found(Box<Jwk>),
    /// Keys are held, none with that `kid`.
    Unknown,
    /// No keys could be fetched yet.
    NotLoaded,
}

/// One issuer's keys.
pub struct RemoteKeys {
    issuer: String,
    fetcher: Fetcher,
    /// `jwks_url` from the config, when given (no discovery then).
    configured: Option<Url>,
    /// What discovery found (forgotten when the JWKS URL stops answering).
    discovered: Mutex<Option<Url>>,
    cache: Mutex<KeyCache>,
    /// Held while a fetch runs: one at a time, and a caller that needs fresh keys waits here.
    fetching: tokio::sync::Mutex<()>,
    metrics: OnceLock<Arc<Metrics>>,
}

impl std::fmt::Debug for RemoteKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteKeys")
            .field("issuer", &self.issuer)
            .field("jwks_url", &self.configured)
            .finish_non_exhaustive()
    }
}

impl RemoteKeys {
    /// Keys of `issuer`, from `jwks_url` or else discovery; nothing is fetched until
    /// [`RemoteKeys::start`].
    pub(crate) fn new(
        issuer: &str,
        jwks_url: Option<Url>,
        ca_file: Option<&std::path::Path>,
        policy: CachePolicy,
    ) -> Result<RemoteKeys, FetchError> {
        Ok(RemoteKeys {
            issuer: issuer.to_owned(),
            fetcher: Fetcher::new(issuer, ca_file)?,
            configured: jwks_url,
            discovered: Mutex::new(None),
            cache: Mutex::new(KeyCache::new(policy)),
            fetching: tokio::sync::Mutex::new(()),
            metrics: OnceLock::new(),
        })
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, KeyCache> {
        // A panic while holding this lock cannot leave the cache half-updated (every update is
        // one assignment), so a poisoned lock is still usable.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The key for a token's `kid`.
    /// Whether `other` fetches from the same provider the same way (a reload may keep this
    /// one, with its cache and refresh).
    pub(crate) fn same_source(&self, other: &RemoteKeys) -> bool {
        self.issuer == other.issuer && self.configured == other.configured
    }

    pub(crate) fn find(&self, kid: Option<&str>) -> KeyLookup {
        match self.cache().find(kid) {
            Lookup::Found(k) => KeyLookup::Found(Box::new(k.clone())),
            Lookup::Unknown => KeyLookup::Unknown,
            Lookup::NotLoaded => KeyLookup::NotLoaded,
        }
    }

    /// A token named a `kid` not held: fetches now unless that was done within the
    /// rate limit, or waits for a fetch under way. The caller looks the key up again after.
    pub(crate) async fn refetch(&self) {
        let _one = self.fetching.lock().await;
        if self.cache().start_refetch(Instant::now()) {
            self.fetch("unknown_kid").await;
        }
    }

    /// Starts the refresh task (the first fetch at once), until `stop`.
    pub(crate) fn start(self: &Arc<Self>, metrics: Arc<Metrics>, stop: CancellationToken) {
        let _ = self.metrics.set(metrics);
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let due = me.cache().next_fetch(Instant::now());
                tokio::select! {
                    () = tokio::time::sleep_until(due.into()) => {}
                    () = stop.cancelled() => return,
                }
                let _one = me.fetching.lock().await;
                if me.cache().start_scheduled(Instant::now()) {
                    me.fetch("scheduled").await;
                }
            }
        });
    }

    /// One fetch (discovery first when needed); the caller holds `fetching` and has marked it
    /// started in the cache.
    async fn fetch(&self, trigger: &'static str) {
        let result = self.fetch_set().await;
        let now = Instant::now();
        let outcome = if result.is_ok() { "ok" } else { "error" };
        match result {
            Ok((set, skipped)) => {
                let first = self.cache().len() == 0;
                let change = self.cache().on_fetched(set, now);
                if first || change.added > 0 || change.removed > 0 {
                    info!(
                        issuer = %self.issuer, keys = change.keys, added = change.added,
                        removed = change.removed, skipped, trigger,
                        "signing keys fetched from the identity provider"
                    );
                }
            }
            Err(e) => {
                let (held, failures) = {
                    let mut c = self.cache();
                    c.on_failed(now);
                    (c.len(), c.failures())
                };
                warn!(
                    issuer = %self.issuer, trigger, failures, keys_kept = held,
                    "cannot fetch the identity provider's signing keys: {e}; {}",
                    if held > 0 {
                        "the keys fetched before stay in use"
                    } else {
                        "no keys yet: tokens are refused until a fetch succeeds (check the \
                         issuer URL, the network and [auth.jwt] ca_file)"
                    }
                );
            }
        }
        if let Some(m) = self.metrics.get() {
            m.jwks_fetches
                .get_or_create(&JwksFetchLabels { trigger, outcome })
                .inc();
            let c = self.cache();
            m.jwks_keys.set(i64::try_from(c.len()).unwrap_or(i64::MAX));
            m.jwks_failures.set(i64::from(c.failures()));
        }
    }

    async fn fetch_set(&self) -> Result<(jsonwebtoken::jwk::JwkSet, usize), FetchError> {
        let known = self.configured.clone().or_else(|| {
            self.discovered
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        });
        let url = match known {
            Some(u) => u,
            None => {
                let u = self.fetcher.discover().await?;
                *self.discovered.lock().unwrap_or_else(|p| p.into_inner()) = Some(u.clone());
                u
            }
        };
        let result = self.fetcher.jwks(&url).await;
        if matches!(result, Err(FetchError::Status { .. })) && self.configured.is_none() {
            // The provider may have moved its JWKS: discover again next time.
            *self.discovered.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
        result
    }
}

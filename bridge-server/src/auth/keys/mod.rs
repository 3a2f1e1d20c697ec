//! Signing keys from an identity provider, kept fresh: the JWKS URL from the issuer's discovery
//! metadata (or configured), fetched at start, refreshed on an interval, and again — rate
//! limited — when a token names a `kid` not held; the last good keys serve while the provider
//! is unreachable. One fetch at a time; each failure is logged once with the URL and the
//! reason, and counted. The decisions are [`cache`]'s; this is the I/O shell around it.

mod cache;
mod fetch;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Instant;

use jsonwebtoken::jwk::Jwk;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use url::Url;

pub(crate) use cache::CachePolicy;
use cache::{KeyCache, Lookup};
pub use fetch::FetchError;
pub(crate) use fetch::{allowed_url, parse_jwks, Fetcher};

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
    /// What `fetcher` trusts beyond the platform's roots, and how often it fetches: a reload
    /// that changes either needs a new `RemoteKeys`.
    ca_file: Option<PathBuf>,
    policy: CachePolicy,
    /// Ends the refresh task: cancelled when this is replaced ([`RemoteKeys::stop`]) or
    /// dropped, or when the relay shuts down (a child of its token). Unset until started.
    refresher: OnceLock<CancellationToken>,
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
            ca_file: ca_file.map(std::path::Path::to_path_buf),
            policy,
            refresher: OnceLock::new(),
        })
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, KeyCache> {
        // A panic while holding this lock cannot leave the cache half-updated (every update is
        // one assignment), so a poisoned lock is still usable.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `other` fetches from the same provider the same way — issuer, JWKS URL, CA
    /// file and refresh policy — so that a reload may keep this one, with its cache and refresh.
    pub(crate) fn same_source(&self, other: &RemoteKeys) -> bool {
        self.issuer == other.issuer
            && self.configured == other.configured
            && self.ca_file == other.ca_file
            && self.policy == other.policy
    }

    /// The key for a token's `kid`.
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

    /// Starts the refresh task (the first fetch at once), until `shutdown`, [`RemoteKeys::stop`]
    /// or the drop of the last `Arc` (the task holds only a weak one while it waits).
    /// Starting twice does nothing.
    pub(crate) fn start(self: &Arc<Self>, metrics: Arc<Metrics>, shutdown: &CancellationToken) {
        let stop = shutdown.child_token();
        if self.refresher.set(stop.clone()).is_err() {
            return;
        }
        let _ = self.metrics.set(metrics);
        let me: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(due) = me.upgrade().map(|k| k.cache().next_fetch(Instant::now())) else {
                    return;
                };
                tokio::select! {
                    () = tokio::time::sleep_until(due.into()) => {}
                    () = stop.cancelled() => return,
                }
                let Some(keys) = me.upgrade() else { return };
                let _one = keys.fetching.lock().await;
                if stop.is_cancelled() {
                    return;
                }
                if keys.cache().start_scheduled(Instant::now()) {
                    keys.fetch("scheduled").await;
                }
            }
        });
    }

    /// Ends the refresh task (a reload put other keys in force). Lookups and `kid`-triggered
    /// fetches of requests still holding these keys go on working.
    pub(crate) fn stop(&self) {
        if let Some(t) = self.refresher.get() {
            t.cancel();
        }
    }

    /// Whether the refresh task was started and not told to stop.
    #[cfg(test)]
    pub(crate) fn is_refreshing(&self) -> bool {
        self.refresher.get().is_some_and(|t| !t.is_cancelled())
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

impl Drop for RemoteKeys {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A loopback JWKS server answering every request with one usable key; counts requests.
    async fn jwks_server() -> (Url, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = Url::parse(&format!(
            "http://{}/jwks",
            listener.local_addr().expect("addr")
        ))
        .expect("url");
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    let body = r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"a"}]}"#;
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = s.write_all(format!("{head}{body}").as_bytes()).await;
                });
            }
        });
        (url, hits)
    }

    fn fast() -> CachePolicy {
        CachePolicy {
            refresh: Duration::from_millis(20),
            min_refetch: Duration::from_millis(20),
            retry: Duration::from_millis(20),
        }
    }

    fn keys(url: &Url, ca: Option<&std::path::Path>, policy: CachePolicy) -> Arc<RemoteKeys> {
        let issuer = url.origin().ascii_serialization();
        Arc::new(RemoteKeys::new(&issuer, Some(url.clone()), ca, policy).expect("keys"))
    }

    /// Waits (bounded) until the server has answered more than `n` requests.
    async fn polled_past(hits: &AtomicUsize, n: usize) -> bool {
        for _ in 0..200 {
            if hits.load(Ordering::SeqCst) > n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    /// No request reaches the server for ten refresh intervals.
    async fn not_polled(hits: &AtomicUsize) -> bool {
        // A fetch under way when the task was told to stop may still land.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let before = hits.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(200)).await;
        hits.load(Ordering::SeqCst) == before
    }

    #[tokio::test]
    async fn a_stopped_or_dropped_refresher_stops_polling() {
        let shutdown = CancellationToken::new();
        let metrics = Arc::new(Metrics::new());

        let (url, hits) = jwks_server().await;
        let replaced = keys(&url, None, fast());
        replaced.start(metrics.clone(), &shutdown);
        assert!(polled_past(&hits, 2).await, "the refresher fetches");
        replaced.stop();
        assert!(not_polled(&hits).await, "a stopped refresher fetched again");
        assert!(
            matches!(replaced.find(Some("a")), KeyLookup::Found(_)),
            "the keys fetched stay usable after the stop"
        );

        let (url, hits) = jwks_server().await;
        let dropped = keys(&url, None, fast());
        dropped.start(metrics.clone(), &shutdown);
        assert!(polled_past(&hits, 2).await, "the refresher fetches");
        drop(dropped);
        assert!(not_polled(&hits).await, "a dropped refresher fetched again");

        assert!(!shutdown.is_cancelled(), "the relay's token is untouched");
    }

    #[test]
    fn same_source_needs_the_same_ca_file_and_policy() {
        let url = Url::parse("http://127.0.0.1:9/jwks").expect("url");
        let base = keys(&url, None, CachePolicy::default());
        assert!(base.same_source(&keys(&url, None, CachePolicy::default())));
        let slower = CachePolicy {
            refresh: Duration::from_secs(600),
            ..CachePolicy::default()
        };
        assert!(!base.same_source(&keys(&url, None, slower)));
        let other = Url::parse("http://127.0.0.1:9/other").expect("url");
        assert!(!base.same_source(&keys(&other, None, CachePolicy::default())));
        let dir = std::env::temp_dir().join(format!("keys-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let ca = dir.join("ca.pem");
        let cert = rcgen::generate_simple_self_signed(vec!["idp.test".into()]).expect("cert");
        std::fs::write(&ca, cert.cert.pem()).expect("write");
        let with_ca = keys(&url, Some(&ca), CachePolicy::default());
        let _ = std::fs::remove_dir_all(&dir);
        assert!(!base.same_source(&with_ca));
    }
}

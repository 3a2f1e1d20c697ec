//! The signing-key cache's decisions, free of sockets, tasks and clocks: which keys are held,
//! when the next fetch is due (on an interval; sooner, with backoff, after a failure), and
//! whether a token with an unknown `kid` may trigger one now (rate-limited). Not responsible
//! for fetching (`fetch`) or for running fetches (`super::RemoteKeys`).
//!
//! A failed fetch never drops keys: the last good set serves while the provider is away.

use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet};

/// How often keys are fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CachePolicy {
    /// Between two successful scheduled fetches.
    pub(crate) refresh: Duration,
    /// The least time between two fetches triggered by unknown `kid`s.
    pub(crate) min_refetch: Duration,
    /// The first retry after a failure; doubles per failure, up to `refresh`.
    pub(crate) retry: Duration,
}

impl Default for CachePolicy {
    fn default() -> CachePolicy {
        CachePolicy {
            refresh: Duration::from_secs(300),
            min_refetch: Duration::from_secs(10),
            retry: Duration::from_secs(2),
        }
    }
}

/// What a lookup by `kid` found.
#[derive(Debug, PartialEq)]
pub(crate) enum Lookup<'a> {
    /// The key.
    Found(&'a Jwk),
    /// Keys are held, but none with that `kid`.
    Unknown,
    /// No keys were ever fetched.
    NotLoaded,
}

/// What a successful fetch changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Change {
    /// Keys now held.
    pub(crate) keys: usize,
    /// Keys whose `kid` was not held before.
    pub(crate) added: usize,
    /// Keys no longer published.
    pub(crate) removed: usize,
}

/// The keys and the fetch schedule.
#[derive(Debug)]
pub(crate) struct KeyCache {
    policy: CachePolicy,
    keys: Option<JwkSet>,
    last_ok: Option<Instant>,
    last_try: Option<Instant>,
    last_refetch: Option<Instant>,
    failures: u32,
    in_flight: bool,
}

impl KeyCache {
    pub(crate) fn new(policy: CachePolicy) -> KeyCache {
        KeyCache {
            policy,
            keys: None,
            last_ok: None,
            last_try: None,
            last_refetch: None,
            failures: 0,
            in_flight: false,
        }
    }

    /// The key for a token's `kid` (a token without one matches a set of exactly one key).
    pub(crate) fn find(&self, kid: Option<&str>) -> Lookup<'_> {
        let Some(set) = &self.keys else {
            return Lookup::NotLoaded;
        };
        let found = match kid {
            Some(kid) => set.find(kid),
            None if set.keys.len() == 1 => set.keys.first(),
            None => None,
        };
        found.map_or(Lookup::Unknown, Lookup::Found)
    }

    /// Keys held now.
    pub(crate) fn len(&self) -> usize {
        self.keys.as_ref().map_or(0, |k| k.keys.len())
    }

    /// Consecutive failed fetches.
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }

    /// When the next scheduled fetch is due: at once before the first try; after a failure, a
    /// backoff from the last try; else the refresh interval after the last success.
    pub(crate) fn next_fetch(&self, now: Instant) -> Instant {
        match (self.last_try, self.last_ok) {
            (None, _) => now,
            (Some(t), _) if self.failures > 0 || self.keys.is_none() => t + self.backoff(),
            (_, Some(ok)) => ok + self.policy.refresh,
            (Some(t), None) => t + self.backoff(),
        }
    }

    fn backoff(&self) -> Duration {
        let n = self.failures.saturating_sub(1).min(16);
        self.policy
            .retry
            .saturating_mul(1u32 << n)
            .min(self.policy.refresh)
    }

    /// Starts a scheduled fetch when one is due and none is under way.
    pub(crate) fn start_scheduled(&mut self, now: Instant) -> bool {
        if self.in_flight || now < self.next_fetch(now) {
            return false;
        }
        self.start(now);
        true
    }

    /// A token named a `kid` not held (or keys were never fetched): starts a fetch unless one is
    /// under way or the last such fetch was less than `min_refetch` ago.
    pub(crate) fn start_refetch(&mut self, now: Instant) -> bool {
        let recent = self
            .last_refetch
            .is_some_and(|t| now.saturating_duration_since(t) < self.policy.min_refetch);
        if self.in_flight || recent {
            return false;
        }
        self.last_refetch = Some(now);
        self.start(now);
        true
    }

    fn start(&mut self, now: Instant) {
        self.in_flight = true;
        self.last_try = Some(now);
    }

    /// A fetch brought `set`: it replaces the keys held.
    pub(crate) fn on_fetched(&mut self, set: JwkSet, now: Instant) -> Change {
        let kid = |k: &Jwk| k.common.key_id.clone();
        let old: Vec<Option<String>> = self
            .keys
            .as_ref()
            .map(|s| s.keys.iter().map(kid).collect())
            .unwrap_or_default();
        let new: Vec<Option<String>> = set.keys.iter().map(kid).collect();
        let change = Change {
            keys: new.len(),
            added: new.iter().filter(|k| !old.contains(k)).count(),
            removed: old.iter().filter(|k| !new.contains(k)).count(),
        };
        self.keys = Some(set);
        self.last_ok = Some(now);
        self.failures = 0;
        self.in_flight = false;
        change
    }

    /// A fetch failed: the keys held stay; the next try backs off.
    pub(crate) fn on_failed(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        self.last_try = Some(now);
        self.in_flight = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(kids: &[&str]) -> JwkSet {
        let keys: Vec<_> = kids
            .iter()
            .map(|k| json!({"kty": "oct", "k": "c2VjcmV0", "kid": k, "alg": "HS256"}))
            .collect();
        serde_json::from_value(json!({ "keys": keys })).expect("jwks")
    }

    fn policy() -> CachePolicy {
        CachePolicy {
            refresh: Duration::from_secs(300),
            min_refetch: Duration::from_secs(10),
            retry: Duration::from_secs(2),
        }
    }

    #[test]
    fn first_fetch_at_once_then_on_the_interval() {
        let t0 = Instant::now();
        let mut c = KeyCache::new(policy());
        assert_eq!(c.find(Some("a")), Lookup::NotLoaded);
        assert!(c.start_scheduled(t0));
        assert!(!c.start_scheduled(t0), "one fetch at a time");
        let ch = c.on_fetched(set(&["a"]), t0);
        assert_eq!((ch.keys, ch.added, ch.removed), (1, 1, 0));
        assert!(matches!(c.find(Some("a")), Lookup::Found(_)));
        assert!(
            matches!(c.find(None), Lookup::Found(_)),
            "a lone key matches no kid"
        );
        assert_eq!(c.find(Some("b")), Lookup::Unknown);
        assert_eq!(c.next_fetch(t0), t0 + Duration::from_secs(300));
        assert!(!c.start_scheduled(t0 + Duration::from_secs(299)));
        assert!(c.start_scheduled(t0 + Duration::from_secs(300)));
    }

    #[test]
    fn failures_keep_the_last_good_keys_and_back_off() {
        let t0 = Instant::now();
        let mut c = KeyCache::new(policy());
        assert!(c.start_scheduled(t0));
        c.on_fetched(set(&["a", "b"]), t0);
        let t1 = t0 + Duration::from_secs(300);
        assert!(c.start_scheduled(t1));
        c.on_failed(t1);
        assert!(matches!(c.find(Some("a")), Lookup::Found(_)));
        assert_eq!(c.len(), 2);
        assert_eq!(c.next_fetch(t1), t1 + Duration::from_secs(2));
        let t2 = t1 + Duration::from_secs(2);
        assert!(c.start_scheduled(t2));
        c.on_failed(t2);
        assert_eq!(c.next_fetch(t2), t2 + Duration::from_secs(4));
        assert_eq!(c.failures(), 2);
        let t3 = t2 + Duration::from_secs(4);
        assert!(c.start_scheduled(t3));
        let ch = c.on_fetched(set(&["b", "c"]), t3);
        assert_eq!((ch.keys, ch.added, ch.removed), (2, 1, 1));
        assert_eq!(c.failures(), 0);
        assert_eq!(c.find(Some("a")), Lookup::Unknown);
    }

    #[test]
    fn backoff_is_capped_by_the_refresh_interval() {
        let t0 = Instant::now();
        let mut c = KeyCache::new(policy());
        let mut t = t0;
        for _ in 0..20 {
            assert!(c.start_scheduled(t));
            c.on_failed(t);
            t = c.next_fetch(t);
        }
        assert_eq!(c.len(), 0);
        assert!(c.next_fetch(t) - t <= Duration::from_secs(300));
    }

    #[test]
    fn unknown_kid_refetches_are_rate_limited() {
        let t0 = Instant::now();
        let mut c = KeyCache::new(policy());
        assert!(c.start_scheduled(t0));
        c.on_fetched(set(&["a"]), t0);
        let t1 = t0 + Duration::from_secs(1);
        assert!(c.start_refetch(t1), "the first unknown kid fetches at once");
        assert!(!c.start_refetch(t1), "not while one is under way");
        c.on_fetched(set(&["a", "b"]), t1);
        assert!(!c.start_refetch(t1 + Duration::from_secs(9)));
        assert!(c.start_refetch(t1 + Duration::from_secs(10)));
        c.on_failed(t1 + Duration::from_secs(10));
        assert!(matches!(c.find(Some("b")), Lookup::Found(_)));
    }
}

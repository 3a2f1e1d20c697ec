//! Call rate limits: a token bucket per user (over all of their sessions and tools) and per user
//! and tool. Sans-IO: the caller passes the time. A call over the limit is refused with the time
//! after which a retry succeeds; the session goes on.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A rate and the burst allowed above it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Calls per second, sustained.
    pub per_second: f64,
    /// Calls allowed at once after a quiet spell.
    pub burst: u32,
}

/// One bucket: `tokens` refill at `per_second` up to `burst`; a call takes one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(rate.burst.max(1)),
            at: now,
        }
    }

    /// Takes one token, or says how long until one is there.
    fn take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        let burst = f64::from(rate.burst.max(1));
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let wait = if rate.per_second > 0.0 {
            (1.0 - self.tokens) / rate.per_second
        } else {
            f64::MAX
        };
        Err(Duration::try_from_secs_f64(wait).unwrap_or(Duration::MAX))
    }

    /// Whether the bucket is full again (can be forgotten).
    fn is_full(&self, rate: Rate, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens + elapsed * rate.per_second >= f64::from(rate.burst.max(1))
    }
}

/// Which limit refused a call.
#[derive(Debug, Clone, PartialEq)]
pub struct Limited {
    /// `user` (over all tools) or `tool` (this user's calls to this tool).
    pub scope: &'static str,
    /// The limit.
    pub rate: Rate,
    /// When a retry will pass.
    pub retry_after: Duration,
}

impl Limited {
    /// The text of the JSON-RPC error.
    pub fn message(&self, user: &str, tool: &str) -> String {
        let whose = match self.scope {
            "user" => format!("user `{}`", shared::log_safe(user)),
            _ => format!("user `{}` on tool `{tool}`", shared::log_safe(user)),
        };
        format!(
            "rate limit: {} calls per second (burst {}) for {whose}; retry in {} ms",
            self.rate.per_second,
            self.rate.burst,
            self.retry_after.as_millis().max(1)
        )
    }
}

/// Most buckets kept per map before full ones are swept (bounds memory under many users).
const SWEEP_AT: usize = 4096;

/// The relay's buckets, shared by every session.
#[derive(Debug, Default)]
pub struct Limiter {
    users: Mutex<HashMap<String, Bucket>>,
    tools: Mutex<HashMap<(String, String), Bucket>>,
}

impl Limiter {
    /// Admits one call of `user` to `tool`, or says which limit refused it. A call refused by
    /// one limit takes nothing from the other.
    pub fn admit(
        &self,
        user: &str,
        tool: &str,
        per_user: Option<Rate>,
        per_tool: Option<Rate>,
        now: Instant,
    ) -> Result<(), Limited> {
        // The per-tool limit first: a call it refuses does not use the user's budget.
        if let Some(rate) = per_tool {
            let mut map = self.tools.lock().unwrap_or_else(|e| e.into_inner());
            sweep(&mut map, rate, now);
            let key = (user.to_owned(), tool.to_owned());
            let b = map.entry(key).or_insert_with(|| Bucket::full(rate, now));
            b.take(rate, now).map_err(|retry_after| Limited {
                scope: "tool",
                rate,
                retry_after,
            })?;
        }
        if let Some(rate) = per_user {
            let mut map = self.users.lock().unwrap_or_else(|e| e.into_inner());
            sweep(&mut map, rate, now);
            let b = map
                .entry(user.to_owned())
                .or_insert_with(|| Bucket::full(rate, now));
            b.take(rate, now).map_err(|retry_after| Limited {
                scope: "user",
                rate,
                retry_after,
            })?;
        }
        Ok(())
    }
}

/// Forgets full buckets once the map is large (at each power of two from [`SWEEP_AT`], so the
/// cost stays constant per call): a full bucket is the same as none.
fn sweep<K>(map: &mut HashMap<K, Bucket>, rate: Rate, now: Instant) {
    if map.len() >= SWEEP_AT && map.len().is_power_of_two() {
        map.retain(|_, b| !b.is_full(rate, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEN: Rate = Rate {
        per_second: 10.0,
        burst: 5,
    };

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let l = Limiter::default();
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(l.admit("alice", "t", Some(TEN), None, t0).is_ok());
        }
        let refused = l
            .admit("alice", "t", Some(TEN), None, t0)
            .expect_err("over");
        assert_eq!(refused.scope, "user");
        assert!(refused.retry_after <= Duration::from_millis(100));
        assert!(refused.retry_after > Duration::from_millis(90));
        // 100 ms later one token is back.
        let t1 = t0 + Duration::from_millis(100);
        assert!(l.admit("alice", "t", Some(TEN), None, t1).is_ok());
        assert!(l.admit("alice", "t", Some(TEN), None, t1).is_err());
    }

    #[test]
    fn users_do_not_share_a_budget() {
        let l = Limiter::default();
        let t0 = Instant::now();
        for _ in 0..5 {
            l.admit("alice", "t", Some(TEN), None, t0).ok();
        }
        assert!(l.admit("alice", "t", Some(TEN), None, t0).is_err());
        assert!(l.admit("bob", "t", Some(TEN), None, t0).is_ok());
    }

    #[test]
    fn the_tool_limit_applies_per_tool_and_spares_the_users_budget() {
        let l = Limiter::default();
        let t0 = Instant::now();
        let one = Rate {
            per_second: 1.0,
            burst: 1,
        };
        assert!(l.admit("alice", "a", Some(TEN), Some(one), t0).is_ok());
        let r = l
            .admit("alice", "a", Some(TEN), Some(one), t0)
            .expect_err("over");
        assert_eq!(r.scope, "tool");
        assert!(r.message("alice", "a").contains("on tool `a`"));
        // Another tool has its own budget; the refused call took nothing from the user's 5:
        // a took 1, b takes 1, c can take the 3 left, then the user's limit refuses.
        assert!(l.admit("alice", "b", Some(TEN), Some(one), t0).is_ok());
        for _ in 0..3 {
            assert!(l.admit("alice", "c", Some(TEN), None, t0).is_ok());
        }
        let r = l
            .admit("alice", "c", Some(TEN), None, t0)
            .expect_err("over");
        assert_eq!(r.scope, "user");
    }

    #[test]
    fn many_users_do_not_grow_the_table_for_ever() {
        let l = Limiter::default();
        let t0 = Instant::now();
        for n in 0..SWEEP_AT {
            l.admit(&format!("u{n}"), "t", Some(TEN), None, t0).ok();
        }
        // A second later every bucket is full again: the next new user sweeps them away.
        let later = t0 + Duration::from_secs(1);
        l.admit("late", "t", Some(TEN), None, later).ok();
        let size = l.users.lock().map(|m| m.len()).unwrap_or(0);
        assert_eq!(size, 1);
    }
}

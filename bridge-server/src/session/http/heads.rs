//! When the answers not begun yet must begin: each carrier's requests whose answer may still
//! be one whole JSON body wait at most [`JSON_WITHIN`]; this keeps their deadlines, oldest
//! first. Which requests still wait (and how an answer begins) is the carrier's business: it
//! says so with a `waiting` predicate, and deadlines of requests begun since are dropped as
//! they come to the front.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// How long a request's answer may take to be sent as one JSON body. A call answered sooner
/// (most are) costs one response write and no stream; a slower one, or one whose tool sends
/// progress or a request first, gets an SSE stream (on 2025-11-25 with a priming event that
/// lets the client resume it after a cut).
pub(crate) const JSON_WITHIN: Duration = Duration::from_millis(50);

/// The deadlines of answers not begun, by request key `K`, oldest first.
#[derive(Debug)]
pub(crate) struct HeadDeadlines<K>(VecDeque<(K, Instant)>);

impl<K> Default for HeadDeadlines<K> {
    fn default() -> Self {
        HeadDeadlines(VecDeque::new())
    }
}

impl<K: Copy> HeadDeadlines<K> {
    /// Request `k` waits from `now`; entries at the front that no longer wait are dropped.
    pub(crate) fn push(&mut self, k: K, now: Instant, waiting: impl Fn(&K) -> bool) {
        while self.0.front().is_some_and(|(old, _)| !waiting(old)) {
            self.0.pop_front();
        }
        self.0.push_back((k, now + JSON_WITHIN));
    }

    /// When the oldest is due (perhaps one begun since: then a wake-up finds nothing due).
    pub(crate) fn next(&self) -> Option<Instant> {
        self.0.front().map(|(_, at)| *at)
    }

    /// The next request still waiting whose time is up at `now`, if any; entries passed over
    /// (begun since) are dropped.
    pub(crate) fn pop_due(&mut self, now: Instant, waiting: impl Fn(&K) -> bool) -> Option<K> {
        while let Some(&(k, at)) = self.0.front() {
            let still = waiting(&k);
            if still && at > now {
                return None;
            }
            self.0.pop_front();
            if still {
                return Some(k);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_in_order_skipping_those_begun_and_pruned_as_they_reach_the_front() {
        let t0 = Instant::now();
        let mut d = HeadDeadlines::default();
        let waiting = |k: &u32| *k != 1;
        d.push(1, t0, waiting);
        d.push(2, t0, waiting);
        assert_eq!(d.next(), Some(t0 + JSON_WITHIN));
        assert_eq!(d.pop_due(t0, waiting), None, "not yet");
        assert_eq!(
            d.pop_due(t0 + JSON_WITHIN, waiting),
            Some(2),
            "1 began: passed over"
        );
        assert_eq!(d.pop_due(t0 + JSON_WITHIN, waiting), None);
        assert_eq!(d.next(), None);
        // A push drops what no longer waits at the front.
        d.push(1, t0, |_| true);
        d.push(3, t0, |k| *k != 1);
        assert_eq!(d.0.len(), 1);
    }
}

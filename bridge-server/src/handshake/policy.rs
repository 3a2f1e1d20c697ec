//! The handshake admission policy, free of sockets, tasks and clocks: may a new connection start
//! its handshake, and if every slot is taken, which handshake in progress gives way. The caller
//! passes the time in; the shell in `mod.rs` holds the policy behind a lock and closes the
//! connections it names. Also the tally behind the once-a-second shedding log line.
//!
//! Not responsible for timing handshakes out (the TLS timeout and hyper's `header_read_timeout`
//! do), nor for anything after a request head has arrived.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

/// Where a connection comes from, for the per-source bound: an IPv4 address, or an IPv6 /64
/// (one host, or one customer of a provider, usually holds a whole /64, so counting single IPv6
/// addresses would bound nothing). An IPv4-mapped IPv6 address (a dual-stack listener) counts as
/// its IPv4 address. Loopback addresses are sources like any other: 127.0.0.1 and 127.0.0.2 are
/// two sources.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Source {
    /// One IPv4 address.
    V4(Ipv4Addr),
    /// An IPv6 /64: the address with its last 64 bits cleared.
    V6(Ipv6Addr),
}

impl Source {
    /// The source a peer address belongs to.
    pub(crate) fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4),
                None => Source::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
            },
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::V4(a) => write!(f, "{a}"),
            Source::V6(prefix) => write!(f, "{prefix}/64"),
        }
    }
}

/// Why a connection was closed before its handshake ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum ShedReason {
    /// A newcomer whose source already has `max_handshakes_per_source` handshakes in progress.
    SourceLimit,
    /// A handshake in progress, the oldest of the source holding the most, closed to make room
    /// for a newcomer from a source holding fewer.
    Oldest,
    /// A newcomer, when every slot is taken and no handshake may give way to it.
    Full,
}

impl ShedReason {
    /// The metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            ShedReason::SourceLimit => "source_limit",
            ShedReason::Oldest => "oldest",
            ShedReason::Full => "full",
        }
    }
}

/// One handshake in progress. Ids grow with admission, so a smaller id is an older handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct HandshakeId(u64);

/// What [`Policy::admit`] decided.
#[derive(Debug)]
pub(crate) enum Admission<T> {
    /// The newcomer may start its handshake; `shed`, if any, must be closed now.
    Admitted {
        id: HandshakeId,
        shed: Option<Shed<T>>,
    },
    /// The newcomer must be closed at once.
    Refused(ShedReason),
}

/// A handshake in progress that gives way to a newcomer (always [`ShedReason::Oldest`]).
#[derive(Debug)]
pub(crate) struct Shed<T> {
    pub(crate) source: Source,
    /// How long it had been in its handshake.
    pub(crate) age: Duration,
    /// What the caller stored with it (the shell: the token that closes its connection).
    pub(crate) payload: T,
}

/// The bounds the policy keeps.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bounds {
    /// Handshakes in progress at once, over all sources (`max_handshakes`).
    pub(crate) total: usize,
    /// Handshakes in progress at once from one source (`max_handshakes_per_source`).
    pub(crate) per_source: usize,
    /// When the newcomer's source would hold as many as the largest one after the swap, a
    /// handshake gives way only once it is at least this old: it is then slow, not merely
    /// unlucky. (When the largest source holds two or more than the newcomer's, its oldest
    /// gives way whatever its age: it holds more than its share.)
    pub(crate) min_age: Duration,
}

struct Live<T> {
    source: Source,
    since: Instant,
    payload: T,
}

/// The handshakes in progress, by source, and the admission decision.
///
/// The rules, in order, for a newcomer from source `S` holding `n` handshakes:
/// 1. `n` ≥ `per_source`: refused ([`ShedReason::SourceLimit`]); a flood from one source cannot
///    take more than its bound.
/// 2. Fewer than `total` in progress: admitted.
/// 3. Otherwise take the source `V` ≠ `S` holding the most, `m` (ties: the one with the oldest
///    handshake). If `m` ≥ `n` + 2, or `m` = `n` + 1 and `V`'s oldest has been in its handshake
///    for `min_age`, that oldest handshake is shed and the newcomer admitted; otherwise the
///    newcomer is refused ([`ShedReason::Full`]).
///
/// So the slots drift toward an even share per source, the oldest (slowest) handshakes of the
/// largest holders go first, and sources holding equal shares do not churn each other's fresh
/// handshakes.
pub(crate) struct Policy<T> {
    bounds: Bounds,
    next: u64,
    live: HashMap<u64, Live<T>>,
    /// Ids in progress per source (never an empty set).
    by_source: HashMap<Source, BTreeSet<u64>>,
}

impl<T> Policy<T> {
    /// A policy with nothing in progress. Bounds below 1 count as 1.
    pub(crate) fn new(bounds: Bounds) -> Policy<T> {
        Policy {
            bounds: Bounds {
                total: bounds.total.max(1),
                per_source: bounds.per_source.max(1),
                min_age: bounds.min_age,
            },
            next: 0,
            live: HashMap::new(),
            by_source: HashMap::new(),
        }
    }

    /// Handshakes in progress.
    pub(crate) fn len(&self) -> usize {
        self.live.len()
    }

    /// Handshakes in progress from `source`.
    pub(crate) fn held_by(&self, source: Source) -> usize {
        self.by_source.get(&source).map_or(0, BTreeSet::len)
    }

    /// A connection from `source` arrived at `now`; `payload` is kept with it while it is in its
    /// handshake, and handed back if it is shed.
    pub(crate) fn admit(&mut self, source: Source, now: Instant, payload: T) -> Admission<T> {
        let mine = self.held_by(source);
        if mine >= self.bounds.per_source {
            return Admission::Refused(ShedReason::SourceLimit);
        }
        let shed = if self.live.len() >= self.bounds.total {
            let Some(victim) = self.victim(source, mine, now) else {
                return Admission::Refused(ShedReason::Full);
            };
            self.remove(victim).map(|live| Shed {
                source: live.source,
                age: now.saturating_duration_since(live.since),
                payload: live.payload,
            })
        } else {
            None
        };
        let id = self.next;
        self.next += 1;
        self.live.insert(
            id,
            Live {
                source,
                since: now,
                payload,
            },
        );
        self.by_source.entry(source).or_default().insert(id);
        Admission::Admitted {
            id: HandshakeId(id),
            shed,
        }
    }

    /// The handshake `id` is over: its request head arrived, or it failed, timed out or was
    /// shed. Returns its payload if it was still in progress (`None` the second time).
    pub(crate) fn finish(&mut self, id: HandshakeId) -> Option<T> {
        self.remove(id.0).map(|live| live.payload)
    }

    /// The handshake that gives way to a newcomer from `newcomer` (holding `mine`), if any.
    fn victim(&self, newcomer: Source, mine: usize, now: Instant) -> Option<u64> {
        // The largest other source; on a tie, the one whose oldest handshake is oldest.
        let (most, oldest) = self
            .by_source
            .iter()
            .filter(|(source, _)| **source != newcomer)
            .filter_map(|(_, ids)| Some((ids.len(), *ids.first()?)))
            .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)))?;
        let since = self.live.get(&oldest)?.since;
        let slow = now.saturating_duration_since(since) >= self.bounds.min_age;
        (most >= mine + 2 || (most == mine + 1 && slow)).then_some(oldest)
    }

    fn remove(&mut self, id: u64) -> Option<Live<T>> {
        let live = self.live.remove(&id)?;
        if let Some(ids) = self.by_source.get_mut(&live.source) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_source.remove(&live.source);
            }
        }
        Some(live)
    }
}

/// Connections shed, per reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) source_limit: u64,
    pub(crate) oldest: u64,
    pub(crate) full: u64,
}

impl Counts {
    fn add(&mut self, reason: ShedReason, n: u64) {
        let slot = match reason {
            ShedReason::SourceLimit => &mut self.source_limit,
            ShedReason::Oldest => &mut self.oldest,
            ShedReason::Full => &mut self.full,
        };
        *slot = slot.saturating_add(n);
    }

    fn merge(&mut self, other: Counts) {
        self.add(ShedReason::SourceLimit, other.source_limit);
        self.add(ShedReason::Oldest, other.oldest);
        self.add(ShedReason::Full, other.full);
    }

    pub(crate) fn total(&self) -> u64 {
        self.source_limit
            .saturating_add(self.oldest)
            .saturating_add(self.full)
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts = [
            (self.source_limit, "over the per-source bound"),
            (self.oldest, "oldest shed for a newcomer"),
            (self.full, "refused, all slots busy"),
        ];
        let mut first = true;
        for (n, what) in parts.into_iter().filter(|(n, _)| *n > 0) {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{n} {what}")?;
        }
        Ok(())
    }
}

/// Sources named in one log line; the rest are summed.
const SHOWN_SOURCES: usize = 5;

/// Sources counted apart within one window; past this, new sources go into one sum, so a flood
/// from many addresses cannot grow the tally.
const TALLIED_SOURCES: usize = 256;

/// Shedding counted per source since the last log line.
#[derive(Default)]
pub(crate) struct Tally {
    by_source: HashMap<Source, Counts>,
    /// Sources past [`TALLIED_SOURCES`].
    untallied: Counts,
}

impl Tally {
    pub(crate) fn record(&mut self, source: Source, reason: ShedReason) {
        if let Some(c) = self.by_source.get_mut(&source) {
            c.add(reason, 1);
        } else if self.by_source.len() < TALLIED_SOURCES {
            let mut c = Counts::default();
            c.add(reason, 1);
            self.by_source.insert(source, c);
        } else {
            self.untallied.add(reason, 1);
        }
    }

    /// What was counted since the last call, and a fresh start; `None` when nothing was.
    pub(crate) fn take(&mut self) -> Option<Summary> {
        let by_source = std::mem::take(&mut self.by_source);
        let untallied = std::mem::take(&mut self.untallied);
        if by_source.is_empty() && untallied.total() == 0 {
            return None;
        }
        let mut all: Vec<(Source, Counts)> = by_source.into_iter().collect();
        all.sort_by(|a, b| b.1.total().cmp(&a.1.total()).then(a.0.cmp(&b.0)));
        let mut total = untallied;
        let mut rest = untallied;
        for (i, (_, c)) in all.iter().enumerate() {
            total.merge(*c);
            if i >= SHOWN_SOURCES {
                rest.merge(*c);
            }
        }
        all.truncate(SHOWN_SOURCES);
        Some(Summary {
            total,
            top: all,
            rest,
        })
    }
}

/// One window of shedding, for one log line.
#[derive(Debug)]
pub(crate) struct Summary {
    pub(crate) total: Counts,
    /// The sources that lost most, most first.
    pub(crate) top: Vec<(Source, Counts)>,
    /// The others, summed.
    pub(crate) rest: Counts,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.total.total(), self.total)?;
        for (source, c) in &self.top {
            write!(f, "; {source}: {c}")?;
        }
        if self.rest.total() > 0 {
            write!(f, "; other sources: {}", self.rest)?;
        }
        Ok(())
    }
}

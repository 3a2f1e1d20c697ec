//! The relay-wide table of sessions: limits checked and slots taken under one lock, the way to
//! hand a resumed connection to its session, and tombstones that tell a returning client why
//! its session ended. A slot is held until the session's tool process is reaped, so the limits
//! bound processes, not just connections. Running sessions is not this module's business.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::info::SessionInfo;
use super::{Attach, HttpDoor};

/// How many ended sessions are remembered, so a returning client learns why its session ended.
const TOMBSTONES: usize = 4096;

/// Relay-wide table of live sessions, and the reasons recent ones ended.
#[derive(Default)]
pub(crate) struct Registry {
    live: Mutex<HashMap<String, Entry>>,
    /// (session id, user, why it ended), newest last.
    ended: Mutex<VecDeque<(String, String, String)>>,
}

struct Entry {
    tool: String,
    /// The principal that opened the session; only it may resume it.
    user: String,
    door: Door,
    /// Set once the session has ended while its tool is still being ended: why.
    ending: Option<String>,
    /// What the admin API shows, and its way to end the session.
    info: Arc<SessionInfo>,
}

/// How a new connection or request reaches a running session: by its carrier.
pub(crate) enum Door {
    /// A WebSocket session: a resumed connection is handed over.
    Ws(mpsc::Sender<Attach>),
    /// A Streamable HTTP session: requests are sent to it.
    Http(HttpDoor),
    /// A pooled process for session-less (2026-07-28) requests: reached through the pool
    /// (`session::modern::pool`), never by a session id.
    Modern,
}

/// The session limits a new session must fit in.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SessionLimits {
    pub(crate) total: usize,
    pub(crate) per_user: usize,
    pub(crate) per_tool: Option<usize>,
}

/// Which limit a new session would pass, and its value.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Over {
    User(usize),
    Relay(usize),
    Tool(usize),
}

/// Why the admin API finds no one session for an id.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// No live session has this id (or starts with it).
    Unknown,
    /// Several live sessions start with this prefix.
    Ambiguous(usize),
}

/// Shortest id prefix the admin API takes: the 8 digits the logs show.
pub(crate) const MIN_PREFIX: usize = 8;

/// Why a resume cannot happen.
pub(crate) enum ResumeRefusal {
    /// The session ended; the reason is known.
    Ended(String),
    /// Never heard of it (the relay restarted, or it ended long ago, or another node has it).
    Unknown,
    /// It exists but for another tool or another user (answered like `Unknown`, so nobody
    /// learns that someone else's session exists).
    NotYours,
}

impl Registry {
    fn live(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn tombstones(&self) -> MutexGuard<'_, VecDeque<(String, String, String)>> {
        self.ended.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether no session is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.live().is_empty()
    }

    /// Registers a new session unless that would pass a limit; the check and the insert happen
    /// under one lock.
    pub(crate) fn try_insert(
        &self,
        info: &Arc<SessionInfo>,
        door: Door,
        limits: SessionLimits,
    ) -> Result<(), Over> {
        let (id, tool, user) = (info.id.as_str(), info.tool.as_str(), info.user.as_str());
        let mut live = self.live();
        if live.values().filter(|e| e.user == user).count() >= limits.per_user {
            return Err(Over::User(limits.per_user));
        }
        if live.len() >= limits.total {
            return Err(Over::Relay(limits.total));
        }
        if let Some(max) = limits.per_tool {
            if live.values().filter(|e| e.tool == tool).count() >= max {
                return Err(Over::Tool(max));
            }
        }
        live.insert(
            id.to_owned(),
            Entry {
                tool: tool.to_owned(),
                user: user.to_owned(),
                door,
                ending: None,
                info: info.clone(),
            },
        );
        Ok(())
    }

    /// Every live session (those whose tool is still being ended included), oldest first.
    pub(crate) fn list(&self) -> Vec<Arc<SessionInfo>> {
        let mut all: Vec<Arc<SessionInfo>> = self.live().values().map(|e| e.info.clone()).collect();
        all.sort_by(|a, b| a.started_ms().cmp(&b.started_ms()).then(a.id.cmp(&b.id)));
        all
    }

    /// The live session whose id is `id`, or the one whose id (or its random part, after a
    /// `node_id.`) starts with it (at least [`MIN_PREFIX`] characters, as the logs show them).
    pub(crate) fn find(&self, id: &str) -> Result<Arc<SessionInfo>, Lookup> {
        let live = self.live();
        if let Some(e) = live.get(id) {
            return Ok(e.info.clone());
        }
        if id.len() < MIN_PREFIX {
            return Err(Lookup::Unknown);
        }
        let mut found = live.iter().filter(|(sid, _)| {
            sid.starts_with(id) || sid.rsplit_once('.').is_some_and(|(_, r)| r.starts_with(id))
        });
        match (found.next(), found.count()) {
            (Some((_, e)), 0) => Ok(e.info.clone()),
            (Some(_), more) => Err(Lookup::Ambiguous(more + 1)),
            (None, _) => Err(Lookup::Unknown),
        }
    }

    /// The way to hand a connection to WebSocket session `id` of `tool`.
    pub(crate) fn attach_handle(
        &self,
        id: &str,
        tool: &str,
        user: &str,
    ) -> Result<mpsc::Sender<Attach>, ResumeRefusal> {
        self.door(id, tool, user, |d| match d {
            Door::Ws(tx) => Some(tx.clone()),
            Door::Http(_) | Door::Modern => None,
        })
    }

    /// The way to send requests to Streamable HTTP session `id` of `tool`.
    pub(crate) fn http_handle(
        &self,
        id: &str,
        tool: &str,
        user: &str,
    ) -> Result<HttpDoor, ResumeRefusal> {
        self.door(id, tool, user, |d| match d {
            Door::Http(h) => Some(h.clone()),
            Door::Ws(_) | Door::Modern => None,
        })
    }

    /// Session `id`'s door, if it is a live session of `tool` and `user` reached by the
    /// carrier `pick` accepts (another carrier's session is as unknown as someone else's).
    fn door<T>(
        &self,
        id: &str,
        tool: &str,
        user: &str,
        pick: impl FnOnce(&Door) -> Option<T>,
    ) -> Result<T, ResumeRefusal> {
        // Both tables are read under the live table's lock, as `release` moves a session from
        // one to the other: a session being released is in one of them, never in neither.
        let live = self.live();
        if let Some(entry) = live.get(id) {
            if entry.tool != tool || entry.user != user {
                return Err(ResumeRefusal::NotYours);
            }
            if let Some(why) = &entry.ending {
                return Err(ResumeRefusal::Ended(why.clone()));
            }
            return pick(&entry.door).ok_or(ResumeRefusal::NotYours);
        }
        match self.tombstones().iter().rev().find(|(sid, _, _)| sid == id) {
            Some((_, owner, reason)) if owner == user => Err(ResumeRefusal::Ended(reason.clone())),
            // Someone else's ended session: as unknown as a live one would be.
            _ => Err(ResumeRefusal::Unknown),
        }
    }

    /// The reason session `id` ended, if it did.
    pub(crate) fn ended_reason(&self, id: &str) -> Option<String> {
        let live = self.live();
        if let Some(why) = live.get(id).and_then(|e| e.ending.clone()) {
            return Some(why);
        }
        self.tombstones()
            .iter()
            .rev()
            .find(|(sid, _, _)| sid == id)
            .map(|(_, _, r)| r.clone())
    }

    /// Forgets a session that never started (its upgrade failed, or its tool could not start).
    pub(crate) fn end_quietly(&self, id: &str) {
        if let Some(entry) = self.live().remove(id) {
            entry.info.set_done();
        }
    }

    /// The session has ended (`reason`); its slot stays taken until [`Self::release`].
    pub(crate) fn ending(&self, id: &str, reason: &str) {
        if let Some(e) = self.live().get_mut(id) {
            e.ending = Some(reason.to_owned());
        }
    }

    /// The session's tool is reaped: free the slot and keep a tombstone.
    pub(crate) fn release(&self, id: &str) {
        let mut live = self.live();
        let Some(entry) = live.remove(id) else {
            return;
        };
        entry.info.set_done();
        // Still under the live table's lock: a resume finds the session in one table or the
        // other.
        let mut ended = self.tombstones();
        if ended.len() >= TOMBSTONES {
            ended.pop_front();
        }
        ended.push_back((id.to_owned(), entry.user, entry.ending.unwrap_or_default()));
    }
}

/// The relay's two shutdown stages, shared by every session.
#[derive(Clone, Debug, Default)]
pub(crate) struct Shutdown {
    /// Stop taking new work; let calls in flight finish.
    pub(crate) drain: CancellationToken,
    /// End everything now.
    pub(crate) force: CancellationToken,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert(r: &Registry, id: &str) -> Arc<SessionInfo> {
        let info = Arc::new(SessionInfo::new(id, "alice", "demo", "ws", "v1"));
        let limits = SessionLimits {
            total: 10,
            per_user: 10,
            per_tool: None,
        };
        assert!(r
            .try_insert(&info, Door::Ws(mpsc::channel(1).0), limits)
            .is_ok());
        info
    }

    #[test]
    fn the_admin_api_finds_a_session_by_its_id_or_a_long_enough_prefix() {
        let r = Registry::default();
        insert(&r, "0123456789abcdef0123456789abcdef");
        insert(&r, "01234567ffffffff0123456789abcdef");
        insert(&r, "fedcba9876543210fedcba9876543210");
        insert(&r, "relay-2.abcdef0123456789abcdef0123456789");
        assert_eq!(r.list().len(), 4);
        // With a node id, by the random part as the logs show it, or by the whole prefix.
        for prefix in ["abcdef01", "relay-2.abc"] {
            assert!(r
                .find(prefix)
                .is_ok_and(|s| s.id == "relay-2.abcdef0123456789abcdef0123456789"));
        }
        let whole = r.find("0123456789abcdef0123456789abcdef");
        assert!(whole.is_ok_and(|s| s.id.starts_with("0123456789")));
        assert!(r
            .find("fedcba98")
            .is_ok_and(|s| s.id.starts_with("fedcba98")));
        assert_eq!(r.find("01234567").err(), Some(Lookup::Ambiguous(2)));
        assert_eq!(r.find("0123456").err(), Some(Lookup::Unknown), "too short");
        assert_eq!(r.find("fedc").err(), Some(Lookup::Unknown), "too short");
        assert_eq!(r.find("99999999").err(), Some(Lookup::Unknown));
    }

    #[test]
    fn release_says_the_session_is_done() {
        let r = Registry::default();
        let info = insert(&r, "0123456789abcdef0123456789abcdef");
        r.ending(&info.id, "ended");
        assert!(r.find(&info.id).is_ok(), "listed while its tool is ended");
        r.release(&info.id);
        assert!(r.list().is_empty());
        assert!(futures_util::FutureExt::now_or_never(info.wait_done()).is_some());
        // A session that never started is done too (an end asked meanwhile does not wait).
        let never = insert(&r, "fedcba9876543210fedcba9876543210");
        r.end_quietly(&never.id);
        assert!(futures_util::FutureExt::now_or_never(never.wait_done()).is_some());
    }
}

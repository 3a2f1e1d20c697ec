//! The relay-wide table of sessions: limits checked and slots taken under one lock, the way to
//! hand a resumed connection to its session, and tombstones that tell a returning client why
//! its session ended. A slot is held until the session's tool process is reaped, so the limits
//! bound processes, not just connections. Running sessions is not this module's business.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

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
        id: &str,
        tool: &str,
        user: &str,
        door: Door,
        limits: SessionLimits,
    ) -> Result<(), Over> {
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
            },
        );
        Ok(())
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

    /// Forgets a session that never started (its upgrade failed).
    pub(crate) fn end_quietly(&self, id: &str) {
        self.live().remove(id);
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

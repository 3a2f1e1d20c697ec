//! Which tool process serves a user's session-less (2026-07-28) requests: one pooled process
//! per (user, tool), started on the first request and found again for the next ones while it
//! runs, and which tools were found to speak only the handshake era (so modern clients are
//! told to fall back at once, without a process started for nothing). Starting the process
//! (limits, spawn) is the HTTP layer's `start`; running it is the session driver's.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::carrier::Call;
use super::mux::Era;

/// How long a tool found to speak only the handshake era is believed to, before one more
/// process is started to ask it again (the tool may have been upgraded).
const VERDICT_FOR: Duration = Duration::from_secs(600);
/// Calls that may queue for one pooled process; further handlers wait.
pub(crate) const QUEUED_CALLS: usize = 8;

#[derive(Default)]
struct State {
    /// (user, tool) → the pooled process's inlet.
    doors: HashMap<(String, String), mpsc::Sender<Call>>,
    /// tool → when it was found to speak only the handshake era.
    handshake: HashMap<String, Instant>,
    /// How many doors there may be before the ended ones are swept out (twice the live ones
    /// at the last sweep), so a request does not scan every user's door.
    sweep_at: usize,
}

/// The fewest doors kept before a sweep.
const SWEEP_MIN: usize = 64;

/// The relay's pooled processes for session-less requests.
#[derive(Default)]
pub(crate) struct Pool {
    state: Mutex<State>,
}

impl Pool {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `tool` was found to speak only the handshake era, recently.
    pub(crate) fn is_handshake(&self, tool: &str, now: Instant) -> bool {
        self.state()
            .handshake
            .get(tool)
            .is_some_and(|at| now < *at + VERDICT_FOR)
    }

    /// What a pooled process of `tool` found out.
    pub(crate) fn verdict(&self, tool: &str, era: Era, now: Instant) {
        let mut s = self.state();
        match era {
            Era::Handshake => {
                s.handshake.insert(tool.to_owned(), now);
            }
            Era::Modern => {
                s.handshake.remove(tool);
            }
        }
    }

    /// The inlet of `user`'s running process of `tool`, or one `start` makes (called under
    /// the pool's lock, so two first requests start one process). `start` gets the receiving
    /// end for the new process's carrier.
    pub(crate) fn door_or_start<E>(
        &self,
        user: &str,
        tool: &str,
        start: impl FnOnce(mpsc::Receiver<Call>) -> Result<(), E>,
    ) -> Result<mpsc::Sender<Call>, E> {
        let mut s = self.state();
        let key = (user.to_owned(), tool.to_owned());
        if let Some(d) = s.doors.get(&key).filter(|d| !d.is_closed()) {
            return Ok(d.clone());
        }
        if s.doors.len() >= s.sweep_at {
            s.doors.retain(|_, d| !d.is_closed());
            s.sweep_at = (2 * s.doors.len()).max(SWEEP_MIN);
        }
        let (tx, rx) = mpsc::channel(QUEUED_CALLS);
        s.doors.insert(key.clone(), tx.clone());
        // Starting a process (a fork, perhaps a sandbox) happens outside the lock: other
        // users' and tools' requests do not wait for it. A request that finds this door
        // meanwhile queues its call; if the start fails, its send fails and it tries again.
        drop(s);
        if let Err(e) = start(rx) {
            let mut s = self.state();
            if s.doors.get(&key).is_some_and(|d| d.same_channel(&tx)) {
                s.doors.remove(&key);
            }
            return Err(e);
        }
        Ok(tx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_process_per_user_and_tool_and_a_new_one_after_it_ends() {
        let pool = Pool::default();
        let mut started = Vec::new();
        let a1 = pool
            .door_or_start::<()>("alice", "time", |rx| {
                started.push(rx);
                Ok(())
            })
            .expect("a1");
        let a2 = pool
            .door_or_start::<()>("alice", "time", |_| panic!("started twice"))
            .expect("a2");
        assert!(a1.same_channel(&a2));
        let b = pool
            .door_or_start::<()>("bob", "time", |rx| {
                started.push(rx);
                Ok(())
            })
            .expect("b");
        assert!(!a1.same_channel(&b), "another user gets another process");
        assert_eq!(started.len(), 2);
        // Alice's process ends: her next request starts a new one.
        drop(started.remove(0));
        let a3 = pool
            .door_or_start::<()>("alice", "time", |rx| {
                started.push(rx);
                Ok(())
            })
            .expect("a3");
        assert!(!a3.same_channel(&a1));
        assert!(pool
            .door_or_start("carol", "time", |_| Err("refused"))
            .is_err());
        // A failed start leaves no door behind: the next request starts a process.
        let mut carol = Vec::new();
        pool.door_or_start::<()>("carol", "time", |rx| {
            carol.push(rx);
            Ok(())
        })
        .expect("carol");
        assert_eq!(carol.len(), 1);
        // Starting does not hold the pool: another user's door is found meanwhile.
        pool.door_or_start::<()>("dave", "time", |_| {
            pool.door_or_start::<()>("carol", "time", |_| panic!("carol started twice"))
                .map(|_| ())
        })
        .expect("dave");
    }

    #[test]
    fn ended_processes_are_swept_out_now_and_then() {
        let pool = Pool::default();
        for i in 0..3 * SWEEP_MIN {
            pool.door_or_start::<()>(&format!("user{i}"), "time", |rx| {
                drop(rx);
                Ok(())
            })
            .expect("start");
        }
        // Every process ended at once (its receiver dropped): the map never held more than
        // twice the live ones, and a live one is kept.
        let mut kept = None;
        let live = pool
            .door_or_start::<()>("alice", "time", |rx| {
                kept = Some(rx);
                Ok(())
            })
            .expect("alice");
        assert!(
            pool.state().doors.len() <= SWEEP_MIN,
            "{}",
            pool.state().doors.len()
        );
        let again = pool
            .door_or_start::<()>("alice", "time", |_| panic!("started twice"))
            .expect("alice again");
        assert!(live.same_channel(&again));
    }

    #[test]
    fn a_handshake_verdict_holds_for_a_while() {
        let pool = Pool::default();
        let now = Instant::now();
        assert!(!pool.is_handshake("demo", now));
        pool.verdict("demo", Era::Handshake, now);
        assert!(pool.is_handshake("demo", now + Duration::from_secs(1)));
        assert!(!pool.is_handshake("demo", now + VERDICT_FOR));
        pool.verdict("demo", Era::Modern, now);
        assert!(!pool.is_handshake("demo", now));
    }
}

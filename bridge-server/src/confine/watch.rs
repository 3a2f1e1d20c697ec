//! Watches a tool's cgroup while it runs: a tool that reaches its process limit (a fork loop)
//! is ended at once, with the reason kept for the session's end.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::config::ToolLimits;

use super::cgroup::ToolCgroup;

/// How often a tool's cgroup is looked at.
const EVERY: Duration = Duration::from_millis(250);

/// Which limit ended a tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KillReason {
    /// The OOM killer, at the memory limit.
    Memory,
    /// SIGXCPU at the CPU time limit.
    Cpu,
    /// The relay, when the tool reached its process limit.
    Processes,
    /// The relay, when the tool wrote too much without a newline.
    Unterminated,
}

impl KillReason {
    /// "was killed by its memory limit (512 MiB)".
    pub(crate) fn describe(self, l: &ToolLimits) -> String {
        match self {
            KillReason::Memory => format!(
                "was killed by its memory limit ({})",
                l.memory
                    .map_or("set by the host".to_owned(), |m| shared::human_bytes(
                        usize::try_from(m).unwrap_or(usize::MAX)
                    ))
            ),
            KillReason::Cpu => format!(
                "was killed by its CPU time limit ({} s)",
                l.cpu_seconds.unwrap_or_default()
            ),
            KillReason::Processes => format!(
                "was ended by the relay: it reached its process limit ({} processes)",
                l.processes.unwrap_or_default()
            ),
            KillReason::Unterminated => format!(
                "was ended by the relay: it wrote more than {} on stdout without a newline",
                shared::human_bytes(usize::try_from(l.max_unterminated).unwrap_or(usize::MAX))
            ),
        }
    }
}

/// Why the relay ended a tool, if it did; shared with the cgroup's watcher.
#[derive(Debug, Clone, Default)]
pub(crate) struct Watch {
    killed: Arc<Mutex<Option<KillReason>>>,
}

impl Watch {
    /// Starts watching `cgroup` (until it is dropped).
    pub(crate) fn start(cgroup: &Arc<ToolCgroup>) -> Watch {
        let watch = Watch::default();
        let weak: Weak<ToolCgroup> = Arc::downgrade(cgroup);
        let w = watch.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(cg) = weak.upgrade() else { return };
                if cg.pids_refusals() > 0 {
                    w.record(KillReason::Processes);
                    cg.kill_all();
                    return;
                }
            }
        });
        watch
    }

    /// Records that the relay ended the tool for `reason` (the first reason wins).
    pub(crate) fn record(&self, reason: KillReason) {
        if let Ok(mut k) = self.killed.lock() {
            k.get_or_insert(reason);
        }
    }

    /// The reason recorded, if any.
    pub(crate) fn killed(&self) -> Option<KillReason> {
        self.killed.lock().ok().and_then(|k| *k)
    }
}

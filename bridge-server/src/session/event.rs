//! What a session core tells its driver to record: calls that finished and how, bytes moved,
//! refusals, detaches and resumes, the tool's end. Types only; the core makes them, the driver
//! turns them into metrics and log lines.

use std::time::Duration;

use tokio::time::Instant;

use shared::ingress::{Peer, RefusalKind};

use super::end::Source;

/// A client call in flight, as the audit log describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Call {
    /// Its method, cut at `ingress::METHOD_KEEP` bytes.
    pub(crate) method: Box<str>,
    /// For `tools/call`: the tool called, cut the same way.
    pub(crate) tool_name: Option<Box<str>>,
    pub(crate) started: Instant,
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok,
    Error,
    Cancelled,
    ToolExited,
    SessionEnded,
    Refused,
    /// Over the user's or the tool's call rate.
    RateLimited,
    /// A tool the user's policy hides.
    Denied,
}

impl Outcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Cancelled => "cancelled",
            Outcome::ToolExited => "tool_exited",
            Outcome::SessionEnded => "session_ended",
            Outcome::Refused => "refused",
            Outcome::RateLimited => "rate_limited",
            Outcome::Denied => "denied",
        }
    }
}

/// Something for the driver to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// A client call finished (audit line, latency).
    Call {
        call: Call,
        outcome: Outcome,
    },
    /// A client request was answered with a JSON-RPC error: whose doing it was, and its code
    /// (`None` when a tool's error had no integer code).
    ErrorAnswer {
        source: Source,
        code: Option<i64>,
    },
    /// A message went to the client / to the tool (bytes).
    ToClient(usize),
    ToTool(usize),
    /// A message was not forwarded (one warning line; peer text already escaped).
    Refused {
        from: Peer,
        kind: RefusalKind,
        what: String,
    },
    /// The tool has taken none of its waiting input (`waiting` bytes) for `after`: requests
    /// are answered at once instead of queued, until it takes some again.
    Shedding {
        waiting: usize,
        after: Duration,
    },
    /// The client's connection went; the session waits for a resume.
    Detached {
        why: String,
    },
    /// A connection resumed the session.
    Resumed {
        away: Duration,
        replay: usize,
    },
    /// A resume was refused (its connection gets `why`); the session goes on waiting.
    ResumeRefused {
        why: String,
    },
    /// The tool is gone: how, and whether it exited cleanly by itself.
    ToolGone {
        how: String,
        clean: bool,
    },
}

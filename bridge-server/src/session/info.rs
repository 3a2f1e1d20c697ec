//! What the admin API can see of a live session and how it can end one: fixed facts (id, user,
//! tool, carrier, when it started), figures the session's driver keeps current (state, last
//! activity, calls, messages and bytes each way, the tool's pid) as relaxed atomics — a few
//! stores per message, no lock on the message path — and the token that asks the driver to end
//! the session. Reading them for a listing is [`SessionInfo::snapshot`]; serving them is the
//! admin module's job, deciding anything about messages is not this module's.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// Where a session stands, as the admin API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum State {
    /// A client is connected (for Streamable HTTP: the session is open).
    Attached,
    /// The client went away; the session waits for a resume (within the resume window).
    Detached,
    /// The relay drains: the session ends once its calls in flight are answered.
    Draining,
    /// The session has ended; its tool is being ended and reaped.
    Ending,
}

impl State {
    fn from_u8(n: u8) -> State {
        match n {
            0 => State::Attached,
            1 => State::Detached,
            2 => State::Draining,
            _ => State::Ending,
        }
    }
}

/// Why the relay asks a session to end (through its [`SessionInfo`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EndRequest {
    /// An administrator (the admin API).
    Admin = 0,
    /// A config reload removed the session's credentials or grant.
    Revoked = 1,
}

/// One session's facts and running figures, shared by its driver (which writes them) and the
/// registry (which reads them for the admin API).
#[derive(Debug)]
pub(crate) struct SessionInfo {
    pub(crate) id: String,
    pub(crate) user: String,
    pub(crate) tool: String,
    /// `ws`, `http` or `http-modern`, as the carrier metrics label it.
    pub(crate) carrier: &'static str,
    /// `v1`, `mcp` or `http`: what the client speaks.
    pub(crate) wire: &'static str,
    /// When the session started, in ms since the Unix epoch.
    started_ms: u64,
    last_activity_ms: AtomicU64,
    state: AtomicU8,
    /// The tool's process id (0 until it is started).
    pid: AtomicU32,
    /// Client requests answered (by the tool or the relay).
    calls: AtomicU64,
    messages_to_tool: AtomicU64,
    messages_to_client: AtomicU64,
    bytes_to_tool: AtomicU64,
    bytes_to_client: AtomicU64,
    /// The static token the session was opened with (its SHA-256), for reloads.
    pub(crate) credential: Option<[u8; 32]>,
    /// Cancelled to ask the session's driver to end the session; `end_why` says why.
    end: CancellationToken,
    end_why: AtomicU8,
    /// A reload revoked the session's credentials with `on_revoke = "next_call"`: the session
    /// ends once its next call is answered.
    revoked_pending: AtomicBool,
    /// Cancelled once the session is over and its tool reaped.
    done: CancellationToken,
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl SessionInfo {
    pub(crate) fn new(
        id: &str,
        user: &str,
        tool: &str,
        carrier: &'static str,
        wire: &'static str,
    ) -> SessionInfo {
        let now = now_ms();
        SessionInfo {
            id: id.to_owned(),
            user: user.to_owned(),
            tool: tool.to_owned(),
            carrier,
            wire,
            started_ms: now,
            last_activity_ms: AtomicU64::new(now),
            state: AtomicU8::new(0),
            pid: AtomicU32::new(0),
            calls: AtomicU64::new(0),
            messages_to_tool: AtomicU64::new(0),
            messages_to_client: AtomicU64::new(0),
            bytes_to_tool: AtomicU64::new(0),
            bytes_to_client: AtomicU64::new(0),
            credential: None,
            end: CancellationToken::new(),
            end_why: AtomicU8::new(EndRequest::Admin as u8),
            revoked_pending: AtomicBool::new(false),
            done: CancellationToken::new(),
        }
    }

    /// With the static token the session was opened with.
    pub(crate) fn with_credential(mut self, credential: Option<[u8; 32]>) -> SessionInfo {
        self.credential = credential;
        self
    }

    /// When the session started, in ms since the Unix epoch.
    pub(crate) fn started_ms(&self) -> u64 {
        self.started_ms
    }

    pub(crate) fn set_pid(&self, pid: Option<u32>) {
        self.pid.store(pid.unwrap_or(0), Relaxed);
    }

    pub(crate) fn set_state(&self, state: State) {
        self.state.store(state as u8, Relaxed);
    }

    /// A message of `len` bytes went to the tool.
    pub(crate) fn to_tool(&self, len: usize) {
        self.messages_to_tool.fetch_add(1, Relaxed);
        self.bytes_to_tool.fetch_add(len as u64, Relaxed);
        self.touch();
    }

    /// A message of `len` bytes went to the client.
    pub(crate) fn to_client(&self, len: usize) {
        self.messages_to_client.fetch_add(1, Relaxed);
        self.bytes_to_client.fetch_add(len as u64, Relaxed);
        self.touch();
    }

    /// A client request was answered.
    pub(crate) fn call(&self) {
        self.calls.fetch_add(1, Relaxed);
    }

    fn touch(&self) {
        self.last_activity_ms.store(now_ms(), Relaxed);
    }

    /// Asks the session's driver to end the session, saying why; false if it was asked
    /// already (the first reason stands).
    pub(crate) fn request_end(&self, why: EndRequest) -> bool {
        let first = !self.end.is_cancelled();
        if first {
            self.end_why.store(why as u8, Relaxed);
        }
        self.end.cancel();
        first
    }

    /// Ends the session once its next call is answered (see `revoked_pending`).
    pub(crate) fn revoke_after_next_call(&self) {
        self.revoked_pending.store(true, Relaxed);
    }

    /// A call was answered: a session revoked "at its next call" ends now.
    pub(crate) fn call_answered(&self) {
        if self.revoked_pending.load(Relaxed) {
            self.request_end(EndRequest::Revoked);
        }
    }

    /// Why an end was asked for.
    pub(crate) fn end_request(&self) -> EndRequest {
        match self.end_why.load(Relaxed) {
            1 => EndRequest::Revoked,
            _ => EndRequest::Admin,
        }
    }

    /// Resolves when an end was asked for.
    pub(crate) async fn end_requested(&self) {
        self.end.cancelled().await;
    }

    /// The session is over and its tool reaped.
    pub(crate) fn set_done(&self) {
        self.done.cancel();
    }

    /// Resolves once the session is over and its tool reaped.
    pub(crate) async fn wait_done(&self) {
        self.done.cancelled().await;
    }

    /// The figures as they stand, at `now_ms`.
    pub(crate) fn snapshot(&self, now_ms: u64) -> Snapshot {
        let started = self.started_ms;
        let last = self.last_activity_ms.load(Relaxed);
        let pid = self.pid.load(Relaxed);
        Snapshot {
            id: self.id.clone(),
            user: self.user.clone(),
            tool: self.tool.clone(),
            carrier: self.carrier,
            wire: self.wire,
            state: State::from_u8(self.state.load(Relaxed)),
            started: rfc3339(started),
            last_activity: rfc3339(last),
            age_s: now_ms.saturating_sub(started) / 1000,
            idle_s: now_ms.saturating_sub(last) / 1000,
            calls: self.calls.load(Relaxed),
            messages_to_tool: self.messages_to_tool.load(Relaxed),
            messages_to_client: self.messages_to_client.load(Relaxed),
            bytes_to_tool: self.bytes_to_tool.load(Relaxed),
            bytes_to_client: self.bytes_to_client.load(Relaxed),
            tool_pid: (pid != 0).then_some(pid),
        }
    }
}

/// A session as the admin API lists it (the JSON object of `GET /admin/sessions`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Snapshot {
    pub(crate) id: String,
    pub(crate) user: String,
    pub(crate) tool: String,
    pub(crate) carrier: &'static str,
    pub(crate) wire: &'static str,
    pub(crate) state: State,
    /// RFC 3339, UTC, to the millisecond.
    pub(crate) started: String,
    pub(crate) last_activity: String,
    pub(crate) age_s: u64,
    pub(crate) idle_s: u64,
    pub(crate) calls: u64,
    pub(crate) messages_to_tool: u64,
    pub(crate) messages_to_client: u64,
    pub(crate) bytes_to_tool: u64,
    pub(crate) bytes_to_client: u64,
    /// `null` before the tool is started.
    pub(crate) tool_pid: Option<u32>,
}

/// `ms` since the Unix epoch as RFC 3339 in UTC (`2026-12-03T12:00:00.000Z`).
pub(crate) fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// The proleptic Gregorian date of day `days` after 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// How long an end takes at most: stdin closed, then SIGTERM, each given the kill grace, then
/// SIGKILL and the reap.
pub(crate) fn end_wait(kill_grace: Duration) -> Duration {
    kill_grace * 2 + Duration::from_secs(3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_796_299_199_999), "2026-12-03T11:59:59.999Z");
        assert_eq!(rfc3339(4_107_542_400_000), "2100-03-01T00:00:00.000Z");
    }

    #[test]
    fn figures_add_up_and_show_in_the_snapshot() {
        let info = SessionInfo::new("a".repeat(32).as_str(), "alice", "demo", "ws", "v1");
        assert_eq!(info.snapshot(now_ms()).tool_pid, None);
        info.set_pid(Some(4242));
        info.to_tool(100);
        info.to_tool(20);
        info.to_client(7);
        info.call();
        info.set_state(State::Detached);
        let s = info.snapshot(now_ms() + 5_000);
        assert_eq!(s.tool_pid, Some(4242));
        assert_eq!((s.messages_to_tool, s.bytes_to_tool), (2, 120));
        assert_eq!((s.messages_to_client, s.bytes_to_client), (1, 7));
        assert_eq!(s.calls, 1);
        assert_eq!(s.state, State::Detached);
        assert!(s.idle_s >= 4 && s.age_s >= 4, "{s:?}");
        let json = serde_json::to_value(&s).unwrap_or_default();
        assert_eq!(json["state"], "detached");
        assert_eq!(json["carrier"], "ws");
    }

    #[test]
    fn an_end_is_asked_once() {
        let info = SessionInfo::new("b", "bob", "demo", "http", "http");
        assert!(info.request_end(EndRequest::Revoked));
        assert!(
            !info.request_end(EndRequest::Admin),
            "a second ask is not a new one"
        );
        assert_eq!(
            info.end_request(),
            EndRequest::Revoked,
            "the first reason stands"
        );
    }
}

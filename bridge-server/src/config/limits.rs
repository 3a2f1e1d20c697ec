//! The `[limits]` section: relay-wide limits and timeouts.

use std::time::Duration;

use super::diag::Problems;
use super::read::Section;
use super::Limits;

const DURATIONS: &[&str] = &[
    "header_read_timeout_ms",
    "kill_grace_ms",
    "shutdown_grace_ms",
    "resume_window_ms",
    "heartbeat_interval_ms",
    "heartbeat_timeout_ms",
    "idle_timeout_ms",
];

const COUNTS: &[&str] = &[
    "resume_buffer_messages",
    "resume_buffer_bytes",
    "max_sessions",
    "max_sessions_per_user",
    "max_handshakes",
    "max_handshakes_per_source",
    "calls_per_second",
    "call_burst",
    "max_header_bytes",
];

/// `[limits]`: every key optional, each with its default.
pub(super) fn limits(root: &Section<'_, '_>, p: &mut Problems<'_>) -> Limits {
    let defaults = Limits::default();
    let Some(l) = root.table("limits", p) else {
        return defaults;
    };
    let known: Vec<&str> = DURATIONS.iter().chain(COUNTS).copied().collect();
    l.only(&known, p);
    let mut ms = |field: &str, default: Duration| {
        l.uint(field, p)
            .map_or(default, |(n, _)| Duration::from_millis(n))
    };
    let header_read_timeout = ms("header_read_timeout_ms", defaults.header_read_timeout);
    let kill_grace = ms("kill_grace_ms", defaults.kill_grace);
    let shutdown_grace = ms("shutdown_grace_ms", defaults.shutdown_grace);
    let resume_window = ms("resume_window_ms", defaults.resume_window);
    let heartbeat = shared::carrier::Heartbeat {
        interval: ms("heartbeat_interval_ms", defaults.heartbeat.interval),
        timeout: ms("heartbeat_timeout_ms", defaults.heartbeat.timeout),
    };
    let idle_timeout = match l.uint("idle_timeout_ms", p) {
        Some((0, _)) => None,
        Some((n, _)) => Some(Duration::from_millis(n)),
        None => defaults.idle_timeout,
    };
    let mut count = |field: &str, default: usize| l.usize(field, p).map_or(default, |(n, _)| n);
    let limits = Limits {
        header_read_timeout,
        kill_grace,
        shutdown_grace,
        resume_window,
        resume_buffer_messages: count("resume_buffer_messages", defaults.resume_buffer_messages),
        resume_buffer_bytes: count("resume_buffer_bytes", defaults.resume_buffer_bytes),
        heartbeat,
        idle_timeout,
        max_sessions: count("max_sessions", defaults.max_sessions),
        max_sessions_per_user: count("max_sessions_per_user", defaults.max_sessions_per_user),
        max_handshakes: count("max_handshakes", defaults.max_handshakes).max(1),
        max_handshakes_per_source: count(
            "max_handshakes_per_source",
            defaults.max_handshakes_per_source,
        ),
        max_header_bytes: count("max_header_bytes", defaults.max_header_bytes).max(8192),
        call_rate: super::hosting::call_rate(&l, p),
    };
    if l.has("heartbeat_interval_ms") && limits.heartbeat.interval.is_zero() {
        p.error(
            l.span("heartbeat_interval_ms"),
            &l.key("heartbeat_interval_ms"),
            "must be above 0",
        );
    } else if limits.heartbeat.timeout <= limits.heartbeat.interval {
        // Report it on the key that was set (the timeout, unless only the interval was).
        let field = if l.has("heartbeat_timeout_ms") {
            "heartbeat_timeout_ms"
        } else {
            "heartbeat_interval_ms"
        };
        p.error(
            l.span(field),
            &l.key(field),
            format!(
                "heartbeat_timeout_ms ({} ms) must be longer than heartbeat_interval_ms ({} ms), \
                 or live peers would be cut",
                limits.heartbeat.timeout.as_millis(),
                limits.heartbeat.interval.as_millis()
            ),
        );
    }
    if l.has("max_handshakes_per_source") && limits.max_handshakes_per_source == 0 {
        p.error(
            l.span("max_handshakes_per_source"),
            &l.key("max_handshakes_per_source"),
            "must be at least 1 (to have no bound per source, set it to max_handshakes)",
        );
    }
    if l.has("resume_buffer_messages") && limits.resume_buffer_messages == 0 {
        p.error(
            l.span("resume_buffer_messages"),
            &l.key("resume_buffer_messages"),
            "must be at least 1",
        );
    }
    limits
}

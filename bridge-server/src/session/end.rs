//! Why a session ended, typed by where the end came from (the client, the tool, or the relay
//! itself). Everything said about an end — the WebSocket close code, the text the user reads,
//! the metric label, the JSON-RPC error code for calls still in flight — derives from here, so
//! no code ever matches on an end's text.

use std::fmt;
use std::time::Duration;

use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use shared::jsonrpc;

/// Where an end came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Client,
    Tool,
    Relay,
}

impl Source {
    /// The `source` label of `mcp_bridge_session_ends_total` and `mcp_bridge_call_errors_total`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Source::Client => "client",
            Source::Tool => "tool",
            Source::Relay => "relay",
        }
    }
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EndReason {
    /// The client ended the session on purpose (v1 `end`); its words, escaped.
    ClientEnded(String),
    /// A plain client's connection closed (or broke).
    ClientLeft(String),
    /// The client broke a hard limit (a message over the WebSocket cap, its window).
    ClientBrokeLimit(String),
    /// The client stayed away longer than the resume window.
    ClientAway(Duration),
    /// The tool exited by itself, crashed, or closed its stdout: how, in words.
    ToolGone { tool: String, how: String },
    /// The tool took none of its input for this long while input waited.
    ToolStalled { tool: String, after: Duration },
    /// The relay is shutting down.
    RelayShutdown,
    /// No message either way for this long.
    RelayIdle(Duration),
    /// The tool's output while the client was away filled the resume buffer.
    RelayResumeBufferFull { messages: usize, bytes: usize },
    /// An administrator ended the session (the admin API, `bridge-server sessions --end`).
    RelayAdmin,
    /// A config reload removed the token (or the grant of this tool) the session was opened
    /// with.
    RelayRevoked,
}

impl EndReason {
    pub(crate) fn source(&self) -> Source {
        match self {
            EndReason::ClientEnded(_)
            | EndReason::ClientLeft(_)
            | EndReason::ClientBrokeLimit(_)
            | EndReason::ClientAway(_) => Source::Client,
            EndReason::ToolGone { .. } | EndReason::ToolStalled { .. } => Source::Tool,
            EndReason::RelayShutdown
            | EndReason::RelayIdle(_)
            | EndReason::RelayResumeBufferFull { .. }
            | EndReason::RelayAdmin
            | EndReason::RelayRevoked => Source::Relay,
        }
    }

    /// The WebSocket close code the client gets.
    pub(crate) fn close_code(&self) -> CloseCode {
        match self {
            EndReason::ToolGone { .. } | EndReason::ToolStalled { .. } => CloseCode::Error,
            EndReason::RelayShutdown => CloseCode::Away,
            EndReason::ClientBrokeLimit(_) => CloseCode::Policy,
            _ => CloseCode::Normal,
        }
    }

    /// The label of `mcp_bridge_session_ends_total`.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            EndReason::ClientEnded(_) => "client_ended",
            EndReason::ClientLeft(_) => "client_left",
            EndReason::ClientBrokeLimit(_) => "client_broke_limit",
            EndReason::ClientAway(_) => "client_away",
            EndReason::ToolGone { .. } => "tool_gone",
            EndReason::ToolStalled { .. } => "tool_stalled",
            EndReason::RelayShutdown => "relay_shutdown",
            EndReason::RelayIdle(_) => "idle",
            EndReason::RelayResumeBufferFull { .. } => "resume_buffer_full",
            EndReason::RelayAdmin => "admin",
            EndReason::RelayRevoked => "revoked",
        }
    }

    /// The JSON-RPC error code for the client's calls the end left unanswered.
    pub(crate) fn error_code(&self) -> i64 {
        match self.source() {
            Source::Tool => jsonrpc::TOOL_EXITED,
            _ => jsonrpc::RELAY_UNAVAILABLE,
        }
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndReason::ClientEnded(why) => write!(f, "client ended the session ({why})"),
            EndReason::ClientLeft(why) => write!(f, "client left ({why})"),
            EndReason::ClientBrokeLimit(why) => write!(f, "the client broke a limit: {why}"),
            EndReason::ClientAway(window) => write!(
                f,
                "the client was away longer than the resume window ({})",
                shared::human_duration(*window)
            ),
            EndReason::ToolGone { tool, how } => write!(f, "tool `{tool}` {how}"),
            EndReason::ToolStalled { tool, after } => write!(
                f,
                "tool `{tool}` read none of its input for {}",
                shared::human_duration(*after)
            ),
            EndReason::RelayShutdown => f.write_str("the relay is shutting down"),
            EndReason::RelayIdle(d) => write!(
                f,
                "idle for {} with no message either way",
                shared::human_duration(*d)
            ),
            EndReason::RelayResumeBufferFull { messages, bytes } => write!(
                f,
                "the tool's output while the client was away filled the resume buffer \
                 ({messages} messages / {})",
                shared::human_bytes(*bytes)
            ),
            EndReason::RelayAdmin => {
                f.write_str("the relay's administrator ended the session; a new one can be opened")
            }
            EndReason::RelayRevoked => f.write_str(
                "the relay's config no longer lets these credentials use this tool (the token \
                 or its grant was removed); ask the relay's operator",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_derives_from_the_source() {
        let tool = EndReason::ToolGone {
            tool: "demo".into(),
            how: "exited with status 3".into(),
        };
        assert_eq!(tool.source(), Source::Tool);
        assert_eq!(tool.close_code(), CloseCode::Error);
        assert_eq!(tool.error_code(), jsonrpc::TOOL_EXITED);
        assert_eq!(tool.to_string(), "tool `demo` exited with status 3");
        let shutdown = EndReason::RelayShutdown;
        assert_eq!(shutdown.close_code(), CloseCode::Away);
        assert_eq!(shutdown.error_code(), jsonrpc::RELAY_UNAVAILABLE);
        assert_eq!(
            EndReason::ClientBrokeLimit("x".into()).close_code(),
            CloseCode::Policy
        );
        // An administrator's end is an ordinary end of this session (close 1000, like the
        // idle timeout): bridge-client opens a new session for the IDE's next message.
        let admin = EndReason::RelayAdmin;
        assert_eq!(admin.source(), Source::Relay);
        assert_eq!(admin.close_code(), CloseCode::Normal);
        assert_eq!(admin.error_code(), jsonrpc::RELAY_UNAVAILABLE);
        assert_eq!(admin.label(), "admin");
        assert!(admin.to_string().contains("administrator"));
    }
}

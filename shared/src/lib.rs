//! Pieces both ends of mcp-bridge share: newline-delimited stdio framing with hard limits,
//! a light JSON-RPC classification that never re-serializes a message body, and the
//! JSON-RPC error responses the bridge itself produces.
//!
//! Nothing here does network or process I/O of its own; the client and the relay own that.

pub mod carrier;
pub mod endpoint;
pub mod framing;
pub mod ingress;
pub mod jsonrpc;
pub mod mcp_params;
pub mod tls;
pub mod tunnel;

/// Default cap on one JSON-RPC message (one stdio line or one WebSocket message): 4 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 4 * 1024 * 1024;

/// WebSocket subprotocol for plain MCP: one JSON-RPC message per text frame, nothing else.
pub const SUBPROTOCOL_MCP: &str = "mcp";

/// Formats a byte count the way the bridge's error messages do ("4 MiB", "1.5 KiB", "12 bytes").
pub fn human_bytes(n: usize) -> String {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * 1024;
    if n >= MIB && n % MIB == 0 {
        format!("{} MiB", n / MIB)
    } else if n >= MIB {
        format!("{:.1} MiB", n as f64 / MIB as f64)
    } else if n >= KIB && n % KIB == 0 {
        format!("{} KiB", n / KIB)
    } else if n >= KIB {
        format!("{:.1} KiB", n as f64 / KIB as f64)
    } else {
        format!("{n} bytes")
    }
}

/// A log filter that drops trace-level events of the HTTP, WebSocket and TLS crates, whatever
/// `RUST_LOG` asks for: their trace output can include request headers, and so credentials.
pub fn no_secret_traces(
) -> tracing_subscriber::filter::FilterFn<impl Fn(&tracing::Metadata<'_>) -> bool> {
    tracing_subscriber::filter::filter_fn(|meta| {
        const NOISY: &[&str] = &[
            "tungstenite",
            "tokio_tungstenite",
            "hyper",
            "rustls",
            "tokio_rustls",
            "h2",
            "http",
        ];
        !(*meta.level() == tracing::Level::TRACE
            && NOISY.iter().any(|t| meta.target().starts_with(t)))
    })
}

/// A peer-supplied value made safe for any log format: control characters (newlines above
/// all, which could forge a whole log line) are escaped, and the result is cut at 256 bytes.
pub fn log_safe(s: &str) -> std::borrow::Cow<'_, str> {
    log_safe_max(s, 256)
}

/// [`log_safe`] with another length limit (in bytes).
pub fn log_safe_max(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max && !s.chars().any(|c| c.is_control() || c == '\\') {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len().min(max) + 8);
    for c in s.chars() {
        if out.len() >= max {
            out.push('…');
            break;
        }
        if c.is_control() || c == '\\' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Formats a duration for messages: "400 ms", "60 s", "1.5 s".
pub fn human_duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms % 1000 == 0 {
        format!("{} s", ms / 1000)
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::{human_bytes, human_duration};

    #[test]
    fn log_safe_escapes_and_cuts() {
        assert_eq!(super::log_safe("plain"), "plain");
        assert_eq!(super::log_safe("a\nb"), "a\\nb");
        assert!(super::log_safe(&"x".repeat(1000)).len() < 300);
    }

    #[test]
    fn human_duration_reads_well() {
        use std::time::Duration;
        assert_eq!(human_duration(Duration::from_millis(400)), "400 ms");
        assert_eq!(human_duration(Duration::from_secs(60)), "60 s");
        assert_eq!(human_duration(Duration::from_millis(1500)), "1.5 s");
    }

    #[test]
    fn human_bytes_reads_well() {
        assert_eq!(human_bytes(4 * 1024 * 1024), "4 MiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(12), "12 bytes");
        assert_eq!(human_bytes(3 * 1024 * 1024 / 2), "1.5 MiB");
    }
}

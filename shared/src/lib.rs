//! Pieces both ends of mcp-bridge share: newline-delimited stdio framing with hard limits,
//! a light JSON-RPC classification that never re-serializes a message body, and the
//! JSON-RPC error responses the bridge itself produces.
//!
//! Nothing here does network or process I/O of its own; the client and the relay own that.

pub mod framing;
pub mod jsonrpc;

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

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn human_bytes_reads_well() {
        assert_eq!(human_bytes(4 * 1024 * 1024), "4 MiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(12), "12 bytes");
        assert_eq!(human_bytes(3 * 1024 * 1024 / 2), "1.5 MiB");
    }
}

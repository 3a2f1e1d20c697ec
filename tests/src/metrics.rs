//! Asking a relay over plain HTTP: a loopback GET, and `/metrics` (Prometheus text) as a map.
//! Not the WebSocket path (ws.rs) nor the relay's process (relay.rs).

use std::collections::HashMap;
use std::net::SocketAddr;

use anyhow::Result;

/// A plain HTTP/1.1 GET on loopback: (status, body), the body de-chunked.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let resp = crate::http_raw::raw(addr, "GET", path, &[], "")?;
    Ok((resp.status, resp.body))
}

/// Prometheus text as a map from `name{labels}` to value (comments and `# EOF` skipped).
pub fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_owned(), value.parse().ok()?))
        })
        .collect()
}

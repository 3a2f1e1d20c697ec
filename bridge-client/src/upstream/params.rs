//! `Mcp-Param-*` headers (2026-07-28 Streamable HTTP), the client's side: a client must mirror
//! the `x-mcp-header`-annotated arguments of a `tools/call` into `Mcp-Param-{Name}` headers,
//! and must leave out of `tools/list` any tool whose annotations break the rules. Learning and
//! checking the annotations, and the value encoding, are `shared::mcp_params` (the relay
//! checks the same headers); this module rewrites the answer and makes HTTP headers. No I/O.

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use serde_json::Value;
use shared::mcp_params::{self, ToolParams};
use tracing::warn;

/// What the server's tools want mirrored into headers, by tool name.
#[derive(Debug, Default)]
pub(crate) struct ParamHeaders {
    tools: ToolParams,
}

impl ParamHeaders {
    /// Learns from a `tools/list` answer. Returns the answer rewritten without the tools whose
    /// annotations are invalid, or `None` when it goes on unchanged.
    pub(crate) fn learn(&mut self, answer: &[u8]) -> Option<Bytes> {
        let mut v: Value = serde_json::from_slice(answer).ok()?;
        let tools = v.get_mut("result")?.get_mut("tools")?.as_array_mut()?;
        let invalid = self.tools.learn(tools);
        if invalid.is_empty() {
            return None;
        }
        for bad in invalid.iter().rev() {
            let name = shared::log_safe_max(&bad.name, 128);
            warn!(
                "leaving tool `{name}` out of tools/list: its x-mcp-header {}",
                bad.why
            );
            tools.remove(bad.index);
        }
        serde_json::to_vec(&v).ok().map(Bytes::from)
    }

    /// The `Mcp-Param-*` headers of a `tools/call` of `tool` with this body.
    pub(crate) fn headers(&self, tool: &str, body: &[u8]) -> Vec<(HeaderName, HeaderValue)> {
        if self.tools.of(tool).is_empty() {
            return Vec::new();
        }
        let args = mcp_params::arguments_of(body);
        self.tools
            .headers(tool, args.as_ref())
            .into_iter()
            .filter_map(|(name, value)| {
                Some((
                    HeaderName::from_bytes(name.as_bytes()).ok()?,
                    HeaderValue::from_str(&value).ok()?,
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(tools: Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"jsonrpc": "2.0", "id": 1,
            "result": {"tools": tools}}))
        .expect("json")
    }

    #[test]
    fn annotated_arguments_become_headers() {
        let mut p = ParamHeaders::default();
        let answer = list(
            serde_json::json!([{"name": "sql", "inputSchema": {"type": "object",
            "properties": {
                "region": {"type": "string", "x-mcp-header": "Region"},
                "opts": {"type": "object", "properties": {
                    "n": {"type": "integer", "x-mcp-header": "N"},
                    "dry": {"type": "boolean", "x-mcp-header": "Dry"}}},
                "query": {"type": "string"}}}}]),
        );
        assert!(p.learn(&answer).is_none(), "forwarded unchanged");
        let call = br#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"sql",
            "arguments":{"region":"Hello, \u4e16\u754c","opts":{"n":42.0,"dry":false},"query":"x"}}}"#;
        let h = p.headers("sql", call);
        let get = |n: &str| h.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        assert_eq!(
            get("mcp-param-region").expect("region"),
            "=?base64?SGVsbG8sIOS4lueVjA==?="
        );
        assert_eq!(get("mcp-param-n").expect("n"), "42");
        assert_eq!(get("mcp-param-dry").expect("dry"), "false");
        let call = br#"{"params":{"name":"sql","arguments":{"region":null}}}"#;
        assert!(
            p.headers("sql", call).is_empty(),
            "null and absent: no header"
        );
        assert!(p.headers("other", call).is_empty());
    }

    /// Which annotations are invalid is `shared::mcp_params`'s business (tested there, rule by
    /// rule); here: the answer the IDE gets leaves out the tools it names, and keeps the rest.
    #[test]
    fn tools_with_invalid_annotations_are_left_out() {
        let mut p = ParamHeaders::default();
        let answer = list(serde_json::json!([
            {"name": "ok", "inputSchema": {"type": "object", "properties": {
                "a": {"type": "string", "x-mcp-header": "A"}}}},
            {"name": "in-array", "inputSchema": {"type": "object", "properties": {
                "xs": {"type": "array", "items": {"type": "string", "x-mcp-header": "X"}}}}},
            {"name": "plain", "inputSchema": {"type": "object", "properties": {
                "a": {"type": "string", "default": {"x-mcp-header": 1}}}}}
        ]));
        let out: Value =
            serde_json::from_slice(&p.learn(&answer).expect("rewritten")).expect("json");
        let names: Vec<&str> = out["result"]["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .filter_map(|t| t["name"].as_str())
            .collect();
        assert_eq!(names, ["ok", "plain"]);
        assert_eq!(out["id"], 1);
    }
}

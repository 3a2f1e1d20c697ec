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

    /// Which arguments become headers, and how values are encoded, is `shared::mcp_params`'s
    /// business (tested there); here: a valid answer goes on unchanged, and a call of the tool
    /// comes out with its header as an HTTP header.
    #[test]
    fn a_valid_answer_goes_on_unchanged_and_a_call_gets_its_header() {
        let mut p = ParamHeaders::default();
        let answer = list(
            serde_json::json!([{"name": "sql", "inputSchema": {"type": "object",
            "properties": {
                "region": {"type": "string", "x-mcp-header": "Region"},
                "query": {"type": "string"}}}}]),
        );
        assert!(p.learn(&answer).is_none(), "forwarded unchanged");
        let call = br#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"sql",
            "arguments":{"region":"us-west1","query":"x"}}}"#;
        assert_eq!(
            p.headers("sql", call),
            [(
                HeaderName::from_static("mcp-param-region"),
                HeaderValue::from_static("us-west1")
            )]
        );
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

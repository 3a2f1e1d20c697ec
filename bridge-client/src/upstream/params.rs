//! `Mcp-Param-*` headers (2026-07-28 Streamable HTTP): a server may mark tool parameters with
//! `x-mcp-header` in a tool's `inputSchema`; a client must then mirror those arguments of a
//! `tools/call` into `Mcp-Param-{Name}` headers, and must leave out of `tools/list` any tool
//! whose annotations break the rules. This module learns the annotations from `tools/list`
//! answers and builds the headers of a call; it does no I/O and knows nothing of sessions.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use serde_json::{Map, Value};
use tracing::warn;

use super::exchange::encoded_value;

/// Tools remembered at most (a server listing more gets no headers for the rest).
const MAX_TOOLS: usize = 4096;
/// Annotations of one tool at most.
const MAX_PER_TOOL: usize = 64;
/// How deep a schema is searched for annotations.
const MAX_DEPTH: usize = 32;
/// The largest integer a header may carry (JavaScript's safe range).
const SAFE_INT: i64 = (1 << 53) - 1;

/// One annotated parameter: the header's name and where the value sits in the arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Param {
    header: HeaderName,
    path: Vec<String>,
}

/// What the server's tools want mirrored into headers, by tool name.
#[derive(Debug, Default)]
pub(crate) struct ParamHeaders {
    tools: HashMap<String, Vec<Param>>,
}

impl ParamHeaders {
    /// Learns from a `tools/list` answer. Returns the answer rewritten without the tools whose
    /// annotations are invalid, or `None` when it goes on unchanged.
    pub(crate) fn learn(&mut self, answer: &[u8]) -> Option<Bytes> {
        let mut v: Value = serde_json::from_slice(answer).ok()?;
        let tools = v.get_mut("result")?.get_mut("tools")?.as_array_mut()?;
        let before = tools.len();
        tools.retain(|tool| {
            let name = tool.get("name").and_then(Value::as_str).unwrap_or("");
            let schema = tool.get("inputSchema").unwrap_or(&Value::Null);
            match annotations(schema) {
                Ok(params) => {
                    if params.is_empty() {
                        self.tools.remove(name);
                    } else if self.tools.len() < MAX_TOOLS || self.tools.contains_key(name) {
                        self.tools.insert(name.to_owned(), params);
                    }
                    true
                }
                Err(why) => {
                    let name = shared::log_safe_max(name, 128);
                    warn!("leaving tool `{name}` out of tools/list: its x-mcp-header {why}");
                    false
                }
            }
        });
        if tools.len() == before {
            return None;
        }
        serde_json::to_vec(&v).ok().map(Bytes::from)
    }

    /// The `Mcp-Param-*` headers of a `tools/call` of `tool` with this body.
    pub(crate) fn headers(&self, tool: &str, body: &[u8]) -> Vec<(HeaderName, HeaderValue)> {
        let Some(params) = self.tools.get(tool) else {
            return Vec::new();
        };
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return Vec::new();
        };
        let Some(args) = v.get("params").and_then(|p| p.get("arguments")) else {
            return Vec::new();
        };
        params
            .iter()
            .filter_map(|p| {
                let value = p.path.iter().try_fold(args, |at, key| at.get(key))?;
                let text = match value {
                    Value::String(s) => s.clone(),
                    Value::Bool(b) => b.to_string(),
                    Value::Number(n) => integer(n)?.to_string(),
                    _ => return None, // null or not a primitive: no header
                };
                Some((p.header.clone(), encoded_value(&text)?))
            })
            .collect()
    }
}

/// An integer in the safe range (`42.0` counts as 42).
fn integer(n: &serde_json::Number) -> Option<i64> {
    let i = match n.as_i64() {
        Some(i) => i,
        None => {
            let f = n.as_f64()?;
            if f.fract() != 0.0 || f.abs() > SAFE_INT as f64 {
                return None;
            }
            f as i64
        }
    };
    (i.abs() <= SAFE_INT).then_some(i)
}

/// The annotations of one `inputSchema`, or why they are invalid.
fn annotations(schema: &Value) -> Result<Vec<Param>, String> {
    let mut out = Vec::new();
    walk(schema, Some(&mut Vec::new()), &mut out, 0)?;
    let mut seen = HashSet::new();
    for p in &out {
        if !seen.insert(p.header.as_str().to_owned()) {
            return Err(format!("`{}` is used twice", p.header));
        }
    }
    Ok(out)
}

/// Searches a schema; `path` is `Some` while the node is reachable from the root by
/// `properties` keys alone (where annotations are allowed).
fn walk(
    node: &Value,
    mut path: Option<&mut Vec<String>>,
    out: &mut Vec<Param>,
    depth: usize,
) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    let map = match node {
        Value::Object(map) => map,
        Value::Array(items) => {
            for item in items {
                walk(item, None, out, depth + 1)?;
            }
            return Ok(());
        }
        _ => return Ok(()),
    };
    if let Some(h) = map.get("x-mcp-header") {
        let at = path.as_deref().filter(|p| !p.is_empty());
        let Some(at) = at else {
            return Err("is not on a chain of `properties` from the schema's root".into());
        };
        out.push(param(h, map, at)?);
        if out.len() > MAX_PER_TOOL {
            return Err(format!("annotations number more than {MAX_PER_TOOL}"));
        }
    }
    for (key, v) in map {
        match key.as_str() {
            "x-mcp-header" | "default" | "const" | "enum" | "examples" => {}
            "properties" => {
                let Value::Object(props) = v else { continue };
                for (name, sub) in props {
                    match path.as_deref_mut() {
                        Some(p) => {
                            p.push(name.clone());
                            let r = walk(sub, Some(p), out, depth + 1);
                            p.pop();
                            r?;
                        }
                        None => walk(sub, None, out, depth + 1)?,
                    }
                }
            }
            _ => walk(v, None, out, depth + 1)?,
        }
    }
    Ok(())
}

/// One annotation, checked: a token name on a string, integer or boolean parameter.
fn param(h: &Value, schema: &Map<String, Value>, path: &[String]) -> Result<Param, String> {
    let Some(name) = h.as_str() else {
        return Err("is not a string".into());
    };
    let token = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !token {
        let name = shared::log_safe_max(name, 64);
        return Err(format!("`{name}` is not an HTTP field-name token"));
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("string" | "integer" | "boolean") => {}
        _ => return Err(format!("`{name}` is not on a string, integer or boolean")),
    }
    let header = HeaderName::from_bytes(format!("mcp-param-{name}").as_bytes())
        .map_err(|_| format!("`{name}` makes no valid header name"))?;
    Ok(Param {
        header,
        path: path.to_vec(),
    })
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

    #[test]
    fn tools_with_invalid_annotations_are_left_out() {
        let mut p = ParamHeaders::default();
        let answer = list(serde_json::json!([
            {"name": "ok", "inputSchema": {"type": "object", "properties": {
                "a": {"type": "string", "x-mcp-header": "A"}}}},
            {"name": "in-array", "inputSchema": {"type": "object", "properties": {
                "xs": {"type": "array", "items": {"type": "string", "x-mcp-header": "X"}}}}},
            {"name": "number", "inputSchema": {"type": "object", "properties": {
                "f": {"type": "number", "x-mcp-header": "F"}}}},
            {"name": "dup", "inputSchema": {"type": "object", "properties": {
                "a": {"type": "string", "x-mcp-header": "A"},
                "b": {"type": "string", "x-mcp-header": "a"}}}},
            {"name": "bad-token", "inputSchema": {"type": "object", "properties": {
                "a": {"type": "string", "x-mcp-header": "a b"}}}},
            {"name": "in-oneof", "inputSchema": {"type": "object", "oneOf": [
                {"properties": {"a": {"type": "string", "x-mcp-header": "A"}}}]}},
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

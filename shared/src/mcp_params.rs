//! `Mcp-Param-*` headers of the 2026-07-28 Streamable HTTP transport, both ends' half: a
//! server may mark tool parameters with `x-mcp-header` in a tool's `inputSchema`; a client
//! mirrors those arguments of a `tools/call` into `Mcp-Param-{Name}` headers, and whoever
//! processes the body checks them. This module learns and checks the annotations of a
//! `tools/list` answer's tools, keeps them per tool (bounded), finds the value each header
//! carries in a call's arguments, and encodes and decodes header values. It does no I/O and
//! knows nothing of HTTP types, sessions or what a side does with an invalid tool (the
//! client leaves it out of `tools/list`; the relay only does not check its calls).

use std::collections::{HashMap, HashSet};

use base64::Engine;
use serde_json::{Map, Value};

/// Tools remembered at most (a server listing more gets no headers or checks for the rest).
pub const MAX_TOOLS: usize = 4096;
/// Annotations of one tool at most (more make the tool invalid).
pub const MAX_PER_TOOL: usize = 64;
/// How deep a schema is searched for annotations.
const MAX_DEPTH: usize = 32;
/// The largest integer a header may carry (JavaScript's safe range).
const SAFE_INT: i64 = (1 << 53) - 1;
/// The prefix of every parameter header's name (lowercase, as HTTP field names compare).
pub const HEADER_PREFIX: &str = "mcp-param-";

/// One annotated parameter: the `x-mcp-header` name and where the value sits in the arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// The `x-mcp-header` value as declared (the header is `Mcp-Param-{name}`).
    pub name: String,
    /// The chain of `properties` keys from the arguments' root to the value.
    pub path: Vec<String>,
}

impl Param {
    /// The header's name, lowercase (`mcp-param-region`).
    pub fn header(&self) -> String {
        format!("{HEADER_PREFIX}{}", self.name.to_ascii_lowercase())
    }

    /// The header's name as the spec writes it (`Mcp-Param-Region`), for messages.
    pub fn display(&self) -> String {
        format!("Mcp-Param-{}", self.name)
    }

    /// The argument's dotted path (`opts.region`), for messages.
    pub fn argument(&self) -> String {
        self.path.join(".")
    }

    /// The value at this parameter's path in `arguments`: `Absent` when there is none (or it
    /// is `null`), `Unrenderable` when it is no string, boolean or safe integer.
    pub fn value_in(&self, arguments: Option<&Value>) -> Found {
        let value = arguments.and_then(|a| self.path.iter().try_fold(a, |at, key| at.get(key)));
        match value {
            None | Some(Value::Null) => Found::Absent,
            Some(Value::String(s)) => Found::Text(s.clone()),
            Some(Value::Bool(b)) => Found::Text(b.to_string()),
            Some(Value::Number(n)) => match integer(n) {
                Some(i) => Found::Integer(i),
                None => Found::Unrenderable,
            },
            Some(_) => Found::Unrenderable,
        }
    }
}

/// What an annotated parameter's path holds in a call's arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Nothing, or `null`: no header is sent, none is expected.
    Absent,
    /// A string or boolean, as the header's text (before encoding).
    Text(String),
    /// An integer in the safe range.
    Integer(i64),
    /// Something no header can carry (an object, an array, a fraction, a huge integer).
    Unrenderable,
}

impl Found {
    /// The header's text before encoding, if a header is sent.
    pub fn text(&self) -> Option<String> {
        match self {
            Found::Text(s) => Some(s.clone()),
            Found::Integer(i) => Some(i.to_string()),
            Found::Absent | Found::Unrenderable => None,
        }
    }
}

/// A tool whose annotations break the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// Its place in the answer's `tools` array.
    pub index: usize,
    /// Its name (as sent; make it log-safe before logging).
    pub name: String,
    /// Why, to follow "its x-mcp-header ".
    pub why: String,
}

/// The annotated parameters of a server's tools, by tool name (bounded by [`MAX_TOOLS`]).
#[derive(Debug, Default)]
pub struct ToolParams {
    tools: HashMap<String, Vec<Param>>,
}

impl ToolParams {
    /// Learns from the `tools` array of a `tools/list` answer (one page): each valid tool's
    /// annotations replace what was known of it. Returns the tools whose annotations are
    /// invalid (they are forgotten: nothing is known of their headers).
    pub fn learn(&mut self, tools: &[Value]) -> Vec<Invalid> {
        let mut invalid = Vec::new();
        for (index, tool) in tools.iter().enumerate() {
            let name = tool.get("name").and_then(Value::as_str).unwrap_or("");
            let schema = tool.get("inputSchema").unwrap_or(&Value::Null);
            match annotations(schema) {
                Ok(params) if params.is_empty() => {
                    self.tools.remove(name);
                }
                Ok(params) => {
                    if self.tools.len() < MAX_TOOLS || self.tools.contains_key(name) {
                        self.tools.insert(name.to_owned(), params);
                    }
                }
                Err(why) => {
                    self.tools.remove(name);
                    invalid.push(Invalid {
                        index,
                        name: name.to_owned(),
                        why,
                    });
                }
            }
        }
        invalid
    }

    /// The annotated parameters of `tool` (empty when it has none or is not known).
    pub fn of(&self, tool: &str) -> &[Param] {
        self.tools.get(tool).map(Vec::as_slice).unwrap_or_default()
    }

    /// The `Mcp-Param-*` headers of a call of `tool` with these `arguments`: (lowercase name,
    /// encoded value). Absent, `null` and unrenderable values get no header.
    pub fn headers(&self, tool: &str, arguments: Option<&Value>) -> Vec<(String, String)> {
        self.of(tool)
            .iter()
            .filter_map(|p| {
                let text = p.value_in(arguments).text()?;
                Some((p.header(), encoded_value(&text)))
            })
            .collect()
    }
}

/// `params.arguments` of a `tools/call` body, if the body is JSON and has them.
pub fn arguments_of(body: &[u8]) -> Option<Value> {
    let mut v: Value = serde_json::from_slice(body).ok()?;
    v.get_mut("params")?.get_mut("arguments").map(Value::take)
}

/// A header value for `text`: as is when it is plain visible ASCII without edge spaces, else
/// (or when it looks like an encoded value itself) `=?base64?…?=` of its UTF-8.
pub fn encoded_value(text: &str) -> String {
    let plain = !text.is_empty()
        && text.bytes().all(|b| (0x20..0x7f).contains(&b))
        && !text.starts_with(' ')
        && !text.ends_with(' ')
        && !is_sentinel(text);
    if plain {
        return text.to_owned();
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
    format!("=?base64?{b64}?=")
}

/// A header value with the `=?base64?…?=` sentinel undone; `None` for bad base64 or UTF-8.
pub fn decoded_value(v: &str) -> Option<String> {
    match v
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        Some(b64) => {
            let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
            String::from_utf8(bytes).ok()
        }
        None => Some(v.to_owned()),
    }
}

/// Whether `text` looks like an encoded value (and so must itself be encoded).
fn is_sentinel(text: &str) -> bool {
    text.starts_with("=?base64?") && text.ends_with("?=")
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
        if !seen.insert(p.header()) {
            return Err(format!("`{}` is used twice", p.name));
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
        let name = crate::log_safe_max(name, 64);
        return Err(format!("`{name}` is not an HTTP field-name token"));
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("string" | "integer" | "boolean") => {}
        _ => return Err(format!("`{name}` is not on a string, integer or boolean")),
    }
    Ok(Param {
        name: name.to_owned(),
        path: path.to_vec(),
    })
}

#[cfg(test)]
#[path = "mcp_params_tests.rs"]
mod tests;

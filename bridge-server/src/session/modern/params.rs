//! The relay's side of `Mcp-Param-*` headers (2026-07-28): learning a pooled process's tools'
//! `x-mcp-header` annotations from `tools/list` answers (the relay's own, and those that pass
//! through to clients, never changed: leaving out invalid tools is each client's duty), and
//! checking a session-less `tools/call`'s `Mcp-Param-*` headers against its body, which the
//! spec asks of whoever processes the body (`-32020` HeaderMismatch, 400). Sans-IO: answer
//! bytes, header values and body in, a verdict out. What a parameter is and how values are
//! encoded is `shared::mcp_params`; the table lives in the process's carrier; the other
//! request headers are [`check`](super::check)'s.

use serde_json::Value;

use shared::mcp_params::{self, Found, Invalid, Param, ToolParams};

use super::check::{mismatch, Refusal};

/// What one `tools/list` answer taught.
#[derive(Debug, Default)]
pub(crate) struct Learned {
    /// The tools whose annotations are invalid (their calls are not checked: a conforming
    /// client left them out of its list).
    pub(crate) invalid: Vec<Invalid>,
    /// The answer's `nextCursor`: there are more pages.
    pub(crate) next_cursor: Option<String>,
}

/// Learns from a `tools/list` answer of the tool (an error or a non-list teaches nothing).
pub(crate) fn learn(table: &mut ToolParams, answer: &[u8]) -> Learned {
    let Ok(v) = serde_json::from_slice::<Value>(answer) else {
        return Learned::default();
    };
    let Some(result) = v.get("result") else {
        return Learned::default();
    };
    let Some(tools) = result.get("tools").and_then(Value::as_array) else {
        return Learned::default();
    };
    Learned {
        invalid: table.learn(tools),
        next_cursor: result
            .get("nextCursor")
            .and_then(Value::as_str)
            .map(str::to_owned),
    }
}

/// A `tools/call`'s `Mcp-Param-*` headers as they came, for the carrier to check once the
/// process's annotations are known.
#[derive(Debug, Clone, Default)]
pub(crate) struct ParamHeaders {
    /// The tool called (`params.name`).
    pub(crate) tool: String,
    /// Every `mcp-param-*` header line: lowercase name, raw value.
    pub(crate) headers: Vec<(String, Vec<u8>)>,
}

/// Checks a `tools/call`'s `Mcp-Param-*` headers (`headers`: lowercase name, raw value, one
/// entry per line) against the arguments in `body`, for a tool with these `params`. A header
/// the tool does not declare is not the relay's to judge (the spec has an intermediary that
/// does not recognize one pass it and otherwise ignore it).
pub(crate) fn check(
    params: &[Param],
    body: &[u8],
    headers: &[(String, Vec<u8>)],
) -> Result<(), Refusal> {
    if params.is_empty() {
        return Ok(());
    }
    let args = mcp_params::arguments_of(body);
    for p in params {
        let name = p.header();
        let mut sent = headers.iter().filter(|(n, _)| *n == name).map(|(_, v)| v);
        let (raw, again) = (sent.next(), sent.next());
        let header = p.display();
        let argument = p.argument();
        if again.is_some() {
            return Err(mismatch(format!(
                "the {header} header is given more than once"
            )));
        }
        let found = p.value_in(args.as_ref());
        let Some(raw) = raw else {
            if let Some(text) = found.text() {
                return Err(mismatch(format!(
                    "the {header} header is missing, but the body's argument `{argument}` is present: send `{header}: {}` (call tools/list again if the tool changed)",
                    shared::log_safe(&mcp_params::encoded_value(&text))
                )));
            }
            continue;
        };
        if !raw.iter().all(|b| *b == b'\t' || (0x20..0x7f).contains(b)) {
            return Err(mismatch(format!(
                "the {header} header has characters outside visible ASCII (encode the value as `=?base64?…?=`)"
            )));
        }
        let value = std::str::from_utf8(raw).unwrap_or_default();
        let Some(decoded) = mcp_params::decoded_value(value) else {
            return Err(mismatch(format!(
                "the {header} header is not valid `=?base64?…?=` (UTF-8 inside)"
            )));
        };
        let body_text = match &found {
            Found::Absent => {
                return Err(mismatch(format!(
                    "the {header} header is present, but the body's argument `{argument}` is absent (leave the header out, or send the argument)"
                )))
            }
            Found::Unrenderable => {
                return Err(mismatch(format!(
                    "the {header} header does not match the body's argument `{argument}`, which is no string, boolean or safe integer (leave the header out)"
                )))
            }
            Found::Text(t) => t.clone(),
            Found::Integer(i) => i.to_string(),
        };
        let same = match found {
            Found::Integer(i) => same_integer(&decoded, i),
            _ => decoded == body_text,
        };
        if !same {
            return Err(mismatch(format!(
                "the {header} header value `{}` does not match the body's argument `{argument}` value `{}`",
                shared::log_safe(&decoded),
                shared::log_safe(&body_text)
            )));
        }
    }
    Ok(())
}

/// Whether header text `h` is the integer `i`, compared as numbers (`42`, `42.0`, `-7`): the
/// spec's advice for integer parameters. Other notations compare as text.
fn same_integer(h: &str, i: i64) -> bool {
    let whole = match h.split_once('.') {
        Some((w, f)) if !f.is_empty() && f.bytes().all(|b| b == b'0') => w,
        Some(_) => return false,
        None => h,
    };
    let digits = whole.strip_prefix('-').unwrap_or(whole);
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && whole.parse::<i64>() == Ok(i)
}

#[cfg(test)]
#[path = "params_tests.rs"]
mod tests;

//! Whether a session-less 2026-07-28 POST may go to the tool: the body is one request, its
//! `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name` headers match the body (`-32020`
//! HeaderMismatch otherwise), and its version is one the relay serves (`-32022` with the
//! supported list otherwise). Sans-IO: header values and body bytes in, a verdict out. Which
//! tool process serves the request is the pool's business.

use serde_json::{json, Value};

use shared::jsonrpc::{self, HEADER_MISMATCH};

use super::wire::{self, Fields};

/// The protocol versions served without a session (per-request `_meta`).
pub(crate) const MODERN_VERSIONS: [&str; 1] = ["2026-07-28"];
/// The handshake-era versions served with a session (`initialize`).
pub(crate) const HANDSHAKE_VERSIONS: [&str; 4] =
    ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];
/// JSON-RPC error: the requested protocol version is not served (2026-07-28).
pub(crate) const UNSUPPORTED_VERSION: i64 = -32022;

/// The methods whose `Mcp-Name` header mirrors `params.name` (or `params.uri`).
const NAMED: [&str; 3] = ["tools/call", "prompts/get", "resources/read"];

/// The request metadata headers as they came (raw bytes; `None` when absent).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Headers<'a> {
    pub(crate) version: Option<&'a [u8]>,
    pub(crate) method: Option<&'a [u8]>,
    pub(crate) name: Option<&'a [u8]>,
    /// One of the three was given more than once.
    pub(crate) duplicated: bool,
}

/// A request refused before it reaches a tool: the HTTP status and the JSON-RPC error.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Refusal {
    pub(crate) status: u16,
    pub(crate) code: i64,
    pub(crate) message: String,
    pub(crate) data: Option<Value>,
}

impl Refusal {
    fn new(status: u16, code: i64, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            code,
            message: message.into(),
            data: None,
        }
    }
}

/// What a POST body is.
#[derive(Debug)]
pub(crate) enum Checked<'a> {
    /// A request that may go to the tool (its fields).
    Request(Fields<'a>),
    /// A notification: accepted (202) and not forwarded — this revision defines none from
    /// the client over HTTP (a request is cancelled by closing its stream).
    Notification,
}

/// Whether a request with these headers, and no `Mcp-Session-Id`, is of the 2026-07-28 era:
/// its `MCP-Protocol-Version` names no handshake-era version. (No header at all is the
/// handshake era: the spec lets a server read it as 2025-03-26.)
pub(crate) fn is_modern(version_header: Option<&[u8]>) -> bool {
    version_header.is_some_and(|v| {
        let v = std::str::from_utf8(v).unwrap_or("").trim();
        !HANDSHAKE_VERSIONS.contains(&v)
    })
}

/// The `-32022` refusal for `requested`, with every version the relay serves.
pub(crate) fn unsupported(requested: &str) -> Refusal {
    let supported: Vec<&str> = MODERN_VERSIONS
        .iter()
        .chain(HANDSHAKE_VERSIONS.iter())
        .copied()
        .collect();
    Refusal {
        status: 400,
        code: UNSUPPORTED_VERSION,
        message: format!(
            "Unsupported protocol version `{}`: this relay serves {}",
            shared::log_safe(requested),
            supported.join(", ")
        ),
        data: Some(json!({ "supported": supported, "requested": requested })),
    }
}

/// Checks one POST body against its headers.
pub(crate) fn check<'a>(h: &Headers<'_>, body: &'a [u8]) -> Result<Checked<'a>, Refusal> {
    let f = match jsonrpc::classify(body) {
        Err(jsonrpc::ClassifyError::Parse(e)) => {
            return Err(Refusal::new(
                400,
                jsonrpc::PARSE_ERROR,
                format!("not valid JSON: {e}"),
            ))
        }
        Err(e) => return Err(Refusal::new(400, jsonrpc::INVALID_REQUEST, e.to_string())),
        Ok(_) => wire::fields(body)
            .map_err(|e| Refusal::new(400, jsonrpc::INVALID_REQUEST, e.to_string()))?,
    };
    if f.is_response {
        return Err(Refusal::new(
            400,
            jsonrpc::INVALID_REQUEST,
            "a client sends no responses in the 2026-07-28 revision (there are no server requests to answer)",
        ));
    }
    if f.id.is_none() {
        return Ok(Checked::Notification);
    }
    if h.duplicated {
        return Err(mismatch(
            "MCP-Protocol-Version, Mcp-Method and Mcp-Name may each be given once".into(),
        ));
    }
    let version = header_text(h.version, "MCP-Protocol-Version").map_err(mismatch)?;
    match f.version.as_deref() {
        Some(body_version) if body_version == version => {}
        Some(body_version) => {
            return Err(mismatch(format!(
                "MCP-Protocol-Version header `{}` does not match the body's `{}`",
                shared::log_safe(version),
                shared::log_safe(body_version)
            )))
        }
        None => {
            return Err(mismatch(format!(
                "the body's params._meta carries no string `{}` to match MCP-Protocol-Version",
                wire::META_VERSION
            )))
        }
    }
    let method = header_text(h.method, "Mcp-Method").map_err(mismatch)?;
    let body_method = f.method.as_deref().unwrap_or_default();
    if method != body_method {
        return Err(mismatch(format!(
            "Mcp-Method header `{}` does not match the body's method `{}`",
            shared::log_safe(method),
            shared::log_safe(body_method)
        )));
    }
    if NAMED.contains(&body_method) {
        if let Some(body_name) = f.name.as_deref() {
            let name = header_text(h.name, "Mcp-Name").map_err(mismatch)?;
            let decoded = shared::mcp_params::decoded_value(name).ok_or_else(|| {
                mismatch("Mcp-Name is not valid `=?base64?…?=` (UTF-8 inside)".into())
            })?;
            if decoded != body_name {
                return Err(mismatch(format!(
                    "Mcp-Name header `{}` does not match the body's {} `{}`",
                    shared::log_safe(&decoded),
                    if f.name_is_uri { "uri" } else { "name" },
                    shared::log_safe(body_name)
                )));
            }
        }
    }
    if !MODERN_VERSIONS.contains(&version) {
        return Err(unsupported(version));
    }
    Ok(Checked::Request(f))
}

/// The `-32020` refusal (400): a header does not match the body, or is missing or malformed.
pub(crate) fn mismatch(what: String) -> Refusal {
    Refusal::new(400, HEADER_MISMATCH, format!("Header mismatch: {what}"))
}

/// A header's value as text: present, visible ASCII (and space or tab) only.
fn header_text<'h>(v: Option<&'h [u8]>, name: &str) -> Result<&'h str, String> {
    let v = v.ok_or_else(|| format!("the {name} header is required"))?;
    if !v.iter().all(|b| *b == b'\t' || (0x20..0x7f).contains(b)) {
        return Err(format!(
            "the {name} header has characters outside visible ASCII"
        ));
    }
    Ok(std::str::from_utf8(v).unwrap_or_default().trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALL: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_current_time","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#;

    fn h<'a>(v: &'a str, m: &'a str, n: Option<&'a str>) -> Headers<'a> {
        Headers {
            version: Some(v.as_bytes()),
            method: Some(m.as_bytes()),
            name: n.map(str::as_bytes),
            duplicated: false,
        }
    }

    fn code(r: Result<Checked<'_>, Refusal>) -> i64 {
        match r {
            Err(r) => r.code,
            Ok(_) => 0,
        }
    }

    #[test]
    fn a_matching_request_passes() {
        let ok = check(
            &h("2026-07-28", "tools/call", Some("get_current_time")),
            CALL,
        );
        assert!(matches!(ok, Ok(Checked::Request(_))));
        // The same name, base64-encoded.
        let b64 = "=?base64?Z2V0X2N1cnJlbnRfdGltZQ==?=";
        assert!(matches!(
            check(&h("2026-07-28", "tools/call", Some(b64)), CALL),
            Ok(Checked::Request(_))
        ));
    }

    #[test]
    fn each_mismatch_is_32020() {
        assert_eq!(
            code(check(
                &h("2026-07-28", "tools/list", Some("get_current_time")),
                CALL
            )),
            HEADER_MISMATCH
        );
        assert_eq!(
            code(check(&h("2026-07-28", "tools/call", Some("other")), CALL)),
            HEADER_MISMATCH
        );
        assert_eq!(
            code(check(&h("2026-07-28", "tools/call", None), CALL)),
            HEADER_MISMATCH
        );
        assert_eq!(
            code(check(
                &h("2027-01-01", "tools/call", Some("get_current_time")),
                CALL
            )),
            HEADER_MISMATCH
        );
        assert_eq!(
            code(check(
                &h("2026-07-28", "tools/call", Some("=?base64?!!?=")),
                CALL
            )),
            HEADER_MISMATCH
        );
        assert_eq!(
            code(check(&h("2026-07-28", "tools/call\u{7f}", Some("x")), CALL)),
            HEADER_MISMATCH
        );
        let no_meta = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
        assert_eq!(
            code(check(&h("2026-07-28", "tools/list", None), no_meta)),
            HEADER_MISMATCH
        );
        let mut dup = h("2026-07-28", "tools/call", Some("get_current_time"));
        dup.duplicated = true;
        assert_eq!(code(check(&dup, CALL)), HEADER_MISMATCH);
    }

    #[test]
    fn an_unknown_version_that_matches_is_32022_with_the_list() {
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"1900-01-01"}}}"#;
        let r = check(&h("1900-01-01", "server/discover", None), body).expect_err("refused");
        assert_eq!((r.status, r.code), (400, UNSUPPORTED_VERSION));
        let data = r.data.expect("data");
        assert_eq!(data["requested"], "1900-01-01");
        assert_eq!(data["supported"][0], "2026-07-28");
        assert!(data["supported"]
            .as_array()
            .expect("list")
            .iter()
            .any(|v| v == "2025-11-25"));
    }

    #[test]
    fn bodies_that_are_no_request() {
        assert_eq!(
            code(check(&Headers::default(), b"{nope")),
            jsonrpc::PARSE_ERROR
        );
        assert_eq!(
            code(check(&Headers::default(), b"[]")),
            jsonrpc::INVALID_REQUEST
        );
        assert_eq!(
            code(check(
                &Headers::default(),
                br#"{"jsonrpc":"2.0","id":1,"result":{}}"#
            )),
            jsonrpc::INVALID_REQUEST
        );
        let n = br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}"#;
        assert!(matches!(
            check(&Headers::default(), n),
            Ok(Checked::Notification)
        ));
    }

    #[test]
    fn the_era_is_read_from_the_version_header() {
        assert!(is_modern(Some(b"2026-07-28")));
        assert!(is_modern(Some(b"1900-01-01")));
        assert!(!is_modern(Some(b"2025-11-25")));
        assert!(!is_modern(None));
    }
}

//! `bridge-server sessions`: the command-line front end of the session admin API. One HTTP
//! request to the relay's metrics listener (list, show or end), its JSON answer rendered as a
//! table (or passed on with `--json`), and an exit status per outcome. The argument parsing is
//! the binary's; the API itself is the relay's (`http::admin`).

use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONNECTION, HOST};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// The admin URL when none is given: the metrics address the docs use.
pub const DEFAULT_ADMIN_URL: &str = "http://127.0.0.1:9090";

/// How long one request may take (an end waits for the tool to be reaped).
const TIMEOUT: Duration = Duration::from_secs(60);

/// Largest answer read (a listing of many sessions).
const MAX_ANSWER: usize = 64 * 1024 * 1024;

/// What to ask the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    List,
    Show(String),
    End(String),
}

/// Why `bridge-server sessions` did not do what it was asked. Each has its exit status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminCliError {
    /// A bad admin URL or token file (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The relay could not be reached or did not answer in time (exit 1).
    #[error("cannot reach the admin API at {url}: {why}; is the relay running, and is [metrics] listen this address?")]
    Unreachable { url: String, why: String },
    /// The relay refused the token, or its admin API is off (exit 3).
    #[error("the relay refused: HTTP {status}: {message}")]
    Refused { status: u16, message: String },
    /// No such session, or the id names several, or it is already ending (exit 4).
    #[error("{message}")]
    NoSession { message: String },
    /// Any other answer (exit 1).
    #[error("the relay answered HTTP {status}: {message}")]
    Unexpected { status: u16, message: String },
}

impl AdminCliError {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            AdminCliError::Usage(_) => 2,
            AdminCliError::Refused { .. } => 3,
            AdminCliError::NoSession { .. } => 4,
            AdminCliError::Unreachable { .. } | AdminCliError::Unexpected { .. } => 1,
        }
    }
}

/// Reads the admin token: the first line of `file`, else the environment variable's value.
pub fn read_token(
    file: Option<&std::path::Path>,
    env: Option<String>,
) -> Result<String, AdminCliError> {
    let token = match file {
        Some(f) => std::fs::read_to_string(f)
            .map_err(|e| {
                AdminCliError::Usage(format!("cannot read --token-file {}: {e}", f.display()))
            })?
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned(),
        None => env.unwrap_or_default().trim().to_owned(),
    };
    if token.is_empty() {
        return Err(AdminCliError::Usage(
            "no admin token: give --token-file FILE (made by `bridge-server new-token`, its hash \
             in [[admin.token]]) or set MCP_BRIDGE_ADMIN_TOKEN"
                .to_owned(),
        ));
    }
    Ok(token)
}

/// The request's URI for `action` under the admin URL `base` (`http://HOST:PORT[/prefix]`).
pub fn request_uri(base: &str, action: &Action) -> Result<Uri, AdminCliError> {
    let uri: Uri = base
        .parse()
        .map_err(|e| AdminCliError::Usage(format!("--admin-url `{base}` is not a URL: {e}")))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err(AdminCliError::Usage(format!(
            "--admin-url `{base}`: give http://HOST:PORT, the relay's [metrics] listen address \
             (the metrics listener is plain HTTP)"
        )));
    }
    let prefix = uri.path().trim_end_matches('/');
    let path = match action {
        Action::List => format!("{prefix}/admin/sessions"),
        Action::Show(id) | Action::End(id) => {
            // `node.hex` with a node id (letters, digits, `.`, `-`, `_`), or a prefix of either.
            let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_');
            if id.is_empty() || id.starts_with('.') || !id.bytes().all(allowed) {
                return Err(AdminCliError::Usage(format!(
                    "`{id}` is not a session id: give the id `bridge-server sessions` lists"
                )));
            }
            format!("{prefix}/admin/sessions/{id}")
        }
    };
    Uri::builder()
        .scheme("http")
        .authority(uri.authority().map(|a| a.as_str()).unwrap_or_default())
        .path_and_query(path)
        .build()
        .map_err(|e| AdminCliError::Usage(format!("--admin-url `{base}`: {e}")))
}

/// Asks the relay; the answer's JSON.
pub async fn call(base: &str, token: &str, action: &Action) -> Result<Value, AdminCliError> {
    let uri = request_uri(base, action)?;
    let method = match action {
        Action::End(_) => Method::DELETE,
        _ => Method::GET,
    };
    let unreachable = |why: String| AdminCliError::Unreachable {
        url: base.to_owned(),
        why,
    };
    let (status, bytes) = tokio::time::timeout(TIMEOUT, send(&uri, method, token))
        .await
        .map_err(|_| unreachable(format!("no answer within {} s", TIMEOUT.as_secs())))?
        .map_err(unreachable)?;
    interpret(status, &bytes)
}

/// One request on its own connection: the status and the body.
async fn send(uri: &Uri, method: Method, token: &str) -> Result<(StatusCode, Bytes), String> {
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    let host = uri.host().unwrap_or_default();
    let port = uri.port_u16().unwrap_or(80);
    let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
        .header(HOST, authority)
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    Ok((status, body))
}

/// What an answer means (sans-IO).
pub fn interpret(status: StatusCode, body: &[u8]) -> Result<Value, AdminCliError> {
    let value: Option<Value> = serde_json::from_slice(body).ok();
    let message = value
        .as_ref()
        .and_then(|v| v["error"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| {
            shared::log_safe_max(&String::from_utf8_lossy(body), 300)
                .trim()
                .to_owned()
        });
    match status.as_u16() {
        200 => value.ok_or(AdminCliError::Unexpected {
            status: 200,
            message: "the answer is not JSON".to_owned(),
        }),
        202 => Err(AdminCliError::Unexpected {
            status: 202,
            message: "the session was told to end, but its tool was not reaped in time; \
                      look again with `bridge-server sessions`"
                .to_owned(),
        }),
        401 | 403 => Err(AdminCliError::Refused {
            status: status.as_u16(),
            message,
        }),
        404 | 409 => Err(AdminCliError::NoSession { message }),
        s => Err(AdminCliError::Unexpected { status: s, message }),
    }
}

/// A listing as a table, one session a line (ids cut to the 8 digits the logs show, which
/// `--end` and `show` take too).
pub fn render_list(answer: &Value) -> String {
    let empty = Vec::new();
    let sessions = answer["sessions"].as_array().unwrap_or(&empty);
    if sessions.is_empty() {
        return "no live sessions\n".to_owned();
    }
    let header = [
        "ID",
        "USER",
        "TOOL",
        "CARRIER",
        "STATE",
        "AGE",
        "IDLE",
        "CALLS",
        "TO TOOL",
        "TO CLIENT",
        "PID",
    ];
    let rows: Vec<Vec<String>> = sessions
        .iter()
        .map(|s| {
            vec![
                crate::session::short_id(&text(s, "id")).to_owned(),
                text(s, "user"),
                text(s, "tool"),
                format!("{}/{}", text(s, "carrier"), text(s, "wire")),
                text(s, "state"),
                duration(s["age_s"].as_u64().unwrap_or(0)),
                duration(s["idle_s"].as_u64().unwrap_or(0)),
                s["calls"].as_u64().unwrap_or(0).to_string(),
                bytes(s, "bytes_to_tool"),
                bytes(s, "bytes_to_client"),
                s["tool_pid"]
                    .as_u64()
                    .map_or("-".to_owned(), |p| p.to_string()),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(header.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        line(row);
    }
    out
}

/// One session, a field a line.
pub fn render_session(answer: &Value) -> String {
    let s = &answer["session"];
    let mut out = String::new();
    if let Some(reason) = answer["reason"].as_str().filter(|r| !r.is_empty()) {
        out.push_str(&format!("ended: {reason}; tool reaped\n"));
    }
    for key in [
        "id",
        "user",
        "tool",
        "carrier",
        "wire",
        "state",
        "started",
        "last_activity",
        "calls",
        "messages_to_tool",
        "messages_to_client",
        "bytes_to_tool",
        "bytes_to_client",
        "tool_pid",
    ] {
        let v = match &s[key] {
            Value::String(t) => shared::log_safe_max(t, 256).into_owned(),
            Value::Null => "-".to_owned(),
            other => other.to_string(),
        };
        out.push_str(&format!("{key:<19}{v}\n"));
    }
    out
}

fn text(s: &Value, key: &str) -> String {
    shared::log_safe_max(s[key].as_str().unwrap_or("-"), 64).into_owned()
}

fn bytes(s: &Value, key: &str) -> String {
    let n = s[key].as_u64().unwrap_or(0);
    shared::human_bytes(usize::try_from(n).unwrap_or(usize::MAX))
}

/// `75` → `1m15s`; `3700` → `1h01m`.
fn duration(s: u64) -> String {
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn uris_for_each_action() {
        let list = request_uri("http://127.0.0.1:9090", &Action::List).unwrap();
        assert_eq!(list.to_string(), "http://127.0.0.1:9090/admin/sessions");
        let end = request_uri("http://[::1]:9090/relay/", &Action::End("abcd1234".into())).unwrap();
        assert_eq!(
            end.to_string(),
            "http://[::1]:9090/relay/admin/sessions/abcd1234"
        );
        for bad in ["https://relay:9090", "127.0.0.1:9090", "not a url"] {
            assert!(matches!(
                request_uri(bad, &Action::List),
                Err(AdminCliError::Usage(_))
            ));
        }
        for bad in ["../x", "..", "a b", ""] {
            assert!(matches!(
                request_uri(DEFAULT_ADMIN_URL, &Action::Show(bad.into())),
                Err(AdminCliError::Usage(_))
            ));
        }
        // A session id with a node id, whole or by the part the listing shows.
        for id in ["relay-2.0123456789abcdef", "relay_2.01234567", "01234567"] {
            let show = request_uri(DEFAULT_ADMIN_URL, &Action::Show(id.into())).unwrap();
            assert!(show.to_string().ends_with(&format!("/admin/sessions/{id}")));
        }
    }

    #[test]
    fn statuses_map_to_exit_codes() {
        let code = |s: u16, body: &str| {
            interpret(StatusCode::from_u16(s).unwrap(), body.as_bytes())
                .map(|_| 0)
                .unwrap_or_else(|e| e.exit_code())
        };
        assert_eq!(code(200, r#"{"sessions":[]}"#), 0);
        assert_eq!(code(401, r#"{"error":"unknown token"}"#), 3);
        assert_eq!(code(403, r#"{"error":"the admin API is off"}"#), 3);
        assert_eq!(code(404, r#"{"error":"no live session"}"#), 4);
        assert_eq!(code(409, r#"{"error":"ambiguous"}"#), 4);
        assert_eq!(code(202, "{}"), 1);
        assert_eq!(code(500, "oops"), 1);
        assert_eq!(code(200, "not json"), 1);
        let e = interpret(StatusCode::UNAUTHORIZED, br#"{"error":"unknown token"}"#).unwrap_err();
        assert_eq!(e.to_string(), "the relay refused: HTTP 401: unknown token");
    }

    #[test]
    fn a_listing_reads_as_a_table() {
        assert_eq!(render_list(&json!({"sessions": []})), "no live sessions\n");
        let answer = json!({"sessions": [{
            "id": "relay-1.0123456789abcdef0123456789abcdef", "user": "alice", "tool": "demo",
            "carrier": "ws", "wire": "v1", "state": "attached", "age_s": 75, "idle_s": 3700,
            "calls": 3, "bytes_to_tool": 2048, "bytes_to_client": 10, "tool_pid": 4242
        }, {
            "id": "fedcba9876543210fedcba9876543210", "user": "bob\u{1b}[31m", "tool": "time",
            "carrier": "http", "wire": "http", "state": "detached", "age_s": 5, "idle_s": 5,
            "calls": 0, "bytes_to_tool": 0, "bytes_to_client": 0, "tool_pid": null
        }]});
        let table = render_list(&answer);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].starts_with("ID        USER"), "{table}");
        assert!(lines[1].starts_with("01234567  alice"), "{table}");
        assert!(
            lines[1].contains("1m15s") && lines[1].contains("1h01m"),
            "{table}"
        );
        assert!(lines[1].ends_with("4242"), "{table}");
        assert!(
            lines[2].contains("http/http") && lines[2].ends_with('-'),
            "{table}"
        );
        assert!(
            !table.contains('\u{1b}'),
            "peer-chosen text is escaped: {table}"
        );
    }

    #[test]
    fn a_token_comes_from_the_file_or_the_environment() {
        assert_eq!(read_token(None, Some(" t0k \n".into())).unwrap(), "t0k");
        assert!(matches!(
            read_token(None, None),
            Err(AdminCliError::Usage(_))
        ));
        let missing = std::path::Path::new("/nonexistent/admin.token");
        assert_eq!(read_token(Some(missing), None).unwrap_err().exit_code(), 2);
    }
}

//! The HTTP core driven with explicit exchanges and instants.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde_json::Value;

use super::*;
use crate::upstream::exchange::{LAST_EVENT_ID, SESSION_ID};
use crate::upstream::HttpIo;

fn core() -> HttpCore {
    HttpCore::new(HttpConfig {
        url: "http://127.0.0.1:1/mcp".parse().expect("uri"),
        max_message: 1 << 20,
        auth_wait: None,
    })
}

fn line(s: &str) -> Frame {
    Frame::Line(Bytes::copy_from_slice(s.as_bytes()))
}

fn head(status: u16, ct: Option<&'static str>, session: Option<&'static str>) -> HttpIo {
    let mut headers = HeaderMap::new();
    if let Some(ct) = ct {
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    if let Some(s) = session {
        headers.insert(SESSION_ID, HeaderValue::from_static(s));
    }
    HttpIo::Head {
        status: StatusCode::from_u16(status).expect("status"),
        headers,
    }
}

fn data(s: &str) -> HttpIo {
    HttpIo::Data(Bytes::copy_from_slice(s.as_bytes()))
}

fn output(c: &mut HttpCore, now: Instant) -> Vec<Value> {
    let mut v = Vec::new();
    while let Some(b) = c.poll_output() {
        c.on_output_written(b.len() + 1, now);
        v.push(serde_json::from_slice(&b).expect("json"));
    }
    v
}

const INIT: &str = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
const INIT_OK: &str = r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"s","version":"1"}}}"#;
const INITIALIZED: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;

/// Runs the handshake; returns the core with session `s1` and version 2025-06-18.
fn handshaken(now: Instant) -> HttpCore {
    let mut c = core();
    c.on_stdin(line(INIT));
    let r = c.poll_request(now).expect("post");
    assert_eq!(r.method, Method::POST);
    assert!(r.headers.get(SESSION_ID).is_none());
    assert!(
        c.poll_request(now).is_none(),
        "nothing else while initialize is out"
    );
    c.on_http(r.ex, head(200, Some("application/json"), Some("s1")), now);
    c.on_http(r.ex, data(INIT_OK), now);
    c.on_http(r.ex, HttpIo::End, now);
    assert_eq!(output(&mut c, now)[0]["id"], 0);
    // The standalone stream opens at once, before the server hears `initialized` (after which
    // it may speak first); this server has none.
    let g = c.poll_request(now).expect("listen");
    assert_eq!(g.method, Method::GET);
    assert_eq!(g.headers[SESSION_ID], "s1");
    assert_eq!(g.headers["mcp-protocol-version"], "2025-06-18");
    c.on_http(g.ex, head(405, None, None), now);
    c.on_http(g.ex, HttpIo::End, now);
    c.on_stdin(line(INITIALIZED));
    let r = c.poll_request(now).expect("initialized");
    assert_eq!(r.headers[SESSION_ID], "s1");
    assert_eq!(r.headers["mcp-protocol-version"], "2025-06-18");
    c.on_http(r.ex, head(202, None, None), now);
    c.on_http(r.ex, HttpIo::End, now);
    assert!(c.poll_request(now).is_none(), "no second GET after a 405");
    c
}

#[test]
fn sse_answer_with_a_notification_first() {
    let now = Instant::now();
    let mut c = handshaken(now);
    c.on_stdin(line(
        r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x"}}"#,
    ));
    c.on_stdin(line(r#"{"jsonrpc":"2.0","id":8,"method":"tools/list"}"#));
    let a = c.poll_request(now).expect("post 7");
    let b = c.poll_request(now).expect("post 8: concurrent");
    assert_eq!(a.headers["mcp-name"], "x");
    c.on_http(a.ex, head(200, Some("text/event-stream"), None), now);
    c.on_http(a.ex, data("id: 1\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\"}\n\nid: 2\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,"), now);
    c.on_http(a.ex, data("\"result\":{}}\n\n"), now);
    c.on_http(b.ex, head(200, Some("application/json"), None), now);
    c.on_http(b.ex, data(r#"{"jsonrpc":"2.0","id":8,"result":{}}"#), now);
    c.on_http(b.ex, HttpIo::End, now);
    let out = output(&mut c, now);
    assert_eq!(out.len(), 3);
    assert_eq!(out[0]["method"], "notifications/message");
    assert_eq!(out[1]["id"], 7);
    assert_eq!(out[2]["id"], 8);
    // The answered stream is let go if the server does not end it.
    c.on_timeout(now + Duration::from_secs(1));
    assert_eq!(c.poll_dropped(), Some(a.ex));
}

#[test]
fn an_id_reused_after_its_answer_is_not_failed_by_the_old_stream_ending() {
    let now = Instant::now();
    let mut c = handshaken(now);
    let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}"#;
    c.on_stdin(line(call));
    let a = c.poll_request(now).expect("post");
    c.on_http(a.ex, head(200, Some("text/event-stream"), None), now);
    c.on_http(
        a.ex,
        data("data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n"),
        now,
    );
    assert_eq!(output(&mut c, now).len(), 1);
    // The IDE reuses id 1 before the first stream's end has been read.
    c.on_stdin(line(call));
    let b = c.poll_request(now).expect("post again");
    c.on_http(a.ex, HttpIo::End, now);
    assert!(
        output(&mut c, now).is_empty(),
        "the second call is not failed"
    );
    c.on_http(b.ex, head(200, Some("application/json"), None), now);
    c.on_http(
        b.ex,
        data(r#"{"jsonrpc":"2.0","id":1,"result":{"n":2}}"#),
        now,
    );
    c.on_http(b.ex, HttpIo::End, now);
    let out = output(&mut c, now);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["result"]["n"], 2);
}

#[test]
fn broken_stream_resumes_from_its_last_event_and_answers_once() {
    let now = Instant::now();
    let mut c = handshaken(now);
    c.on_stdin(line(
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"slow"}}"#,
    ));
    let a = c.poll_request(now).expect("post");
    c.on_http(a.ex, head(200, Some("text/event-stream"), None), now);
    c.on_http(a.ex, data("retry: 300\nid: e1\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n"), now);
    c.on_http(a.ex, HttpIo::Error("connection reset".into()), now);
    assert_eq!(output(&mut c, now).len(), 1, "the progress, no error");
    assert!(c.poll_request(now).is_none(), "waits for retry");
    assert_eq!(c.poll_timeout(), Some(now + Duration::from_millis(300)));
    let later = now + Duration::from_millis(300);
    let g = c.poll_request(later).expect("resume");
    assert_eq!(g.method, Method::GET);
    assert_eq!(g.headers[LAST_EVENT_ID], "e1");
    assert_eq!(g.headers[SESSION_ID], "s1");
    c.on_http(g.ex, head(200, Some("text/event-stream"), None), later);
    c.on_http(
        g.ex,
        data("id: e2\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n"),
        later,
    );
    c.on_http(g.ex, HttpIo::End, later);
    let out = output(&mut c, later);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["id"], 1);
    assert!(out[0].get("error").is_none());
}

#[test]
fn lost_session_replays_the_handshake_then_resends() {
    let now = Instant::now();
    let mut c = handshaken(now);
    c.on_stdin(line(r#"{"jsonrpc":"2.0","id":5,"method":"tools/list"}"#));
    let a = c.poll_request(now).expect("post");
    c.on_http(a.ex, head(404, None, None), now);
    c.on_http(a.ex, HttpIo::End, now);
    let r = c.poll_request(now).expect("replayed initialize");
    assert!(r.headers.get(SESSION_ID).is_none());
    let body: Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(body["method"], "initialize");
    assert_eq!(body["id"], "mcp-bridge-reinit-1");
    assert!(c.poll_request(now).is_none());
    c.on_http(r.ex, head(200, Some("application/json"), Some("s2")), now);
    c.on_http(r.ex, data(r#"{"jsonrpc":"2.0","id":"mcp-bridge-reinit-1","result":{"protocolVersion":"2025-06-18"}}"#), now);
    c.on_http(r.ex, HttpIo::End, now);
    // The standalone stream of the new session opens first.
    let g = c.poll_request(now).expect("listen");
    assert_eq!(g.method, Method::GET);
    assert_eq!(g.headers[SESSION_ID], "s2");
    let n = c.poll_request(now).expect("initialized");
    assert_eq!(n.headers[SESSION_ID], "s2");
    assert_eq!(&n.body[..], INITIALIZED.as_bytes());
    c.on_http(n.ex, head(202, None, None), now);
    let again = c.poll_request(now).expect("resent");
    assert_eq!(again.headers[SESSION_ID], "s2");
    assert_eq!(again.body, a.body);
    assert!(output(&mut c, now).is_empty(), "the IDE saw nothing of it");
}

#[test]
fn unreachable_answers_with_32011_and_401_carries_the_challenge() {
    let now = Instant::now();
    let mut c = handshaken(now);
    c.on_stdin(line(r#"{"jsonrpc":"2.0","id":"a","method":"tools/list"}"#));
    let a = c.poll_request(now).expect("post");
    c.on_http(a.ex, HttpIo::Error("connection refused".into()), now);
    let out = output(&mut c, now);
    assert_eq!(out[0]["error"]["code"], -32011);
    assert!(out[0]["error"]["message"]
        .as_str()
        .expect("text")
        .contains("connection refused"));
    c.on_stdin(line(r#"{"jsonrpc":"2.0","id":"b","method":"tools/list"}"#));
    let b = c.poll_request(now).expect("post");
    let mut h = HeaderMap::new();
    h.insert(
        http::header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"x\""),
    );
    c.on_http(
        b.ex,
        HttpIo::Head {
            status: StatusCode::UNAUTHORIZED,
            headers: h,
        },
        now,
    );
    match c.poll_event() {
        Some(UpstreamEvent::AuthRequired(ch)) => {
            assert_eq!(ch.www_authenticate.as_deref(), Some("Bearer realm=\"x\""));
        }
        other => panic!("{other:?}"),
    }
    let out = output(&mut c, now);
    assert!(out[0]["error"]["message"]
        .as_str()
        .expect("text")
        .contains("bridge-client login"));
}

#[test]
fn discover_on_a_handshake_era_server_is_method_not_found() {
    let now = Instant::now();
    let mut c = core();
    c.on_stdin(line(r#"{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#));
    let r = c.poll_request(now).expect("post");
    assert_eq!(r.headers["mcp-method"], "server/discover");
    assert_eq!(r.headers["mcp-protocol-version"], "2026-07-28");
    c.on_http(r.ex, head(400, Some("text/plain"), None), now);
    c.on_http(r.ex, data("Bad Request: Missing session ID"), now);
    c.on_http(r.ex, HttpIo::End, now);
    assert_eq!(output(&mut c, now)[0]["error"]["code"], -32601);
}

#[test]
fn a_server_that_never_answers_times_out_with_32011_and_frees_the_slot() {
    let now = Instant::now();
    let mut c = handshaken(now);
    c.on_stdin(line(r#"{"jsonrpc":"2.0","id":9,"method":"tools/list"}"#));
    c.on_stdin(line(r#"{"jsonrpc":"2.0","id":10,"method":"tools/list"}"#));
    let a = c.poll_request(now).expect("post 9");
    let b = c.poll_request(now).expect("post 10");
    while c.poll_dropped().is_some() {}
    assert_eq!(c.poll_timeout(), Some(now + Duration::from_secs(60)));
    // 10 answers with an SSE head, then stays silent: that stream has no deadline.
    c.on_http(b.ex, head(200, Some("text/event-stream"), None), now);
    let almost = now + Duration::from_secs(59);
    c.on_timeout(almost);
    assert!(output(&mut c, almost).is_empty());
    assert!(c.poll_dropped().is_none());
    let later = now + Duration::from_secs(60);
    c.on_timeout(later);
    assert_eq!(c.poll_dropped(), Some(a.ex), "the driver stops reading it");
    assert!(c.poll_dropped().is_none());
    let out = output(&mut c, later);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0]["id"], 9);
    assert_eq!(out[0]["error"]["code"], -32011);
    let text = out[0]["error"]["message"].as_str().expect("text");
    assert!(text.contains("within 60 s"), "{text}");
    assert_eq!(c.exchanges.len(), 1, "only the SSE stream is left");
    // A late head for the expired exchange changes nothing.
    c.on_http(a.ex, head(200, Some("application/json"), None), later);
    assert!(output(&mut c, later).is_empty());
    assert_eq!(c.poll_timeout(), None);
    // A JSON body that stalls after its head gets the same bound for its silence.
    c.on_stdin(line(r#"{"jsonrpc":"2.0","id":11,"method":"tools/list"}"#));
    let d = c.poll_request(later).expect("post 11");
    c.on_http(d.ex, head(200, Some("application/json"), None), later);
    let mid = later + Duration::from_secs(30);
    c.on_http(d.ex, data(r#"{"jsonrpc":"2.0","#), mid);
    c.on_timeout(later + Duration::from_secs(60));
    assert!(output(&mut c, mid).is_empty(), "data came 30 s in");
    c.on_timeout(mid + Duration::from_secs(60));
    let out = output(&mut c, mid);
    assert_eq!(out[0]["id"], 11);
    assert_eq!(out[0]["error"]["code"], -32011);
}

mod auth;
mod legacy;
mod relist;

#[test]
fn a_modern_tools_list_teaches_the_param_headers_of_later_calls() {
    let now = Instant::now();
    let mut c = core();
    let meta = r#""_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}"#;
    c.on_stdin(line(&format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{{{meta}}}}}"#
    )));
    let l = c.poll_request(now).expect("list");
    c.on_http(l.ex, head(200, Some("application/json"), None), now);
    c.on_http(l.ex, data(r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[
        {"name":"sql","inputSchema":{"type":"object","properties":{"region":{"type":"string","x-mcp-header":"Region"}}}},
        {"name":"bad","inputSchema":{"type":"object","properties":{"f":{"type":"number","x-mcp-header":"F"}}}}]}}"#), now);
    c.on_http(l.ex, HttpIo::End, now);
    let out = output(&mut c, now);
    let tools = out[0]["result"]["tools"].as_array().expect("tools");
    assert_eq!(tools.len(), 1, "the invalid tool is left out: {out:?}");
    c.on_stdin(line(&format!(
        r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"sql","arguments":{{"region":"us-west1"}},{meta}}}}}"#
    )));
    let r = c.poll_request(now).expect("call");
    assert_eq!(r.headers["mcp-param-region"], "us-west1");
    assert_eq!(r.headers["mcp-name"], "sql");
}

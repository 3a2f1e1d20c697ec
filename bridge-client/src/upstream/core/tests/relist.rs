//! A `-32020` (HeaderMismatch) answer to a 2026-07-28 `tools/call`: re-list, retry once.

use super::*;

const META: &str =
    r#""_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","progressToken":"p1"}"#;
const MISMATCH: &str = r#"{"jsonrpc":"2.0","id":2,"error":{"code":-32020,"message":"Header mismatch: Mcp-Param-Region missing"}}"#;
const ANNOTATED: &str = r#"{"jsonrpc":"2.0","id":"mcp-bridge-relist-1","result":{"tools":[
    {"name":"sql","inputSchema":{"type":"object","properties":{"region":{"type":"string","x-mcp-header":"Region"}}}}]}}"#;

fn call_sql(c: &mut HttpCore) {
    c.on_stdin(line(&format!(
        r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"sql","arguments":{{"region":"eu"}},{META}}}}}"#
    )));
}

fn answer(c: &mut HttpCore, ex: u64, status: u16, body: &str, now: Instant) {
    c.on_http(ex, head(status, Some("application/json"), None), now);
    c.on_http(ex, data(body), now);
    c.on_http(ex, HttpIo::End, now);
}

/// The call (sent without the header: nothing was learned yet) refused with -32020; returns
/// bridge-client's own tools/list request.
fn refused(c: &mut HttpCore, now: Instant) -> Outgoing {
    call_sql(c);
    let a = c.poll_request(now).expect("call");
    assert!(a.headers.get("mcp-param-region").is_none());
    answer(c, a.ex, 400, MISMATCH, now);
    assert!(output(c, now).is_empty(), "the IDE waits");
    let l = c.poll_request(now).expect("re-list");
    let body: Value = serde_json::from_slice(&l.body).expect("json");
    assert_eq!(body["method"], "tools/list");
    assert_eq!(body["id"], "mcp-bridge-relist-1");
    assert_eq!(
        body["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"],
        "2026-07-28"
    );
    assert!(
        body["params"]["_meta"].get("progressToken").is_none(),
        "the call's progress token stays the call's: {body}"
    );
    assert_eq!(l.headers["mcp-method"], "tools/list");
    l
}

#[test]
fn header_mismatch_relists_the_tools_then_retries_once_with_the_new_headers() {
    let now = Instant::now();
    let mut c = core();
    let l = refused(&mut c, now);
    answer(&mut c, l.ex, 200, ANNOTATED, now);
    assert!(
        output(&mut c, now).is_empty(),
        "the re-list is not the IDE's"
    );
    let r = c.poll_request(now).expect("retry");
    assert_eq!(r.headers["mcp-param-region"], "eu");
    answer(
        &mut c,
        r.ex,
        200,
        r#"{"jsonrpc":"2.0","id":2,"result":{"content":[]}}"#,
        now,
    );
    let out = output(&mut c, now);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0]["id"], 2);
    assert!(out[0].get("result").is_some());
    assert!(c.pending.is_empty() && c.relist.is_none());
}

#[test]
fn a_second_mismatch_or_a_failed_relist_reaches_the_ide_as_the_server_said() {
    let now = Instant::now();
    let mut c = core();
    let l = refused(&mut c, now);
    answer(&mut c, l.ex, 200, ANNOTATED, now);
    let r = c.poll_request(now).expect("retry");
    answer(&mut c, r.ex, 400, MISMATCH, now);
    let out = output(&mut c, now);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["error"]["code"], -32020, "one retry only");
    assert!(c.poll_request(now).is_none());

    // The re-list itself fails: the IDE gets the first refusal.
    let mut c = core();
    let l = refused(&mut c, now);
    c.on_http(l.ex, head(500, Some("text/plain"), None), now);
    c.on_http(l.ex, data("boom"), now);
    c.on_http(l.ex, HttpIo::End, now);
    let out = output(&mut c, now);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0]["id"], 2);
    assert_eq!(out[0]["error"]["code"], -32020);
    assert!(c.pending.is_empty() && c.relist.is_none());
}

#[test]
fn a_relist_whose_stream_breaks_answers_the_call_once_and_the_next_mismatch_relists_again() {
    let now = Instant::now();
    let mut c = core();
    let l = refused(&mut c, now);
    // The re-list's answer stream opens, then breaks with no event id to resume from.
    c.on_http(l.ex, head(200, Some("text/event-stream"), None), now);
    c.on_http(l.ex, HttpIo::Error("connection reset".into()), now);
    let out = output(&mut c, now);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0]["id"], 2);
    assert_eq!(out[0]["error"]["code"], -32020);
    assert!(c.pending.is_empty() && c.relist.is_none());
    assert!(c.poll_request(now).is_none());
    c.on_timeout(now + Duration::from_secs(600));
    assert!(output(&mut c, now).is_empty(), "exactly one answer");

    // The same call again, refused again: a new re-list, not the refusal straight to the IDE.
    call_sql(&mut c);
    let a = c.poll_request(now).expect("call");
    answer(&mut c, a.ex, 400, MISMATCH, now);
    assert!(output(&mut c, now).is_empty(), "the IDE waits");
    let l = c.poll_request(now).expect("re-list");
    let body: Value = serde_json::from_slice(&l.body).expect("json");
    assert_eq!(body["id"], "mcp-bridge-relist-2");
}

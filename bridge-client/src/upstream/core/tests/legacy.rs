//! The legacy HTTP+SSE fallback driven with explicit exchanges and instants.

use super::*;

fn sse(data_lines: &str) -> HttpIo {
    data(data_lines)
}

fn body_of(r: &Outgoing) -> Value {
    serde_json::from_slice(&r.body).expect("json")
}

#[test]
fn a_405_falls_back_to_http_sse_and_a_lost_stream_replays_the_handshake() {
    let now = Instant::now();
    let mut c = core();
    c.on_stdin(line(INIT));
    let p = c.poll_request(now).expect("streamable post");
    c.on_http(p.ex, head(405, Some("text/plain"), None), now);
    assert_eq!(c.poll_dropped(), Some(p.ex));
    let g = c.poll_request(now).expect("the legacy stream");
    assert_eq!(g.method, Method::GET);
    assert_eq!(g.url, "http://127.0.0.1:1/mcp");
    assert_eq!(g.headers[http::header::ACCEPT], "text/event-stream");
    assert!(c.poll_request(now).is_none(), "nothing before the endpoint");
    c.on_http(g.ex, head(200, Some("text/event-stream"), None), now);
    c.on_http(
        g.ex,
        sse("event: endpoint\ndata: /messages/?session_id=x1\n\n"),
        now,
    );
    let i = c.poll_request(now).expect("initialize to the endpoint");
    assert_eq!(i.url, "http://127.0.0.1:1/messages/?session_id=x1");
    assert_eq!(&i.body[..], INIT.as_bytes());
    c.on_http(i.ex, head(202, Some("text/plain"), None), now);
    c.on_http(
        g.ex,
        sse(&format!("event: message\ndata: {INIT_OK}\n\n")),
        now,
    );
    assert_eq!(
        output(&mut c, now)[0]["result"]["protocolVersion"],
        "2025-06-18"
    );
    c.on_stdin(line(INITIALIZED));
    let n = c.poll_request(now).expect("initialized");
    c.on_http(n.ex, head(202, None, None), now);
    assert!(
        c.poll_request(now).is_none(),
        "no standalone GET in legacy mode"
    );
    // A request is accepted, then the stream is lost before its answer.
    c.on_stdin(line(r#"{"jsonrpc":"2.0","id":5,"method":"tools/list"}"#));
    let r5 = c.poll_request(now).expect("post 5");
    c.on_http(r5.ex, head(202, None, None), now);
    c.on_http(g.ex, HttpIo::Error("connection reset".into()), now);
    let out = output(&mut c, now);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0]["id"], 5);
    assert_eq!(out[0]["error"]["code"], -32011);
    // The next request opens a new stream and replays the handshake first.
    c.on_stdin(line(r#"{"jsonrpc":"2.0","id":6,"method":"tools/list"}"#));
    let g2 = c.poll_request(now).expect("a new stream");
    assert_eq!(g2.method, Method::GET);
    c.on_http(g2.ex, head(200, Some("text/event-stream"), None), now);
    c.on_http(
        g2.ex,
        sse("event: endpoint\ndata: /messages/?session_id=x2\n\n"),
        now,
    );
    let ri = c.poll_request(now).expect("replayed initialize");
    assert_eq!(body_of(&ri)["id"], "mcp-bridge-reinit-1");
    assert!(ri.url.to_string().ends_with("x2"));
    c.on_http(ri.ex, head(202, None, None), now);
    assert!(c.poll_request(now).is_none(), "6 waits for the replay");
    c.on_http(
        g2.ex,
        sse("data: {\"jsonrpc\":\"2.0\",\"id\":\"mcp-bridge-reinit-1\",\"result\":{}}\n\n"),
        now,
    );
    let rn = c.poll_request(now).expect("replayed initialized");
    assert_eq!(&rn.body[..], INITIALIZED.as_bytes());
    c.on_http(rn.ex, head(202, None, None), now);
    let r6 = c.poll_request(now).expect("post 6");
    assert_eq!(body_of(&r6)["id"], 6);
    c.on_http(r6.ex, head(202, None, None), now);
    c.on_http(
        g2.ex,
        sse("data: {\"jsonrpc\":\"2.0\",\"id\":6,\"result\":{}}\n\n"),
        now,
    );
    let out = output(&mut c, now);
    assert_eq!(out.len(), 1, "the replay is swallowed: {out:?}");
    assert_eq!(out[0]["id"], 6);
}

#[test]
fn a_refused_legacy_stream_answers_what_waits_and_tries_again_later() {
    let now = Instant::now();
    let mut c = core();
    c.on_stdin(line(INIT));
    let p = c.poll_request(now).expect("post");
    c.on_http(p.ex, head(404, None, None), now);
    let g = c.poll_request(now).expect("stream");
    c.on_http(g.ex, head(404, Some("text/plain"), None), now);
    let out = output(&mut c, now);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["id"], 0);
    assert_eq!(out[0]["error"]["code"], -32011);
    assert!(c.poll_request(now).is_none(), "nothing waits");
    // The next message tries again at once; refused again, the one after waits a backoff.
    c.on_stdin(line(INIT));
    let g = c.poll_request(now).expect("stream again");
    c.on_http(g.ex, HttpIo::Error("connection refused".into()), now);
    assert_eq!(output(&mut c, now)[0]["error"]["code"], -32011);
    c.on_stdin(line(INIT));
    assert!(c.poll_request(now).is_none());
    let later = c.poll_timeout().expect("a timer");
    assert!(later > now);
    let g2 = c.poll_request(later).expect("stream again");
    assert_eq!(g2.method, Method::GET);
    // An endpoint on another origin is refused.
    c.on_http(g2.ex, head(200, Some("text/event-stream"), None), later);
    c.on_http(
        g2.ex,
        sse("event: endpoint\ndata: http://evil.example/m\n\n"),
        later,
    );
    assert_eq!(output(&mut c, later)[0]["error"]["code"], -32011);
}

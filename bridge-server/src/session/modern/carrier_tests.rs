use super::*;
use crate::session::http::JSON_WITHIN;
use crate::session::modern::params::ParamHeaders;
use serde_json::Value;

fn message(io: Io) -> Value {
    match io {
        Io::Message(b) => serde_json::from_slice(&b).expect("json"),
        Io::Ready => panic!("Ready, not a message"),
        Io::Closed(why) | Io::Fatal(why) => panic!("ended: {why}"),
    }
}

fn to_client(c: &mut ModernCarrier, msg: String) -> Result<(), String> {
    c.send(Transmit::Text(Bytes::from(msg)))
}

/// A new carrier for user `u`'s process of `tool` (idle after `idle`, its clock starting at
/// `start`), its inlet and its pool.
fn fresh(
    tool: &str,
    idle: Duration,
    start: Instant,
) -> (ModernCarrier, mpsc::Sender<Call>, Arc<Pool>) {
    let (tx, rx) = mpsc::channel(8);
    let pool = Arc::new(Pool::default());
    let c = ModernCarrier::new(
        rx,
        pool.clone(),
        "u".into(),
        tool.into(),
        CancellationToken::new(),
        idle,
        start,
    );
    (c, tx, pool)
}

/// A carrier whose tool has answered the probe as a 2026-07-28 server and listed no tools,
/// and its inlet.
async fn modern() -> (ModernCarrier, mpsc::Sender<Call>, Arc<Pool>) {
    modern_listing(r#"{"tools":[]}"#).await
}

/// A carrier whose tool has answered the probe as a 2026-07-28 server and the relay's
/// `tools/list` with `result`, and its inlet.
async fn modern_listing(result: &str) -> (ModernCarrier, mpsc::Sender<Call>, Arc<Pool>) {
    let (mut c, tx, pool) = fresh("t", Duration::from_secs(60), Instant::now());
    let probe = message(c.io(true, false).await);
    assert_eq!(probe["method"], "server/discover");
    let answer = format!(
        r#"{{"jsonrpc":"2.0","id":{},"result":{{"supportedVersions":["2026-07-28"]}}}}"#,
        probe["id"]
    );
    to_client(&mut c, answer).expect("modern");
    let list = message(c.io(true, false).await);
    assert_eq!(list["method"], "tools/list");
    to_client(
        &mut c,
        format!(
            r#"{{"jsonrpc":"2.0","id":{},"result":{result}}}"#,
            list["id"]
        ),
    )
    .expect("listed");
    (c, tx, pool)
}

/// Sends a call and takes it: its id at the tool and its events.
async fn call(c: &mut ModernCarrier, tx: &mpsc::Sender<Call>, sse: bool) -> (Value, Events) {
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","_meta":{"progressToken":1}}}"#;
    call_with(c, tx, body, sse).await
}

/// Puts the call `body` (with `params`) in the inlet; what the handler gets back.
async fn send_call(
    c: &mut ModernCarrier,
    tx: &mpsc::Sender<Call>,
    body: &'static str,
    params: Option<ParamHeaders>,
) -> (Option<Io>, Reply) {
    let (reply, answer) = oneshot::channel();
    let request = super::super::wire::fields(body.as_bytes())
        .expect("fields")
        .request_spans();
    let call = Call {
        body: Bytes::from_static(body.as_bytes()),
        request,
        sse: false,
        params,
        reply,
    };
    tx.send(call).await.expect("sent");
    let to_tool = tokio::time::timeout(Duration::from_millis(200), c.io(true, false))
        .await
        .ok();
    (to_tool, answer.await.expect("a reply"))
}

/// Sends the call `body` and takes it: its id at the tool and its events.
async fn call_with(
    c: &mut ModernCarrier,
    tx: &mpsc::Sender<Call>,
    body: &'static str,
    sse: bool,
) -> (Value, Events) {
    let (reply, answer) = oneshot::channel();
    let request = super::super::wire::fields(body.as_bytes())
        .expect("fields")
        .request_spans();
    tx.send(Call {
        body: Bytes::from_static(body.as_bytes()),
        request,
        sse,
        params: None,
        reply,
    })
    .await
    .expect("sent");
    let to_tool = message(c.io(true, false).await);
    let Ok(Reply::Stream(events)) = answer.await else {
        panic!("no stream");
    };
    (to_tool, events)
}

#[tokio::test]
async fn a_client_that_reads_nothing_loses_progress_but_not_its_answer_nor_others() {
    let (mut c, tx, _pool) = modern().await;
    let (slow, mut slow_events) = call(&mut c, &tx, true).await;
    let (quick, mut quick_events) = call(&mut c, &tx, true).await;
    for i in 0..500 {
        let progress = format!(
            r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":{{"progressToken":{},"progress":{i},"message":"{}"}}}}"#,
            slow["id"],
            "p".repeat(1000)
        );
        to_client(&mut c, progress).expect("never blocks");
    }
    // The other client is served at once.
    to_client(
        &mut c,
        format!(r#"{{"jsonrpc":"2.0","id":{},"result":{{}}}}"#, quick["id"]),
    )
    .expect("answer");
    let got = quick_events.recv().await.expect("quick answer");
    assert!(String::from_utf8_lossy(&got.bytes).contains(r#""id":1"#));
    // The slow one's answer still comes, after the progress that fit.
    to_client(
        &mut c,
        format!(
            r#"{{"jsonrpc":"2.0","id":{},"result":{{"v":2}}}}"#,
            slow["id"]
        ),
    )
    .expect("answer");
    let mut events = Vec::new();
    while let Some(e) = slow_events.recv().await {
        events.push(e.bytes);
    }
    let last = String::from_utf8_lossy(events.last().expect("events"));
    assert!(last.contains(r#""v":2"#), "{last}");
    assert!(
        events.len() < 500 && events.len() <= STREAM_EVENTS,
        "{}",
        events.len()
    );
    let progress_bytes: usize = events[..events.len() - 1].iter().map(Bytes::len).sum();
    assert!(progress_bytes <= STREAM_BUDGET, "{progress_bytes}");
}

#[tokio::test]
async fn a_closed_stream_becomes_a_cancel_for_the_tool() {
    let (mut c, tx, _pool) = modern().await;
    let (to_tool, events) = call(&mut c, &tx, true).await;
    drop(events);
    // Noticed at the next check (at most CHECK_EVERY later).
    c.on_timer(Instant::now() + CHECK_EVERY).expect("on time");
    let cancel = message(c.io(true, false).await);
    assert_eq!(cancel["method"], "notifications/cancelled");
    assert_eq!(cancel["params"]["requestId"], to_tool["id"]);
}

#[tokio::test]
async fn a_json_client_gets_its_answer_alone() {
    let (mut c, tx, _pool) = modern().await;
    let (to_tool, mut events) = call(&mut c, &tx, false).await;
    assert_eq!(to_tool["params"]["_meta"]["progressToken"], to_tool["id"]);
    let progress = format!(
        r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":{{"progressToken":{},"progress":1}}}}"#,
        to_tool["id"]
    );
    to_client(&mut c, progress).expect("dropped");
    to_client(
        &mut c,
        format!(
            r#"{{"jsonrpc":"2.0","id":{},"result":{{}}}}"#,
            to_tool["id"]
        ),
    )
    .expect("answer");
    let only = events.recv().await.expect("answer");
    let v: Value = serde_json::from_slice(&only.bytes).expect("plain JSON");
    assert_eq!(v["id"], 1);
    assert!(events.recv().await.is_none());
}

#[tokio::test]
async fn a_handshake_era_tool_ends_the_process_and_is_remembered() {
    let (mut c, _tx, pool) = fresh("demo", Duration::from_secs(60), Instant::now());
    let probe = message(c.io(true, false).await);
    let refused = format!(
        r#"{{"jsonrpc":"2.0","id":{},"error":{{"code":-32601,"message":"method not found"}}}}"#,
        probe["id"]
    );
    assert!(to_client(&mut c, refused).is_err());
    assert!(pool.is_handshake("demo", Instant::now()));
}

const REGION: &str = r#"{"tools":[{"name":"sql","inputSchema":{"type":"object","properties":{"region":{"type":"string","x-mcp-header":"Region"}}}},{"name":"bad","inputSchema":{"type":"object","properties":{"f":{"type":"number","x-mcp-header":"F"}}}}]}"#;

const SQL_CALL: &str = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"sql","arguments":{"region":"us-west1"}}}"#;

fn region_header(value: &str) -> Option<ParamHeaders> {
    Some(ParamHeaders {
        tool: "sql".into(),
        headers: vec![("mcp-param-region".into(), value.as_bytes().to_vec())],
    })
}

#[tokio::test]
async fn calls_wait_for_the_relays_tools_list_and_are_checked_against_it() {
    let (mut c, tx, _pool) = fresh("t", Duration::from_secs(60), Instant::now());
    let probe = message(c.io(true, false).await);
    to_client(
        &mut c,
        format!(
            r#"{{"jsonrpc":"2.0","id":{},"result":{{"supportedVersions":["2026-07-28"]}}}}"#,
            probe["id"]
        ),
    )
    .expect("modern");
    let list = message(c.io(true, false).await);
    assert_eq!(list["method"], "tools/list");
    // A call queued meanwhile is not taken before the list is answered.
    let (reply, mut answer) = oneshot::channel();
    let request = super::super::wire::fields(SQL_CALL.as_bytes())
        .expect("fields")
        .request_spans();
    tx.send(Call {
        body: Bytes::from_static(SQL_CALL.as_bytes()),
        request,
        sse: false,
        params: region_header("eu-west1"),
        reply,
    })
    .await
    .expect("sent");
    assert!(
        tokio::time::timeout(Duration::from_millis(100), c.io(true, false))
            .await
            .is_err(),
        "nothing for the tool before the list is answered"
    );
    // Two pages: the cursor is followed.
    to_client(
        &mut c,
        format!(
            r#"{{"jsonrpc":"2.0","id":{},"result":{{"tools":[],"nextCursor":"p2"}}}}"#,
            list["id"]
        ),
    )
    .expect("page 1");
    let page2 = message(c.io(true, false).await);
    assert_eq!(page2["params"]["cursor"], "p2");
    to_client(
        &mut c,
        format!(
            r#"{{"jsonrpc":"2.0","id":{},"result":{REGION}}}"#,
            page2["id"]
        ),
    )
    .expect("page 2");
    // Now the call is taken, and refused: its header does not match the body.
    let to_tool = tokio::time::timeout(Duration::from_millis(200), c.io(true, false))
        .await
        .ok();
    assert!(to_tool.is_none(), "a refused call never reaches the tool");
    match answer.try_recv() {
        Ok(Reply::Refused(r)) => {
            assert_eq!((r.status, r.code), (400, -32020));
            assert!(
                r.message
                    .contains("Mcp-Param-Region header value `eu-west1`"),
                "{}",
                r.message
            );
        }
        _ => panic!("no refusal"),
    }
    // The matching header goes to the tool.
    let (to_tool, reply) = send_call(&mut c, &tx, SQL_CALL, region_header("us-west1")).await;
    assert!(matches!(reply, Reply::Stream(_)));
    assert_eq!(message(to_tool.expect("taken"))["method"], "tools/call");
}

#[tokio::test]
async fn a_clients_tools_list_answer_teaches_the_annotations_and_passes_unchanged() {
    let (mut c, tx, _pool) = modern().await;
    // A tools/call answer that looks like a list teaches nothing.
    let (at_tool, _events) = call(&mut c, &tx, false).await;
    let other = format!(
        r#"{{"jsonrpc":"2.0","id":{},"result":{REGION}}}"#,
        at_tool["id"]
    );
    to_client(&mut c, other).expect("delivered");
    assert!(c.params.of("sql").is_empty());
    let list = r#"{"jsonrpc":"2.0","id":"l","method":"tools/list","params":{}}"#;
    let (at_tool, mut events) = call_with(&mut c, &tx, list, false).await;
    let answer = format!(
        r#"{{"jsonrpc":"2.0","id":{},"result":{REGION}}}"#,
        at_tool["id"]
    );
    to_client(&mut c, answer.clone()).expect("delivered");
    let got: Value =
        serde_json::from_slice(&events.recv().await.expect("answer").bytes).expect("json");
    let sent: Value = serde_json::from_str(&answer).expect("json");
    assert_eq!(
        got["result"], sent["result"],
        "the invalid tool is not left out"
    );
    assert_eq!(got["id"], "l");
    assert_eq!(c.params.of("sql").len(), 1);
    assert!(c.params.of("bad").is_empty());
    let (_, reply) = send_call(&mut c, &tx, SQL_CALL, region_header("x")).await;
    assert!(matches!(reply, Reply::Refused(_)));
}

#[tokio::test]
async fn a_tool_that_lists_no_tools_in_time_still_serves_calls() {
    let start = Instant::now();
    let (mut c, tx, _pool) = fresh("t", Duration::from_secs(600), start);
    let probe = message(c.io(true, false).await);
    to_client(
        &mut c,
        format!(
            r#"{{"jsonrpc":"2.0","id":{},"result":{{"supportedVersions":["2026-07-28"]}}}}"#,
            probe["id"]
        ),
    )
    .expect("modern");
    assert_eq!(message(c.io(true, false).await)["method"], "tools/list");
    assert!(c.deadline() <= Instant::now() + PROBE_WITHIN);
    c.on_timer(Instant::now() + PROBE_WITHIN).expect("goes on");
    let (to_tool, reply) = send_call(&mut c, &tx, SQL_CALL, region_header("any")).await;
    assert!(
        matches!(reply, Reply::Stream(_)),
        "unchecked: nothing is known"
    );
    assert!(to_tool.is_some());
}

#[tokio::test]
async fn an_sse_clients_answer_is_whole_when_first_and_soon_else_a_stream() {
    let (mut c, tx, _pool) = modern().await;
    let answer = |id: &Value| format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{}}}}"#);
    // Answered before anything else for it: the whole answer, plain JSON.
    let (a, mut a_events) = call(&mut c, &tx, true).await;
    assert!(a_events.try_recv().is_err(), "nothing before the answer");
    to_client(&mut c, answer(&a["id"])).expect("answer");
    let only = a_events.recv().await.expect("answer");
    assert!(only.whole);
    let v: Value = serde_json::from_slice(&only.bytes).expect("plain JSON");
    assert_eq!(v["id"], 1);
    assert!(a_events.recv().await.is_none());
    // Progress first: an SSE stream, the progress its first event, then the answer.
    let (b, mut b_events) = call(&mut c, &tx, true).await;
    let progress = format!(
        r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":{{"progressToken":{},"progress":1}}}}"#,
        b["id"]
    );
    to_client(&mut c, progress).expect("progress");
    to_client(&mut c, answer(&b["id"])).expect("answer");
    let first = b_events.recv().await.expect("progress");
    assert!(!first.whole && first.bytes.starts_with(b"data: "));
    let last = b_events.recv().await.expect("answer");
    assert!(!last.whole && last.bytes.starts_with(b"data: "));
    assert!(b_events.recv().await.is_none());
    // No answer within JSON_WITHIN: the stream begins (an empty chunk tells the handler).
    let (d, mut d_events) = call(&mut c, &tx, true).await;
    assert!(c.deadline() <= Instant::now() + JSON_WITHIN);
    c.on_timer(Instant::now() + JSON_WITHIN).expect("on time");
    let begin = d_events.try_recv().expect("begun");
    assert!(!begin.whole && begin.bytes.is_empty());
    to_client(&mut c, answer(&d["id"])).expect("answer");
    let last = d_events.recv().await.expect("answer");
    assert!(!last.whole && last.bytes.starts_with(b"data: "));
}

#[tokio::test]
async fn a_subscription_begins_at_once_for_sse_clients_only() {
    let (mut c, tx, _pool) = modern().await;
    let listen = r#"{"jsonrpc":"2.0","id":5,"method":"subscriptions/listen","params":{}}"#;
    let (_, mut sse) = call_with(&mut c, &tx, listen, true).await;
    let begin = sse.try_recv().expect("begun at once");
    assert!(!begin.whole && begin.bytes.is_empty());
    // A JSON-only client waits for the subscription's one answer: nothing comes before it.
    let (_, mut json) = call_with(&mut c, &tx, listen, false).await;
    assert!(json.try_recv().is_err());
}

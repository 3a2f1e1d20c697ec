use super::*;
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

/// A carrier whose tool has answered the probe as a 2026-07-28 server, and its inlet.
async fn modern() -> (ModernCarrier, mpsc::Sender<Call>, Arc<Pool>) {
    let (tx, rx) = mpsc::channel(8);
    let pool = Arc::new(Pool::default());
    let mut c = ModernCarrier::new(
        rx,
        pool.clone(),
        "u".into(),
        "t".into(),
        CancellationToken::new(),
        Duration::from_secs(60),
        Instant::now(),
    );
    let probe = message(c.io(true, false).await);
    assert_eq!(probe["method"], "server/discover");
    let answer = format!(
        r#"{{"jsonrpc":"2.0","id":{},"result":{{"supportedVersions":["2026-07-28"]}}}}"#,
        probe["id"]
    );
    to_client(&mut c, answer).expect("modern");
    (c, tx, pool)
}

/// Sends a call and takes it: its id at the tool and its events.
async fn call(c: &mut ModernCarrier, tx: &mpsc::Sender<Call>, sse: bool) -> (Value, Events) {
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","_meta":{"progressToken":1}}}"#;
    call_with(c, tx, body, sse).await
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
    let (_tx, rx) = mpsc::channel(8);
    let pool = Arc::new(Pool::default());
    let mut c = ModernCarrier::new(
        rx,
        pool.clone(),
        "u".into(),
        "demo".into(),
        CancellationToken::new(),
        Duration::from_secs(60),
        Instant::now(),
    );
    let probe = message(c.io(true, false).await);
    let refused = format!(
        r#"{{"jsonrpc":"2.0","id":{},"error":{{"code":-32601,"message":"method not found"}}}}"#,
        probe["id"]
    );
    assert!(to_client(&mut c, refused).is_err());
    assert!(pool.is_handshake("demo", Instant::now()));
}

#[tokio::test]
async fn a_tools_list_answer_teaches_the_annotations_and_passes_unchanged() {
    let (c, tx, _pool) = modern().await;
    let table = Params::default();
    let mut c = c.with_params(Arc::clone(&table));
    let list = r#"{"jsonrpc":"2.0","id":"l","method":"tools/list","params":{}}"#;
    let (at_tool, mut events) = call_with(&mut c, &tx, list, false).await;
    let answer = format!(
        r#"{{"jsonrpc":"2.0","id":{},"result":{{"tools":[{{"name":"sql","inputSchema":{{"type":"object","properties":{{"region":{{"type":"string","x-mcp-header":"Region"}}}}}}}},{{"name":"bad","inputSchema":{{"type":"object","properties":{{"f":{{"type":"number","x-mcp-header":"F"}}}}}}}}]}}}}"#,
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
    let sql = params::of(&table, "sql");
    assert_eq!(sql.len(), 1);
    assert_eq!(sql[0].display(), "Mcp-Param-Region");
    // A tools/call answer teaches nothing.
    let (at_tool, _events) = call(&mut c, &tx, false).await;
    let other = format!(
        r#"{{"jsonrpc":"2.0","id":{},"result":{{"tools":[{{"name":"x","inputSchema":{{"type":"object","properties":{{"a":{{"type":"string","x-mcp-header":"A"}}}}}}}}]}}}}"#,
        at_tool["id"]
    );
    to_client(&mut c, other).expect("delivered");
    assert!(params::of(&table, "x").is_empty());
}

use super::*;
use serde_json::Value;

fn req(id: &str, method: &str, extra: &str) -> Vec<u8> {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{{{extra}"_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}}}}"#
    )
    .into_bytes()
}

fn take(m: &mut Mux, body: &[u8]) -> (Key, Value) {
    let f = wire::fields(body).expect("fields");
    let (key, out) = m.request(&f.request_spans(), body).expect("taken");
    (key, serde_json::from_slice(&out).expect("json"))
}

fn json_of(b: &Bytes) -> Value {
    serde_json::from_slice(b).expect("json")
}

#[test]
fn two_clients_with_the_same_id_get_their_own_answers() {
    let mut m = Mux::new(8);
    let (a, to_tool_a) = take(&mut m, &req("1", "tools/call", r#""name":"x","#));
    let (b, to_tool_b) = take(&mut m, &req("1", "tools/call", r#""name":"y","#));
    assert_ne!(a, b);
    assert_eq!(to_tool_a["id"], a);
    assert_eq!(to_tool_b["id"], b);
    assert_eq!(to_tool_b["params"]["name"], "y");
    // Answers in the other order, each to its own stream, with the client's id back.
    let answer_b = format!(r#"{{"jsonrpc":"2.0","id":{b},"result":{{"v":"b"}}}}"#);
    match m.on_tool_message(answer_b.as_bytes()) {
        FromTool::Stream { key, bytes, last } => {
            assert_eq!((key, last), (b, true));
            let v = json_of(&bytes);
            assert_eq!(
                (v["id"].clone(), v["result"]["v"].clone()),
                (1.into(), "b".into())
            );
        }
        other => panic!("{other:?}"),
    }
    let answer_a = format!(r#"{{"jsonrpc":"2.0","id":{a},"result":{{"v":"a"}}}}"#);
    assert!(
        matches!(m.on_tool_message(answer_a.as_bytes()), FromTool::Stream { key, last: true, .. } if key == a)
    );
    assert_eq!(m.len(), 0);
    // A second answer to the same key has nobody waiting.
    assert!(matches!(
        m.on_tool_message(answer_a.as_bytes()),
        FromTool::Drop(_)
    ));
}

#[test]
fn string_ids_and_progress_tokens_are_mapped_both_ways() {
    let mut m = Mux::new(8);
    let body = req(r#""abc""#, "tools/call", r#""name":"slow","#)
        .into_iter()
        .collect::<Vec<u8>>();
    let body = String::from_utf8(body)
        .expect("utf8")
        .replace(r#""_meta":{"#, r#""_meta":{"progressToken":"tok","#);
    let (key, to_tool) = take(&mut m, body.as_bytes());
    assert_eq!(to_tool["params"]["_meta"]["progressToken"], key);
    let progress = format!(
        r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":{{"progressToken":{key},"progress":1}}}}"#
    );
    match m.on_tool_message(progress.as_bytes()) {
        FromTool::Stream {
            key: k,
            bytes,
            last,
        } => {
            assert_eq!((k, last), (key, false));
            assert_eq!(json_of(&bytes)["params"]["progressToken"], "tok");
        }
        other => panic!("{other:?}"),
    }
    let answer = format!(r#"{{"jsonrpc":"2.0","id":{key},"result":{{}}}}"#);
    match m.on_tool_message(answer.as_bytes()) {
        FromTool::Stream { bytes, .. } => assert_eq!(json_of(&bytes)["id"], "abc"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_closed_stream_cancels_at_the_tool_and_its_answer_is_dropped() {
    let mut m = Mux::new(8);
    let (key, _) = take(&mut m, &req("7", "tools/call", r#""name":"x","#));
    let cancel = m.closed(key).expect("a cancel for the tool");
    let v = json_of(&cancel);
    assert_eq!(v["method"], "notifications/cancelled");
    assert_eq!(v["params"]["requestId"], key);
    assert!(m.closed(key).is_none(), "cancelled once");
    let late = format!(r#"{{"jsonrpc":"2.0","id":{key},"result":{{}}}}"#);
    assert!(matches!(
        m.on_tool_message(late.as_bytes()),
        FromTool::Drop(_)
    ));
}

#[test]
fn a_subscription_gets_its_notifications_and_its_end() {
    let mut m = Mux::new(8);
    let (listen, _) = take(
        &mut m,
        &req(
            r#""L""#,
            "subscriptions/listen",
            r#""notifications":{"toolsListChanged":true},"#,
        ),
    );
    let (_call, _) = take(&mut m, &req("2", "tools/call", r#""name":"x","#));
    let ack = format!(
        r#"{{"jsonrpc":"2.0","method":"notifications/subscriptions/acknowledged","params":{{"_meta":{{"io.modelcontextprotocol/subscriptionId":{listen}}},"notifications":{{"toolsListChanged":true}}}}}}"#
    );
    match m.on_tool_message(ack.as_bytes()) {
        FromTool::Stream { key, bytes, last } => {
            assert_eq!((key, last), (listen, false));
            assert_eq!(
                json_of(&bytes)["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
                "L"
            );
        }
        other => panic!("{other:?}"),
    }
    // A subscription id that is a call, not a listen: nobody's subscription.
    let stray = r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed","params":{"_meta":{"io.modelcontextprotocol/subscriptionId":99}}}"#;
    assert!(matches!(
        m.on_tool_message(stray.as_bytes()),
        FromTool::Drop(_)
    ));
    // The graceful end: the answer, with the subscription id mapped back too.
    let end = format!(
        r#"{{"jsonrpc":"2.0","id":{listen},"result":{{"_meta":{{"io.modelcontextprotocol/subscriptionId":{listen}}}}}}}"#
    );
    match m.on_tool_message(end.as_bytes()) {
        FromTool::Stream {
            key,
            bytes,
            last: true,
        } => {
            assert_eq!(key, listen);
            let v = json_of(&bytes);
            assert_eq!(v["id"], "L");
            assert_eq!(
                v["result"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
                "L"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_tool_may_end_a_subscription_with_a_cancel() {
    let mut m = Mux::new(8);
    let (listen, _) = take(&mut m, &req("1", "subscriptions/listen", ""));
    let cancel = format!(
        r#"{{"jsonrpc":"2.0","method":"notifications/cancelled","params":{{"requestId":{listen}}}}}"#
    );
    assert_eq!(m.on_tool_message(cancel.as_bytes()), FromTool::End(listen));
    assert_eq!(m.len(), 0);
}

#[test]
fn tool_requests_are_answered_with_an_error_and_bounds_hold() {
    let mut m = Mux::new(1);
    let roots = br#"{"jsonrpc":"2.0","id":0,"method":"roots/list"}"#;
    match m.on_tool_message(roots) {
        FromTool::AnswerTool(b) => {
            let v = json_of(&b);
            assert_eq!(
                (v["id"].clone(), v["error"]["code"].clone()),
                (0.into(), jsonrpc::METHOD_NOT_FOUND.into())
            );
        }
        other => panic!("{other:?}"),
    }
    let _ = take(&mut m, &req("1", "tools/list", ""));
    let body = req("2", "tools/list", "");
    let f = wire::fields(&body).expect("fields");
    assert_eq!(
        m.request(&f.request_spans(), &body).err(),
        Some(Busy::Full(1))
    );
}

#[test]
fn a_log_message_goes_to_the_only_call_or_nowhere() {
    let mut m = Mux::new(8);
    let log = br#"{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"x"}}"#;
    assert!(matches!(m.on_tool_message(log), FromTool::Drop(_)));
    let (a, _) = take(&mut m, &req("1", "tools/call", r#""name":"x","#));
    assert!(
        matches!(m.on_tool_message(log), FromTool::Stream { key, last: false, .. } if key == a)
    );
    let _ = take(&mut m, &req("2", "tools/call", r#""name":"x","#));
    assert!(matches!(m.on_tool_message(log), FromTool::Drop(_)));
}

#[test]
fn the_relays_own_tools_list_is_answered_to_the_relay() {
    let mut m = Mux::new(8);
    let list = json_of(&m.list_tools(None));
    assert_eq!(list["method"], "tools/list");
    assert_eq!(list["params"]["_meta"][wire::META_VERSION], "2026-07-28");
    assert!(list["params"].get("cursor").is_none());
    let key = list["id"].as_u64().expect("id");
    let page =
        format!(r#"{{"jsonrpc":"2.0","id":{key},"result":{{"tools":[],"nextCursor":"c2"}}}}"#);
    assert_eq!(
        m.on_tool_message(page.as_bytes()),
        FromTool::Listed(Bytes::from(page.clone()))
    );
    assert_eq!(m.len(), 0, "no client request in flight");
    let next = json_of(&m.list_tools(Some("c2")));
    assert_eq!(next["params"]["cursor"], "c2");
    // An answer for the old page is no longer the relay's.
    assert!(matches!(
        m.on_tool_message(page.as_bytes()),
        FromTool::Drop(_)
    ));
}

#[test]
fn the_probe_learns_the_era() {
    let mut m = Mux::new(8);
    let probe = json_of(&m.probe());
    assert_eq!(probe["method"], "server/discover");
    let key = probe["id"].as_u64().expect("id");
    let modern = format!(
        r#"{{"jsonrpc":"2.0","id":{key},"result":{{"supportedVersions":["2026-07-28"]}}}}"#
    );
    assert_eq!(
        m.on_tool_message(modern.as_bytes()),
        FromTool::Probe(Some(Era::Modern))
    );
    let key = json_of(&m.probe())["id"].as_u64().expect("id");
    let legacy = format!(
        r#"{{"jsonrpc":"2.0","id":{key},"error":{{"code":-32601,"message":"method not found"}}}}"#
    );
    assert_eq!(
        m.on_tool_message(legacy.as_bytes()),
        FromTool::Probe(Some(Era::Handshake))
    );
    let key = json_of(&m.probe())["id"].as_u64().expect("id");
    let old_only = format!(
        r#"{{"jsonrpc":"2.0","id":{key},"result":{{"supportedVersions":["2025-11-25"]}}}}"#
    );
    assert_eq!(
        m.on_tool_message(old_only.as_bytes()),
        FromTool::Probe(Some(Era::Handshake))
    );
    // The tool exited before it answered: the relay's own error is no verdict.
    let key = json_of(&m.probe())["id"].as_u64().expect("id");
    let exited = format!(
        r#"{{"jsonrpc":"2.0","id":{key},"error":{{"code":-32010,"message":"tool exited"}}}}"#
    );
    assert_eq!(m.on_tool_message(exited.as_bytes()), FromTool::Probe(None));
}

#[test]
fn a_drain_ends_each_subscription_gracefully() {
    let mut m = Mux::new(8);
    let (listen, _) = take(&mut m, &req(r#""L""#, "subscriptions/listen", ""));
    let (call, _) = take(&mut m, &req("2", "tools/call", r#""name":"x","#));
    let ended = m.end_listens();
    assert_eq!(ended.len(), 1);
    let (key, done, cancel) = &ended[0];
    assert_eq!(*key, listen);
    let done = json_of(done);
    assert_eq!(done["id"], "L");
    assert_eq!(
        done["result"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        "L"
    );
    assert_eq!(json_of(cancel)["params"]["requestId"], listen);
    // The call goes on.
    assert_eq!(m.len(), 1);
    let answer = format!(r#"{{"jsonrpc":"2.0","id":{call},"result":{{}}}}"#);
    assert!(matches!(
        m.on_tool_message(answer.as_bytes()),
        FromTool::Stream { last: true, .. }
    ));
}

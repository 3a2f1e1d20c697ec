#![allow(clippy::unwrap_used)]

use super::*;
use shared::jsonrpc::Id;

fn carrier() -> (HttpDoor, HttpCarrier) {
    let (door, inlet) = door();
    let c = HttpCarrier::new(inlet, 1 << 20, Duration::from_secs(60), Instant::now());
    (door, c)
}

fn text(s: &str) -> Transmit {
    Transmit::Text(Bytes::from(s.to_owned()))
}

/// POSTs `body`; the handler's answer is pending until the carrier begins it.
async fn post(
    door: &HttpDoor,
    c: &mut HttpCarrier,
    body: &str,
    id: Option<u32>,
) -> oneshot::Receiver<PostReply> {
    let (reply, answer) = oneshot::channel();
    let post = Post {
        body: Bytes::from(body.to_owned()),
        request: id.map(|n| Id::Num(n.to_string().into())),
        cancels: None,
        reply,
    };
    door.posts.send(post).await.unwrap();
    match c.io(true, false).await {
        Io::Message(m) => assert_eq!(m, body.as_bytes()),
        _ => panic!("expected the body for the core"),
    }
    answer
}

/// The handler's answer, begun already.
fn begun(answer: &mut oneshot::Receiver<PostReply>) -> PostReply {
    answer.try_recv().expect("the answer has begun")
}

fn stream(answer: &mut oneshot::Receiver<PostReply>) -> Events {
    let PostReply::Stream(s) = begun(answer) else {
        panic!("expected a stream")
    };
    s
}

fn next(events: &mut Events) -> String {
    String::from_utf8(events.try_recv().unwrap().bytes.to_vec()).unwrap()
}

#[tokio::test]
async fn a_request_gets_related_messages_then_its_answer_and_the_stream_ends() {
    let (door, mut c) = carrier();
    let mut answer = post(&door, &mut c, r#"{"id":1,"method":"x"}"#, Some(1)).await;
    assert!(answer.try_recv().is_err(), "nothing begun yet");
    // Something for the request before its answer: it gets a stream.
    c.send(text(r#"{"method":"notifications/progress"}"#))
        .unwrap();
    let mut s = stream(&mut answer);
    c.send(text(r#"{"id":1,"result":{}}"#)).unwrap();
    assert_eq!(
        next(&mut s),
        "id: 1\nretry: 1000\ndata: \n\n",
        "the priming event"
    );
    assert_eq!(
        next(&mut s),
        "id: 2\ndata: {\"method\":\"notifications/progress\"}\n\n"
    );
    assert_eq!(next(&mut s), "id: 3\ndata: {\"id\":1,\"result\":{}}\n\n");
    assert!(matches!(
        s.try_recv(),
        Err(mpsc::error::TryRecvError::Disconnected)
    ));
}

#[tokio::test]
async fn notifications_are_accepted_and_unrouted_messages_wait_for_a_get() {
    let (door, mut c) = carrier();
    let mut answer = post(
        &door,
        &mut c,
        r#"{"method":"notifications/initialized"}"#,
        None,
    )
    .await;
    assert!(matches!(begun(&mut answer), PostReply::Accepted));
    c.send(text(r#"{"id":0,"method":"roots/list"}"#)).unwrap();
    assert_eq!(c.waiting.len(), 1);
    let (reply, stream) = oneshot::channel();
    door.ctl
        .send(Ctl::Get {
            last_event_id: None,
            reply,
        })
        .await
        .unwrap();
    // The GET is taken while the carrier waits for anything else.
    assert!(matches!(c.io(false, true).await, Io::Ready));
    let mut s = stream.await.unwrap();
    assert_eq!(
        next(&mut s),
        "id: 1\nretry: 1000\ndata: \n\n",
        "the priming event"
    );
    assert_eq!(
        next(&mut s),
        "id: 2\ndata: {\"id\":0,\"method\":\"roots/list\"}\n\n"
    );
    assert!(c.waiting.is_empty());
}

#[tokio::test]
async fn delete_ends_the_carrier_and_line_breaks_split_data_lines() {
    let (door, mut c) = carrier();
    assert_eq!(
        &sse_event(Some(7), b"{\"a\":\r\n1}")[..],
        b"id: 7\ndata: {\"a\":\ndata: \ndata: 1}\n\n"
    );
    let (reply, done) = oneshot::channel();
    door.ctl.send(Ctl::Delete { reply }).await.unwrap();
    assert!(matches!(c.io(true, false).await, Io::Closed(_)));
    done.await.unwrap();
}

#[tokio::test]
async fn a_full_budget_holds_messages_in_order_until_the_stream_is_read() {
    let (door, inlet) = door();
    // A 4 MiB budget: five 1 MiB messages do not all fit.
    let mut c = HttpCarrier::new(inlet, 1 << 20, Duration::from_secs(60), Instant::now());
    let mut answer = post(&door, &mut c, r#"{"id":1,"method":"x"}"#, Some(1)).await;
    let big = format!(r#"{{"method":"n","params":"{}"}}"#, "x".repeat(1 << 20));
    for _ in 0..5 {
        c.send(text(&big)).unwrap();
    }
    let mut s = stream(&mut answer);
    assert!(!c.waiting.is_empty(), "past the budget, messages wait");
    assert!(c.blocked.is_some());
    while s.try_recv().is_ok() {}
    c.pump();
    assert!(c.waiting.is_empty());
}

async fn get(door: &HttpDoor, c: &mut HttpCarrier, last_event_id: Option<u64>) -> Events {
    let (reply, stream) = oneshot::channel();
    door.ctl
        .send(Ctl::Get {
            last_event_id,
            reply,
        })
        .await
        .unwrap();
    assert!(matches!(c.io(false, true).await, Io::Ready));
    stream.await.unwrap()
}

#[tokio::test]
async fn a_broken_post_stream_is_resumed_with_last_event_id_and_nothing_is_lost() {
    let (door, mut c) = carrier();
    let mut answer = post(&door, &mut c, r#"{"id":1,"method":"x"}"#, Some(1)).await;
    c.send(text(r#"{"method":"p1"}"#)).unwrap();
    let mut s = stream(&mut answer);
    assert_eq!(next(&mut s), "id: 1\nretry: 1000\ndata: \n\n");
    // The connection breaks with `p1` unread; the next message finds the stream gone.
    drop(s);
    c.send(text(r#"{"method":"p2"}"#)).unwrap();
    c.send(text(r#"{"id":1,"result":{}}"#)).unwrap();
    assert_eq!(c.waiting.len(), 2, "p2 and the answer wait for the resume");
    let mut r = get(&door, &mut c, Some(1)).await;
    assert_eq!(
        next(&mut r),
        "id: 2\ndata: {\"method\":\"p1\"}\n\n",
        "replayed"
    );
    assert_eq!(next(&mut r), "id: 3\ndata: {\"method\":\"p2\"}\n\n");
    assert_eq!(next(&mut r), "id: 4\ndata: {\"id\":1,\"result\":{}}\n\n");
    assert!(matches!(
        r.try_recv(),
        Err(mpsc::error::TryRecvError::Disconnected)
    ));
    // A resume after the answer replays it, and stays open.
    let mut again = get(&door, &mut c, Some(3)).await;
    assert_eq!(
        next(&mut again),
        "id: 4\ndata: {\"id\":1,\"result\":{}}\n\n"
    );
    assert!(matches!(
        again.try_recv(),
        Err(mpsc::error::TryRecvError::Empty)
    ));
}

#[tokio::test]
async fn an_answer_that_comes_first_and_soon_is_the_whole_json_body() {
    let (door, mut c) = carrier();
    let mut answer = post(&door, &mut c, r#"{"id":1,"method":"x"}"#, Some(1)).await;
    c.send(text(r#"{"id":1,"result":{}}"#)).unwrap();
    let PostReply::Json(body) = begun(&mut answer) else {
        panic!("expected a JSON answer")
    };
    assert_eq!(&body.bytes[..], br#"{"id":1,"result":{}}"#);
    assert!(
        c.budget.available_permits() < c.budget_bytes,
        "it holds its share of the budget until the connection takes it"
    );
    drop(body);
    assert_eq!(c.budget.available_permits(), c.budget_bytes);
    assert!(c.router.is_idle() && c.heads.is_empty() && c.waiting.is_empty());
    // No event id was spent on it: a GET's priming event is the session's first.
    let mut g = get(&door, &mut c, None).await;
    assert_eq!(next(&mut g), "id: 1\nretry: 1000\ndata: \n\n");
}

#[tokio::test]
async fn an_answer_not_begun_in_time_becomes_a_stream_with_its_priming_event() {
    let t0 = Instant::now();
    let (door, mut c) = carrier();
    let mut answer = post(&door, &mut c, r#"{"id":1,"method":"x"}"#, Some(1)).await;
    assert!(
        c.deadline() <= Instant::now() + JSON_WITHIN,
        "the timer is set"
    );
    c.on_timer(t0 + JSON_WITHIN / 2).unwrap();
    assert!(answer.try_recv().is_err(), "not yet");
    c.on_timer(Instant::now() + JSON_WITHIN).unwrap();
    let mut s = stream(&mut answer);
    assert_eq!(
        next(&mut s),
        "id: 1\nretry: 1000\ndata: \n\n",
        "the priming event"
    );
    c.send(text(r#"{"id":1,"result":{}}"#)).unwrap();
    assert_eq!(next(&mut s), "id: 2\ndata: {\"id\":1,\"result\":{}}\n\n");
    assert!(matches!(
        s.try_recv(),
        Err(mpsc::error::TryRecvError::Disconnected)
    ));
}

#[tokio::test]
async fn an_answer_whose_client_left_before_it_began_waits_for_a_get() {
    let (door, mut c) = carrier();
    let answer = post(&door, &mut c, r#"{"id":1,"method":"x"}"#, Some(1)).await;
    drop(answer);
    c.send(text(r#"{"id":1,"result":{}}"#)).unwrap();
    assert_eq!(c.waiting.len(), 1, "kept, not lost");
    let mut g = get(&door, &mut c, None).await;
    assert_eq!(next(&mut g), "id: 1\nretry: 1000\ndata: \n\n");
    assert_eq!(next(&mut g), "id: 2\ndata: {\"id\":1,\"result\":{}}\n\n");
}

#[tokio::test]
async fn json_answers_nobody_takes_are_held_to_the_budget_too() {
    let (door, inlet) = door();
    // A 4 MiB budget: four answers of just under 1 MiB fit, the fifth does not.
    let mut c = HttpCarrier::new(inlet, 1 << 20, Duration::from_secs(60), Instant::now());
    let mut answers = Vec::new();
    for id in 1..=5 {
        answers.push(
            post(
                &door,
                &mut c,
                &format!(r#"{{"id":{id},"method":"x"}}"#),
                Some(id),
            )
            .await,
        );
    }
    let big = "x".repeat((1 << 20) - 64);
    for id in 1..=5 {
        c.send(text(&format!(r#"{{"id":{id},"result":"{big}"}}"#)))
            .unwrap();
    }
    let mut taken: Vec<PostReply> = answers[..4].iter_mut().map(begun).collect();
    assert!(answers[4].try_recv().is_err(), "the fifth waits for budget");
    assert_eq!(c.waiting.len(), 1);
    // A connection takes one answer: the fifth is handed over.
    taken.pop();
    c.pump();
    assert!(matches!(begun(&mut answers[4]), PostReply::Json(_)));
    assert!(c.waiting.is_empty());
}

#[tokio::test]
async fn answers_not_begun_when_the_session_ends_end_as_streams() {
    let (door, mut c) = carrier();
    let mut answer = post(&door, &mut c, r#"{"id":1,"method":"x"}"#, Some(1)).await;
    c.end_heads();
    let mut s = stream(&mut answer);
    assert_eq!(next(&mut s), "id: 1\nretry: 1000\ndata: \n\n");
    drop(c);
    assert!(matches!(
        s.try_recv(),
        Err(mpsc::error::TryRecvError::Disconnected)
    ));
}

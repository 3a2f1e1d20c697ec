//! Sign-in while connected: refused requests held, sent again or answered, never looped.

use std::time::Duration;

use super::*;

const WAIT: Duration = Duration::from_secs(120);

fn with_auth(now: Instant) -> HttpCore {
    let mut c = handshaken(now);
    c.cfg.auth_wait = Some(WAIT);
    c
}

fn refused(status: u16, www: &'static str) -> HttpIo {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::WWW_AUTHENTICATE,
        HeaderValue::from_static(www),
    );
    HttpIo::Head {
        status: StatusCode::from_u16(status).expect("status"),
        headers,
    }
}

fn call(c: &mut HttpCore, id: &str) {
    c.on_stdin(line(&format!(
        r#"{{"jsonrpc":"2.0","id":"{id}","method":"tools/list"}}"#
    )));
}

fn id_of(r: &Outgoing) -> Value {
    serde_json::from_slice::<Value>(&r.body).expect("json")["id"].clone()
}

#[test]
fn a_401_holds_requests_until_sign_in_then_sends_them_again_in_order() {
    let now = Instant::now();
    let mut c = with_auth(now);
    call(&mut c, "a");
    let a = c.poll_request(now).expect("post");
    c.on_http(a.ex, refused(401, "Bearer scope=\"mcp\""), now);
    match c.poll_event() {
        Some(UpstreamEvent::AuthRequired(ch)) => assert_eq!(ch.status, 401),
        other => panic!("{other:?}"),
    }
    assert!(c.auth_waiting());
    call(&mut c, "b");
    assert!(
        c.poll_request(now).is_none(),
        "nothing sent while signing in"
    );
    assert!(output(&mut c, now).is_empty(), "nothing answered yet");
    assert!(c.wants_stdin(), "stdin keeps being read");
    c.on_auth_done(Ok(()), now);
    assert!(!c.auth_waiting());
    let a2 = c.poll_request(now).expect("held one again");
    assert_eq!(id_of(&a2), "a");
    let b = c.poll_request(now).expect("queued one");
    assert_eq!(id_of(&b), "b");
    // A second refusal right after the fresh token is answered, not waited on.
    c.on_http(a2.ex, refused(401, "Bearer error=\"invalid_token\""), now);
    assert!(c.poll_event().is_none() && !c.auth_waiting());
    let out = output(&mut c, now);
    assert_eq!(out[0]["id"], "a");
    assert_eq!(out[0]["error"]["code"], -32011);
    assert!(out[0]["error"]["message"]
        .as_str()
        .expect("text")
        .contains("right after sign-in"));
}

#[test]
fn a_failed_or_late_sign_in_answers_the_held_requests_with_32011() {
    let now = Instant::now();
    let mut c = with_auth(now);
    call(&mut c, "a");
    let a = c.poll_request(now).expect("post");
    c.on_http(
        a.ex,
        refused(403, "Bearer error=\"insufficient_scope\", scope=\"x\""),
        now,
    );
    assert!(c.auth_waiting());
    match c.poll_event() {
        Some(UpstreamEvent::AuthRequired(ch)) => assert_eq!(ch.status, 403),
        other => panic!("{other:?}"),
    }
    c.on_auth_done(Err("the token endpoint refused: access_denied".into()), now);
    let out = output(&mut c, now);
    assert_eq!(out[0]["error"]["code"], -32011);
    assert!(out[0]["error"]["message"]
        .as_str()
        .expect("text")
        .contains("access_denied"));

    call(&mut c, "b");
    let b = c.poll_request(now).expect("post");
    c.on_http(b.ex, refused(401, "Bearer"), now);
    assert!(c.poll_event().is_some() && c.poll_event().is_none());
    let late = c.poll_timeout().expect("bounded");
    assert!(late <= now + WAIT);
    c.on_timeout(late);
    assert!(!c.auth_waiting(), "the driver drops its sign-in");
    let out = output(&mut c, late);
    assert_eq!(out[0]["id"], "b");
    let text = out[0]["error"]["message"].as_str().expect("text");
    assert!(text.contains("did not complete") && text.contains("bridge-client login"));
}

#[test]
fn a_403_for_more_scope_after_a_sign_in_is_held_once_more_for_a_step_up() {
    let now = Instant::now();
    let mut c = with_auth(now);
    call(&mut c, "a");
    let a = c.poll_request(now).expect("post");
    c.on_http(a.ex, refused(401, "Bearer scope=\"mcp:basic\""), now);
    assert!(c.poll_event().is_some());
    c.on_auth_done(Ok(()), now);
    let a2 = c.poll_request(now).expect("sent again");
    let step_up = "Bearer error=\"insufficient_scope\", scope=\"mcp:basic mcp:write\"";
    c.on_http(a2.ex, refused(403, step_up), now);
    match c.poll_event() {
        Some(UpstreamEvent::AuthRequired(ch)) => assert_eq!(ch.status, 403),
        other => panic!("{other:?}"),
    }
    assert!(output(&mut c, now).is_empty(), "held, not answered");
    c.on_auth_done(Ok(()), now);
    let a3 = c.poll_request(now).expect("sent a third time");
    assert_eq!(id_of(&a3), "a");
    // Refused again: answered, no third sign-in.
    c.on_http(a3.ex, refused(403, step_up), now);
    assert!(c.poll_event().is_none() && !c.auth_waiting());
    let out = output(&mut c, now);
    assert_eq!(out[0]["id"], "a");
    assert_eq!(out[0]["error"]["code"], -32011);
}

//! Unit tests of the relay session core, with explicit time: one module a theme, and here the
//! helpers they share (a core with a v1 client endpoint, moving frames between them).

mod backpressure;
mod bounds;
mod lifecycle;

use super::*;
use shared::endpoint::{Endpoint, Limits as EpLimits};
use shared::framing::Frame;

fn cfg(framing: Framing) -> CoreConfig {
    CoreConfig {
        id: "0123456789abcdef".into(),
        tool: "demo".into(),
        framing,
        max_message: 1 << 20,
        resume_window: Duration::from_secs(60),
        resume_buffer_messages: 1024,
        resume_buffer_bytes: 1 << 20,
        idle_timeout: None,
        stall_timeout: Duration::from_secs(10),
        shed_after: Duration::from_secs(1),
        access: crate::policy::Access::default(),
    }
}

/// A v1 client endpoint connected to a fresh core; the welcome consumed.
fn v1(now: Instant) -> (Core, Endpoint) {
    let mut core = Core::new(cfg(Framing::V1), now);
    let mut client = Endpoint::new(
        Framing::V1,
        EpLimits {
            send_messages: 100_000,
            send_bytes: 1 << 30,
            recv_messages: 100_000,
            recv_bytes: 1 << 30,
        },
    );
    client.connect(0).expect("connect");
    match core.poll_client_transmit(now) {
        Some(Transmit::Binary(f)) => {
            let c = client.on_message(f).expect("welcome");
            assert!(matches!(c, Some(Control::Welcome { resumed: false, .. })));
        }
        other => panic!("expected the welcome, got {other:?}"),
    }
    (core, client)
}

fn to_core(client: &mut Endpoint, core: &mut Core, now: Instant) {
    while let Some(Transmit::Binary(f)) = client.poll_transmit(now) {
        core.on_client_message(f, now);
    }
}

fn to_client(core: &mut Core, client: &mut Endpoint, now: Instant) -> Vec<serde_json::Value> {
    while let Some(Transmit::Binary(f)) = core.poll_client_transmit(now) {
        let _ = client.on_message(f);
    }
    std::iter::from_fn(|| client.poll_receive(now))
        .map(|b| serde_json::from_slice(&b).expect("json"))
        .collect()
}

fn request(id: u64) -> Bytes {
    Bytes::from(format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo"}}}}"#
    ))
}

fn drain_tool(core: &mut Core, now: Instant) -> Vec<Bytes> {
    let out: Vec<Bytes> = std::iter::from_fn(|| core.poll_tool_transmit()).collect();
    let n: usize = out.iter().map(|b| b.len() + 1).sum();
    if n > 0 {
        core.on_tool_wrote(n, now);
    }
    out
}

fn big_request(id: u64, len: usize) -> Bytes {
    Bytes::from(format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"put","arguments":{{"blob":"{}"}}}}}}"#,
        "a".repeat(len)
    ))
}

fn errors_to(core: &mut Core, now: Instant) -> Vec<serde_json::Value> {
    std::iter::from_fn(|| core.poll_client_transmit(now))
        .map(|t| match t {
            Transmit::Text(b) => serde_json::from_slice(&b).expect("json"),
            other => panic!("plain transmits text, got {other:?}"),
        })
        .collect()
}

/// [`v1`], with calls `ids` sent by the client and taken by the core (not yet by the tool).
fn v1_sending(now: Instant, ids: impl IntoIterator<Item = u64>) -> (Core, Endpoint) {
    let (mut core, mut client) = v1(now);
    for id in ids {
        client.send(request(id));
    }
    to_core(&mut client, &mut core, now);
    (core, client)
}

/// A fresh core for a plain client, its queue for the client (`resume_buffer_bytes`) set.
fn plain(resume_buffer_bytes: usize, now: Instant) -> Core {
    let mut c = cfg(Framing::Plain);
    c.resume_buffer_bytes = resume_buffer_bytes;
    Core::new(c, now)
}

/// The tool answers call `id` with an empty result.
fn tool_result(core: &mut Core, id: u64, now: Instant) {
    let line = format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{}}}}"#);
    core.on_tool_frame(Frame::Line(Bytes::from(line)), now);
}

//! The driver over in-memory stdio pipes against a fake relay on a loopback socket.

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::Message;

use shared::carrier::Heartbeat;
use shared::tunnel::{self, Control};

use crate::{Backoff, Options};

/// The upgrade's answer: subprotocol `mcp-bridge.v1` (tungstenite's callback type fixes the
/// error type).
#[allow(clippy::result_large_err)]
fn select_v1(_: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
    resp.headers_mut().insert(
        http::header::SEC_WEBSOCKET_PROTOCOL,
        http::HeaderValue::from_static(tunnel::SUBPROTOCOL_V1),
    );
    Ok(resp)
}

/// A relay that welcomes the first connection, drops it at once, and then accepts TCP
/// connections without ever answering them (a resume that hangs). `hanging` fires once the
/// client is in that attempt.
async fn relay_that_hangs_after_a_drop(listener: TcpListener, hanging: oneshot::Sender<()>) {
    let Ok((tcp, _)) = listener.accept().await else {
        return;
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, select_v1).await else {
        return;
    };
    let welcome = tunnel::encode_control(&Control::Welcome {
        version: tunnel::PROTOCOL_VERSION,
        session: "0123456789abcdef0123456789abcdef".into(),
        resumed: false,
        last_seq: 0,
        resume_window_ms: 60_000,
    });
    let _ = ws.send(Message::Binary(welcome)).await;
    drop(ws);
    let mut held = Vec::new();
    let mut hanging = Some(hanging);
    while let Ok((tcp, _)) = listener.accept().await {
        held.push(tcp);
        if let Some(h) = hanging.take() {
            let _ = h.send(());
        }
    }
}

#[tokio::test]
async fn stdin_is_read_and_answered_while_a_reconnection_hangs() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let (hanging_tx, hanging_rx) = oneshot::channel();
    let relay = tokio::spawn(relay_that_hangs_after_a_drop(listener, hanging_tx));

    let (mut ide_in, client_in) = tokio::io::duplex(64 * 1024);
    let (client_out, ide_out) = tokio::io::duplex(64 * 1024);
    let opts = Options {
        upstream: crate::relay_url::Upstream::Tunnel,
        url: format!("ws://{addr}/mcp/demo"),
        headers: Vec::new(),
        token: None,
        oauth: None,
        max_message_size: 1 << 20,
        heartbeat: Heartbeat::default(),
        backoff: Backoff::default(),
        tls: None,
        proxy: None,
        affinity: None,
    };
    let client = tokio::spawn(crate::run(opts, client_in, client_out));
    let mut lines = BufReader::new(ide_out).lines();

    tokio::time::timeout(Duration::from_secs(10), hanging_rx)
        .await
        .expect("the client reconnects")
        .expect("signal");
    // The attempt hangs (for up to 10 s); stdin is answered meanwhile.
    ide_in.write_all(b"{not json\n").await.expect("write");
    let line = tokio::time::timeout(Duration::from_secs(2), lines.next_line())
        .await
        .expect("answered while reconnecting")
        .expect("read")
        .expect("a line");
    let v: Value = serde_json::from_str(&line).expect("json");
    assert_eq!(v["error"]["code"], -32700, "{v}");

    // A request waits for the resume; at stdin's end it is answered before the exit.
    ide_in
        .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n")
        .await
        .expect("write");
    drop(ide_in);
    let result = tokio::time::timeout(Duration::from_secs(5), client)
        .await
        .expect("exits within the EOF wait")
        .expect("no panic");
    assert!(result.is_ok(), "{result:?}");
    let line = lines.next_line().await.expect("read").expect("a line");
    let v: Value = serde_json::from_str(&line).expect("json");
    assert_eq!(v["id"], 1, "{v}");
    assert_eq!(v["error"]["code"], -32011, "{v}");
    assert_eq!(lines.next_line().await.expect("read"), None, "nothing else");
    relay.abort();
}

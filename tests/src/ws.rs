//! A raw WebSocket client for tests that must misbehave on the wire: never read, flood, send
//! frames bridge-client never would. The v1 framing is written out here from docs/protocol.md
//! (not taken from the bridge's own code), so these tests check the wire format as documented.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A client WebSocket over plain TCP.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What an upgrade request got.
pub enum Upgrade {
    /// `101`: the socket.
    Open(Box<Ws>),
    /// A refusal: status and body.
    Refused(u16, String),
}

impl Upgrade {
    /// The socket, or an error naming the refusal.
    pub fn open(self) -> Result<Ws> {
        match self {
            Upgrade::Open(ws) => Ok(*ws),
            Upgrade::Refused(status, body) => bail!("upgrade refused: HTTP {status}: {body}"),
        }
    }
}

/// The receive buffer of every raw client socket: small, so that what a client that never
/// reads leaves unread stays in the relay (where the tests measure it) rather than in this
/// socket's kernel buffer.
const RECV_BUFFER: u32 = 16 * 1024;

/// Opens a WebSocket to `url` offering `protocol` (none when `None`), with extra headers. The
/// client's own limits are off: what the relay sends is never refused here.
pub async fn connect(
    url: &str,
    protocol: Option<&str>,
    headers: &[(&str, &str)],
) -> Result<Upgrade> {
    let mut req = url.into_client_request()?;
    let h = req.headers_mut();
    if let Some(p) = protocol {
        h.insert("sec-websocket-protocol", HeaderValue::from_str(p)?);
    }
    for (name, value) in headers {
        h.insert(
            HeaderName::from_bytes(name.as_bytes())?,
            HeaderValue::from_str(value)?,
        );
    }
    let config = WebSocketConfig::default()
        .max_message_size(None)
        .max_frame_size(None);
    let host = req.uri().host().context("host")?.to_owned();
    let port = req.uri().port_u16().unwrap_or(80);
    let addr = tokio::net::lookup_host((host.as_str(), port))
        .await?
        .next()
        .context("address")?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_recv_buffer_size(RECV_BUFFER)?;
    socket.set_nodelay(true)?;
    let stream = socket.connect(addr).await?;
    match tokio_tungstenite::client_async_with_config(
        req,
        MaybeTlsStream::Plain(stream),
        Some(config),
    )
    .await
    {
        Ok((ws, _)) => Ok(Upgrade::Open(Box::new(ws))),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let status = resp.status().as_u16();
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Ok(Upgrade::Refused(status, body))
        }
        Err(e) => Err(e.into()),
    }
}

/// A plain `mcp` session (one JSON-RPC message per text frame).
pub async fn connect_plain(url: &str) -> Result<Ws> {
    connect(url, Some("mcp"), &[]).await?.open()
}

/// A new `mcp-bridge.v1` session: the socket and the `welcome` control message.
pub async fn connect_v1(url: &str) -> Result<(Ws, Value)> {
    let mut ws = connect(url, Some("mcp-bridge.v1"), &[]).await?.open()?;
    let welcome = match next_frame(&mut ws, Duration::from_secs(10)).await? {
        Some(V1Frame::Control(c)) if c["type"] == "welcome" => c,
        other => bail!("expected welcome, got {other:?}"),
    };
    Ok((ws, welcome))
}

/// A v1 DATA frame: type 1, seq, ack (big-endian u64), payload.
pub fn data(seq: u64, ack: u64, payload: &[u8]) -> Message {
    let mut b = Vec::with_capacity(17 + payload.len());
    b.push(1);
    b.extend_from_slice(&seq.to_be_bytes());
    b.extend_from_slice(&ack.to_be_bytes());
    b.extend_from_slice(payload);
    Message::Binary(Bytes::from(b))
}

/// A v1 ACK frame: type 2, ack.
pub fn ack(ack: u64) -> Message {
    let mut b = vec![2];
    b.extend_from_slice(&ack.to_be_bytes());
    Message::Binary(Bytes::from(b))
}

/// A v1 CONTROL frame: type 3, then the JSON text as given (not checked).
pub fn control(json: &str) -> Message {
    let mut b = vec![3];
    b.extend_from_slice(json.as_bytes());
    Message::Binary(Bytes::from(b))
}

/// A decoded v1 frame from the relay.
#[derive(Debug)]
pub enum V1Frame {
    /// seq, ack, the JSON-RPC message.
    Data(u64, u64, Value),
    /// ack.
    Ack(u64),
    /// The control message.
    Control(Value),
    /// A close frame (code, reason).
    Close(Option<(u16, String)>),
}

/// The next v1 frame (text frames, pings and pongs are skipped); `None` when the connection
/// ended without a close frame.
pub async fn next_frame(ws: &mut Ws, limit: Duration) -> Result<Option<V1Frame>> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let msg = match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => bail!("no frame from the relay within {limit:?}"),
            Ok(None) | Ok(Some(Err(_))) => return Ok(None),
            Ok(Some(Ok(msg))) => msg,
        };
        let b = match msg {
            Message::Binary(b) => b,
            Message::Close(frame) => {
                return Ok(Some(V1Frame::Close(
                    frame.map(|f| (u16::from(f.code), f.reason.to_string())),
                )))
            }
            _ => continue,
        };
        let u64_at = |at: usize| -> Result<u64> {
            let s = b.get(at..at + 8).context("truncated frame")?;
            Ok(u64::from_be_bytes(s.try_into()?))
        };
        return Ok(Some(match b.first() {
            Some(1) => V1Frame::Data(u64_at(1)?, u64_at(9)?, serde_json::from_slice(&b[17..])?),
            Some(2) => V1Frame::Ack(u64_at(1)?),
            Some(3) => V1Frame::Control(serde_json::from_slice(&b[1..])?),
            other => bail!("unknown frame type {other:?}"),
        }));
    }
}

/// Reads v1 frames until a DATA frame whose message has `id`; returns (seq, message).
pub async fn recv_answer(ws: &mut Ws, id: &Value, limit: Duration) -> Result<(u64, Value)> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next_frame(ws, left).await? {
            Some(V1Frame::Data(seq, _, msg)) if msg.get("id") == Some(id) => return Ok((seq, msg)),
            Some(V1Frame::Data(..) | V1Frame::Ack(_) | V1Frame::Control(_)) => {}
            other => bail!("connection ended waiting for the answer to {id}: {other:?}"),
        }
    }
}

/// A single-threaded runtime for a test's async part.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

//! bridge-client: the IDE-side shim. It is an MCP stdio server to the IDE and forwards every
//! JSON-RPC message, unchanged, over one WebSocket to an mcp-bridge relay.
//!
//! [`run`] is generic over its input and output so tests can drive it with in-memory pipes; the
//! binary passes the process's stdin and stdout. Nothing here ever writes anything but JSON-RPC
//! messages to the output: logs go through `tracing` (to stderr).

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderName, HeaderValue};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tracing::{debug, info, warn};

use shared::framing::{self, Frame, LineReader};
use shared::jsonrpc::{self, ClassifyError, Id, Kind};

mod connect;

pub use connect::parse_header;

/// Depth of the queues between stdin, the WebSocket and stdout.
const QUEUE_DEPTH: usize = 64;

/// After stdin ends, how long to wait for the relay to confirm the close.
const CLOSE_WAIT: Duration = Duration::from_millis(500);

/// After stdin ends, how long to wait for answers to requests still in flight. Together with
/// [`CLOSE_WAIT`] this stays under the 2 s after which SDK clients send SIGTERM.
const EOF_ANSWER_WAIT: Duration = Duration::from_millis(1200);

/// Resolves when every request in flight has been answered, or after `limit`.
async fn answered(pending: &Pending, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while !lock(pending).is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A secret that never shows in `Debug` output or logs.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: String) -> Secret {
        Secret(s)
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// What the client needs to run a session.
#[derive(Debug, Clone)]
pub struct Options {
    /// `ws://HOST:PORT/mcp/<tool>`.
    pub url: String,
    /// Extra headers for the upgrade request.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Bearer token for the relay, if any.
    pub token: Option<Secret>,
    /// Largest message accepted from the IDE or the relay, in bytes.
    pub max_message_size: usize,
}

/// Why a session could not start or did not end cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The URL cannot be used.
    #[error("invalid relay URL {url}: {reason}; expected ws://HOST:PORT/mcp/TOOL")]
    BadUrl {
        /// The URL given.
        url: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The token contains characters that cannot go into an HTTP header.
    #[error("the relay token contains characters that cannot be sent in a header; check it")]
    BadToken,
    /// The relay could not be reached at all.
    #[error("cannot reach the relay at {url}: {reason}; is it running, and is the address right?")]
    Unreachable {
        /// The URL.
        url: String,
        /// What the network said.
        reason: String,
    },
    /// The relay answered the upgrade with an HTTP error.
    #[error("the relay at {url} refused the connection: HTTP {status}: {reason}")]
    Refused {
        /// The URL.
        url: String,
        /// HTTP status code.
        status: u16,
        /// The relay's one-line reason.
        reason: String,
    },
    /// The WebSocket handshake failed for another reason.
    #[error("WebSocket handshake with {url} failed: {reason}")]
    Handshake {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The session ended from the relay's side, or the connection broke.
    #[error("{0}")]
    SessionEnded(String),
    /// Writing to the IDE failed (it has gone away).
    #[error("writing to stdout failed: {0}")]
    Stdout(std::io::Error),
}

/// Requests from the IDE that the relay has not answered yet.
type Pending = Arc<Mutex<HashSet<Id>>>;

fn lock(p: &Pending) -> std::sync::MutexGuard<'_, HashSet<Id>> {
    p.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How the IDE→relay direction ended.
enum Uplink {
    /// stdin reached EOF: the IDE is done.
    Eof,
    /// The WebSocket writer is gone (the connection broke).
    WsGone,
}

/// Runs one session: reads JSON-RPC lines from `input`, forwards them to the relay, and writes
/// the relay's messages to `output`. Returns `Ok` when `input` ends (the IDE closed stdin).
pub async fn run<R, W>(opts: Options, input: R, output: W) -> Result<(), ClientError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (out_tx, out_rx) = mpsc::channel::<Bytes>(QUEUE_DEPTH);
    let writer = tokio::spawn(write_output(output, out_rx));
    let (in_tx, mut in_rx) = mpsc::channel::<Frame>(QUEUE_DEPTH);
    // Read stdin while the connection is being made, so nothing waits on the other.
    let reader = tokio::spawn(read_input(input, opts.max_message_size, in_tx));

    let result = match connect::connect(&opts).await {
        Ok(ws) => {
            info!(url = %opts.url, "connected to relay");
            session(ws, &opts, &mut in_rx, &out_tx).await
        }
        Err(e) => {
            // Answer what the IDE already asked, so nothing is left hanging.
            let message = e.to_string();
            while let Ok(frame) = in_rx.try_recv() {
                if let Frame::Line(line) = frame {
                    if let Ok(Kind::Request { id, .. }) = jsonrpc::classify(&line) {
                        let body = jsonrpc::error_response(
                            Some(&id),
                            jsonrpc::RELAY_UNAVAILABLE,
                            &message,
                            None,
                        );
                        let _ = out_tx.send(Bytes::from(body)).await;
                    }
                }
            }
            Err(e)
        }
    };
    reader.abort();
    drop(in_rx);
    drop(out_tx);
    match writer.await {
        Ok(Err(e)) if result.is_ok() => Err(ClientError::Stdout(e)),
        _ => result,
    }
}

async fn session(
    ws: connect::Ws,
    opts: &Options,
    in_rx: &mut mpsc::Receiver<Frame>,
    out_tx: &mpsc::Sender<Bytes>,
) -> Result<(), ClientError> {
    let (sink, mut stream) = ws.split();
    let (ws_tx, ws_rx) = mpsc::channel::<Message>(QUEUE_DEPTH);
    let ws_writer = tokio::spawn(write_ws(sink, ws_rx));
    let pending: Pending = Arc::default();

    let downlink = {
        let pending = pending.clone();
        let out_tx = out_tx.clone();
        async move {
            while let Some(msg) = stream.next().await {
                let bytes: Bytes = match msg {
                    Ok(Message::Text(t)) => t.into(),
                    Ok(Message::Binary(b)) => b,
                    Ok(Message::Close(frame)) => {
                        return match frame {
                            Some(f) if !f.reason.is_empty() => {
                                format!("the relay ended the session: {}", f.reason)
                            }
                            Some(f) => {
                                format!("the relay ended the session (code {})", u16::from(f.code))
                            }
                            None => "the relay ended the session".to_owned(),
                        };
                    }
                    Ok(_) => continue,
                    Err(e) => return format!("connection to the relay lost: {e}"),
                };
                if let Ok(Kind::Response { id: Some(id) }) = jsonrpc::classify(&bytes) {
                    lock(&pending).remove(&id);
                }
                if out_tx.send(bytes).await.is_err() {
                    return "stdout closed".to_owned();
                }
            }
            "connection to the relay lost".to_owned()
        }
    };
    let uplink = uplink(in_rx, &ws_tx, out_tx, &pending, opts.max_message_size);
    tokio::pin!(downlink);

    let result = tokio::select! {
        up = uplink => match up {
            Uplink::Eof => {
                debug!("stdin closed; waiting for answers in flight, then ending the session");
                tokio::select! {
                    () = answered(&pending, EOF_ANSWER_WAIT) => {}
                    reason = &mut downlink => {
                        debug!("{reason}");
                    }
                }
                let _ = ws_tx
                    .send(Message::Close(Some(CloseFrame {
                        code: CloseCode::Normal,
                        reason: Utf8Bytes::from_static("client done"),
                    })))
                    .await;
                let _ = tokio::time::timeout(CLOSE_WAIT, &mut downlink).await;
                Ok(())
            }
            Uplink::WsGone => {
                let reason = tokio::time::timeout(CLOSE_WAIT, &mut downlink)
                    .await
                    .unwrap_or_else(|_| "connection to the relay lost".to_owned());
                Err(reason)
            }
        },
        reason = &mut downlink => Err(reason),
    };
    drop(ws_tx);
    let _ = tokio::time::timeout(CLOSE_WAIT, ws_writer).await;
    match result {
        Ok(()) => Ok(()),
        Err(reason) => {
            let ids: Vec<Id> = lock(&pending).drain().collect();
            if !ids.is_empty() {
                warn!(
                    requests = ids.len(),
                    "answering requests in flight with an error"
                );
            }
            let message = format!("{reason}; the request's outcome is unknown");
            for id in ids {
                let body =
                    jsonrpc::error_response(Some(&id), jsonrpc::RELAY_UNAVAILABLE, &message, None);
                let _ = out_tx.send(Bytes::from(body)).await;
            }
            Err(ClientError::SessionEnded(reason))
        }
    }
}

/// IDE → relay: classify each line, answer the unusable ones locally, forward the rest.
async fn uplink(
    in_rx: &mut mpsc::Receiver<Frame>,
    ws_tx: &mpsc::Sender<Message>,
    out_tx: &mpsc::Sender<Bytes>,
    pending: &Pending,
    max: usize,
) -> Uplink {
    while let Some(frame) = in_rx.recv().await {
        let line = match frame {
            Frame::Line(line) => line,
            Frame::Oversize { head, len } => {
                let info = jsonrpc::scan_head(&head);
                let message = format!(
                    "message of {} exceeds bridge-client's limit of {} (raise it with --max-message-size)",
                    shared::human_bytes(len),
                    shared::human_bytes(max)
                );
                warn!("{message}");
                match info.id {
                    // The IDE's answer to a tool's request: tell the tool instead.
                    Some(id) if info.is_response => {
                        let body = jsonrpc::error_response(
                            Some(&id),
                            jsonrpc::MESSAGE_TOO_LARGE,
                            &message,
                            None,
                        );
                        if !send_text(ws_tx, body).await {
                            return Uplink::WsGone;
                        }
                    }
                    Some(id) => {
                        let body = jsonrpc::error_response(
                            Some(&id),
                            jsonrpc::MESSAGE_TOO_LARGE,
                            &message,
                            None,
                        );
                        let _ = out_tx.send(Bytes::from(body)).await;
                    }
                    None => {}
                }
                continue;
            }
        };
        match jsonrpc::classify(&line) {
            Ok(Kind::Request { id, .. }) => {
                lock(pending).insert(id);
            }
            Ok(Kind::Notification { method }) => {
                if method == "notifications/cancelled" {
                    if let Some(id) = jsonrpc::cancelled_request_id(&line) {
                        lock(pending).remove(&id);
                    }
                }
            }
            Ok(Kind::Response { .. }) => {}
            Err(ClassifyError::Batch) => {
                let ids = jsonrpc::batch_request_ids(&line);
                warn!(
                    requests = ids.len(),
                    "the IDE sent a JSON-RPC batch; answered with errors"
                );
                if !ids.is_empty() {
                    let body = jsonrpc::batch_error_response(
                        &ids,
                        jsonrpc::INVALID_REQUEST,
                        jsonrpc::BATCH_UNSUPPORTED,
                    );
                    let _ = out_tx.send(Bytes::from(body)).await;
                }
                continue;
            }
            Err(e) => {
                let code = match e {
                    ClassifyError::Parse(_) => jsonrpc::PARSE_ERROR,
                    _ => jsonrpc::INVALID_REQUEST,
                };
                let id = jsonrpc::scan_head(&line).id;
                warn!("the IDE sent an unusable line: {e}");
                let body = jsonrpc::error_response(id.as_ref(), code, &e.to_string(), None);
                let _ = out_tx.send(Bytes::from(body)).await;
                continue;
            }
        }
        if !send_text(ws_tx, line).await {
            return Uplink::WsGone;
        }
    }
    Uplink::Eof
}

/// Queues a text frame for the relay; false when the connection's writer is gone.
async fn send_text(ws_tx: &mpsc::Sender<Message>, body: impl Into<Bytes>) -> bool {
    match Utf8Bytes::try_from(body.into()) {
        Ok(text) => ws_tx.send(Message::Text(text)).await.is_ok(),
        // classify() accepted it, so it is UTF-8; this cannot happen for forwarded lines.
        Err(_) => true,
    }
}

async fn read_input<R: AsyncRead + Unpin>(input: R, max: usize, tx: mpsc::Sender<Frame>) {
    let mut reader = LineReader::new(input, max);
    loop {
        match reader.next_frame().await {
            Ok(Some(frame)) => {
                if tx.send(frame).await.is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(e) => {
                warn!("reading stdin failed: {e}");
                return;
            }
        }
    }
}

async fn write_output<W: AsyncWrite + Unpin>(
    output: W,
    mut rx: mpsc::Receiver<Bytes>,
) -> std::io::Result<()> {
    let mut out = BufWriter::with_capacity(64 * 1024, output);
    while let Some(msg) = rx.recv().await {
        framing::write_line(&mut out, &msg).await?;
        if rx.is_empty() {
            out.flush().await?;
        }
    }
    out.flush().await
}

async fn write_ws(
    mut sink: futures_util::stream::SplitSink<connect::Ws, Message>,
    mut rx: mpsc::Receiver<Message>,
) {
    while let Some(msg) = rx.recv().await {
        let closing = matches!(msg, Message::Close(_));
        if let Err(e) = sink.feed(msg).await {
            debug!("sending to the relay failed: {e}");
            return;
        }
        if closing || rx.is_empty() {
            if let Err(e) = sink.flush().await {
                debug!("flushing to the relay failed: {e}");
                return;
            }
        }
        if closing {
            return;
        }
    }
}

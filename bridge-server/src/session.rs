//! One relay session: a WebSocket peer on one side, one tool process on the other.
//!
//! Messages are forwarded byte for byte in both directions; the session only classifies them to
//! keep a table of the client's requests in flight, so that each one gets exactly one answer even
//! when the tool dies. It does not authenticate, route or spawn: the HTTP layer does that.

use std::collections::HashSet;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::process::{ChildStderr, ChildStdin, ChildStdout};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use shared::framing::{self, Frame, LineReader};
use shared::jsonrpc::{self, ClassifyError, Id, Kind};

use crate::child::{self, ToolProcess};
use crate::config::ToolConfig;

/// Depth of the queues between the WebSocket, the session and the tool's stdio. A full queue
/// makes the producer wait: a slow reader slows the writer instead of growing memory.
const QUEUE_DEPTH: usize = 64;

/// After the tool's stdout closes, how long to wait for its exit status before ending it.
const EXIT_STATUS_WAIT: Duration = Duration::from_millis(300);

/// How long to wait for the client to answer our close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// The client's requests that the tool has not answered yet.
type Pending = Arc<Mutex<HashSet<Id>>>;

fn lock(p: &Pending) -> std::sync::MutexGuard<'_, HashSet<Id>> {
    p.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why a session ended.
#[derive(Debug)]
enum End {
    /// The client closed the WebSocket or the connection dropped.
    ClientGone(String),
    /// The tool closed its stdout (usually: it exited).
    ToolGone,
    /// The relay is shutting down.
    Shutdown,
}

/// Runs a session to its end. Owns the tool process and always reaps it.
pub(crate) async fn run<S>(
    ws: WebSocketStream<S>,
    mut tool_proc: ToolProcess,
    tool: Arc<ToolConfig>,
    kill_grace: Duration,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let started = tokio::time::Instant::now();
    let (sink, mut stream) = ws.split();
    let pending: Pending = Arc::default();
    let (to_ws, to_ws_rx) = mpsc::channel::<Message>(QUEUE_DEPTH);
    let (to_tool, to_tool_rx) = mpsc::channel::<Bytes>(QUEUE_DEPTH);

    let ws_writer = tokio::spawn(write_ws(sink, to_ws_rx).in_current_span());
    if let Some(stdin) = tool_proc.stdin.take() {
        tokio::spawn(write_tool(stdin, to_tool_rx).in_current_span());
    }
    if let Some(stderr) = tool_proc.stderr.take() {
        tokio::spawn(log_stderr(stderr).in_current_span());
    }
    let mut stdout_reader = match tool_proc.stdout.take() {
        Some(stdout) => tokio::spawn(
            read_tool(
                stdout,
                tool.clone(),
                to_ws.clone(),
                to_tool.clone(),
                pending.clone(),
            )
            .in_current_span(),
        ),
        None => tokio::spawn(async {}),
    };

    let end = loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(Ok(msg)) => {
                    if let Some(reason) = on_client_message(msg, &tool, &to_ws, &to_tool, &pending, &shutdown).await {
                        break End::ClientGone(reason);
                    }
                }
                Some(Err(e)) => break End::ClientGone(format!("connection error: {e}")),
                None => break End::ClientGone("connection closed".into()),
            },
            _ = &mut stdout_reader => break End::ToolGone,
            _ = shutdown.cancelled() => break End::Shutdown,
        }
    };

    let grace = kill_grace;
    drop(to_tool);
    match end {
        End::ClientGone(reason) => {
            debug!(%reason, "client left");
            stdout_reader.abort();
            let status = child::terminate(tool_proc.child, None, grace).await;
            log_exit(&tool, status.as_ref().ok(), "session closed by client");
        }
        End::ToolGone => {
            let status = match tokio::time::timeout(EXIT_STATUS_WAIT, tool_proc.child.wait()).await
            {
                Ok(Ok(status)) => Some(status),
                _ => None,
            };
            let what = match &status {
                Some(status) => child::describe_exit(status),
                None => "closed its stdout".to_owned(),
            };
            let status = match status {
                Some(s) => Some(s),
                None => child::terminate(tool_proc.child, None, grace).await.ok(),
            };
            log_exit(&tool, status.as_ref(), "tool ended the session");
            let message = format!("tool `{}` {what} before answering", tool.name);
            fail_pending(&pending, &to_ws, jsonrpc::TOOL_EXITED, &message).await;
            let reason = format!("tool `{}` {what}", tool.name);
            close(&to_ws, CloseCode::Error, &reason).await;
            drain_close(&mut stream).await;
        }
        End::Shutdown => {
            let message = "the relay is shutting down; retry on a new session";
            fail_pending(&pending, &to_ws, jsonrpc::RELAY_UNAVAILABLE, message).await;
            close(&to_ws, CloseCode::Away, "relay is shutting down").await;
            stdout_reader.abort();
            let status = child::terminate(tool_proc.child, None, grace).await;
            log_exit(&tool, status.as_ref().ok(), "relay shutdown");
            drain_close(&mut stream).await;
        }
    }
    drop(to_ws);
    let _ = tokio::time::timeout(CLOSE_WAIT, ws_writer).await;
    info!(
        duration_ms = started.elapsed().as_millis() as u64,
        "session ended"
    );
}

fn log_exit(tool: &ToolConfig, status: Option<&ExitStatus>, why: &str) {
    match status {
        Some(status) if status.success() => info!(tool = %tool.name, why, "tool exited cleanly"),
        Some(status) => info!(tool = %tool.name, why, "tool {}", child::describe_exit(status)),
        None => warn!(tool = %tool.name, why, "could not learn how the tool exited"),
    }
}

/// Handles one WebSocket message from the client. Returns `Some(reason)` when the client is gone.
async fn on_client_message(
    msg: Message,
    tool: &ToolConfig,
    to_ws: &mpsc::Sender<Message>,
    to_tool: &mpsc::Sender<Bytes>,
    pending: &Pending,
    shutdown: &CancellationToken,
) -> Option<String> {
    let bytes: Bytes = match msg {
        Message::Text(text) => text.into(),
        Message::Binary(bin) => bin,
        Message::Close(frame) => {
            return Some(match frame {
                Some(f) => format!("client closed ({}): {}", u16::from(f.code), f.reason),
                None => "client closed".into(),
            })
        }
        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => return None,
    };
    if bytes.len() > tool.max_message_size {
        let head = bytes.slice(..bytes.len().min(framing::OVERSIZE_HEAD));
        let info = jsonrpc::scan_head(&head);
        let message = format!(
            "message of {} exceeds the relay's limit of {} for tool `{}`",
            shared::human_bytes(bytes.len()),
            shared::human_bytes(tool.max_message_size),
            tool.name
        );
        warn!("{message}");
        if info.id.is_some() && !info.is_response {
            reply(
                to_ws,
                info.id.as_ref(),
                jsonrpc::MESSAGE_TOO_LARGE,
                &message,
            )
            .await;
        }
        return None;
    }
    match jsonrpc::classify(&bytes) {
        Ok(Kind::Request { id, .. }) => {
            lock(pending).insert(id);
        }
        Ok(Kind::Notification { method }) => {
            if method == "notifications/cancelled" {
                if let Some(id) = jsonrpc::cancelled_request_id(&bytes) {
                    lock(pending).remove(&id);
                }
            }
        }
        Ok(Kind::Response { .. }) => {}
        Err(ClassifyError::Batch) => {
            let ids = jsonrpc::batch_request_ids(&bytes);
            warn!(
                requests = ids.len(),
                "client sent a JSON-RPC batch; answered with errors"
            );
            if !ids.is_empty() {
                let body = jsonrpc::batch_error_response(
                    &ids,
                    jsonrpc::INVALID_REQUEST,
                    jsonrpc::BATCH_UNSUPPORTED,
                );
                send_text(to_ws, body).await;
            }
            return None;
        }
        Err(e) => {
            let info = jsonrpc::scan_head(&bytes);
            let code = match e {
                ClassifyError::Parse(_) => jsonrpc::PARSE_ERROR,
                _ => jsonrpc::INVALID_REQUEST,
            };
            debug!(error = %e, "client sent an unusable message");
            reply(to_ws, info.id.as_ref(), code, &e.to_string()).await;
            return None;
        }
    }
    tokio::select! {
        sent = to_tool.send(bytes) => {
            if sent.is_err() {
                // The tool's stdin is gone; the stdout reader will end the session shortly
                // and answer what is pending.
                debug!("tool stdin closed; message not delivered");
            }
        }
        _ = shutdown.cancelled() => {}
    }
    None
}

/// Reads the tool's stdout and forwards each JSON-RPC line to the client.
async fn read_tool(
    stdout: ChildStdout,
    tool: Arc<ToolConfig>,
    to_ws: mpsc::Sender<Message>,
    to_tool: mpsc::Sender<Bytes>,
    pending: Pending,
) {
    let mut reader = LineReader::new(stdout, tool.max_message_size);
    loop {
        let frame = match reader.next_frame().await {
            Ok(Some(frame)) => frame,
            Ok(None) => return,
            Err(e) => {
                warn!("reading the tool's stdout failed: {e}");
                return;
            }
        };
        match frame {
            Frame::Line(line) => match jsonrpc::classify(&line) {
                Ok(kind) => {
                    if let Kind::Response { id: Some(id) } = &kind {
                        lock(&pending).remove(id);
                    }
                    if !send_text(&to_ws, line).await {
                        return;
                    }
                }
                Err(e) => {
                    let shown = String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
                    warn!(error = %e, line = %shown, "tool wrote a line that is not a JSON-RPC message to stdout; skipped");
                }
            },
            Frame::Oversize { head, len } => {
                let info = jsonrpc::scan_head(&head);
                let message = format!(
                    "the tool's message of {} exceeds the relay's limit of {} for tool `{}`",
                    shared::human_bytes(len),
                    shared::human_bytes(tool.max_message_size),
                    tool.name
                );
                warn!("{message}");
                match info.id {
                    Some(id) if info.is_response => {
                        lock(&pending).remove(&id);
                        reply(&to_ws, Some(&id), jsonrpc::MESSAGE_TOO_LARGE, &message).await;
                    }
                    Some(id) if info.has_method => {
                        let body = jsonrpc::error_response(
                            Some(&id),
                            jsonrpc::MESSAGE_TOO_LARGE,
                            &message,
                            None,
                        );
                        let _ = to_tool.send(Bytes::from(body)).await;
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Writes queued messages to the tool's stdin, flushing whenever the queue runs dry.
async fn write_tool(stdin: ChildStdin, mut rx: mpsc::Receiver<Bytes>) {
    let mut out = BufWriter::new(stdin);
    while let Some(msg) = rx.recv().await {
        if let Err(e) = framing::write_line(&mut out, &msg).await {
            debug!("writing to the tool's stdin failed: {e}");
            return;
        }
        if rx.is_empty() {
            if let Err(e) = out.flush().await {
                debug!("flushing the tool's stdin failed: {e}");
                return;
            }
        }
    }
    // All senders gone: close stdin so the tool sees EOF.
    let _ = out.shutdown().await;
}

/// Copies the tool's stderr into the relay's log, one event per line.
async fn log_stderr(stderr: ChildStderr) {
    let mut reader = LineReader::new(stderr, 16 * 1024);
    while let Ok(Some(frame)) = reader.next_frame().await {
        match frame {
            Frame::Line(line) => {
                info!(target: "tool", "tool stderr: {}", String::from_utf8_lossy(&line));
            }
            Frame::Oversize { len, .. } => {
                info!(target: "tool", "(a stderr line of {len} bytes, not shown)");
            }
        }
    }
}

/// Sends queued messages to the client, flushing whenever the queue runs dry.
async fn write_ws<S>(
    mut sink: futures_util::stream::SplitSink<WebSocketStream<S>, Message>,
    mut rx: mpsc::Receiver<Message>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(msg) = rx.recv().await {
        let closing = matches!(msg, Message::Close(_));
        if let Err(e) = sink.feed(msg).await {
            debug!("sending to the client failed: {e}");
            return;
        }
        if closing || rx.is_empty() {
            if let Err(e) = sink.flush().await {
                debug!("flushing to the client failed: {e}");
                return;
            }
        }
        if closing {
            return;
        }
    }
    let _ = sink.close().await;
}

/// Queues a text frame; false when the writer is gone.
async fn send_text(to_ws: &mpsc::Sender<Message>, body: impl Into<Bytes>) -> bool {
    match Utf8Bytes::try_from(body.into()) {
        Ok(text) => to_ws.send(Message::Text(text)).await.is_ok(),
        Err(_) => {
            warn!("dropped a message that is not UTF-8");
            true
        }
    }
}

async fn reply(to_ws: &mpsc::Sender<Message>, id: Option<&Id>, code: i64, message: &str) {
    send_text(to_ws, jsonrpc::error_response(id, code, message, None)).await;
}

async fn fail_pending(pending: &Pending, to_ws: &mpsc::Sender<Message>, code: i64, message: &str) {
    let ids: Vec<Id> = lock(pending).drain().collect();
    for id in ids {
        reply(to_ws, Some(&id), code, message).await;
    }
}

async fn close(to_ws: &mpsc::Sender<Message>, code: CloseCode, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from(truncate_reason(reason)),
    };
    let _ = to_ws.send(Message::Close(Some(frame))).await;
}

/// Close reasons are limited to 123 bytes by RFC 6455.
fn truncate_reason(reason: &str) -> String {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

/// Reads until the client answers our close frame (or a short timeout), so the TCP connection
/// ends with a proper WebSocket close handshake.
async fn drain_close<S>(stream: &mut futures_util::stream::SplitStream<WebSocketStream<S>>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(msg)) = stream.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

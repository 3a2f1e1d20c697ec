//! bridge-client: the IDE-side shim. It is an MCP stdio server to the IDE and forwards every
//! JSON-RPC message, unchanged, over a WebSocket to an mcp-bridge relay — and keeps doing so
//! across dropped connections (resume) and lost sessions (re-establishment).
//!
//! [`run`] is generic over its input and output so tests can drive it with in-memory pipes; the
//! binary passes the process's stdin and stdout. Nothing here ever writes anything but JSON-RPC
//! messages to the output: logs go through `tracing` (to stderr).

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tracing::{debug, info, warn};

use shared::conn::{recv, reserve, Conn, ConnEvent, Heartbeat, Link};
use shared::framing::{self, Frame, LineReader};
use shared::jsonrpc::{self, ClassifyError, Id, Kind, Oversize};
use shared::tunnel::{self, Control, Inbox, Outbox, Received};

mod connect;
pub mod credentials;
pub mod relay_url;
pub mod stdio;
mod transport;

pub use connect::parse_header;
pub use transport::Proxy;

/// Depth of the queues between stdin, the session and stdout.
const QUEUE_DEPTH: usize = 64;

/// IDE messages held back (during a replayed handshake, or while the relay drains).
const HELD_MAX: usize = 256;

/// After stdin ends, how long to wait for answers to requests still in flight; with the close
/// handshake this stays under the 2 s after which SDK clients send SIGTERM.
const EOF_ANSWER_WAIT: Duration = Duration::from_millis(1200);

/// How long the relay may take to confirm our close.
const CLOSE_WAIT: Duration = Duration::from_millis(500);

/// When the first connection fails: how long to go on reading the IDE's lines (to answer
/// each request with the reason) before exiting.
const FIRST_FAILURE_DRAIN: Duration = Duration::from_millis(300);

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a replayed `initialize` may take before held messages are sent anyway.
const REINIT_WAIT: Duration = Duration::from_secs(10);

/// A session that ends sooner than this after opening counts as a quick failure.
const QUICK_FAILURE: Duration = Duration::from_secs(2);
const MAX_QUICK_FAILURES: u32 = 2;

/// Send a standalone ack after this many unacknowledged messages, or after [`ACK_DELAY`].
const ACK_EVERY: u64 = 32;
const ACK_DELAY: Duration = Duration::from_millis(5);

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

/// Reconnection delays: exponential from `initial` to `max`, each with random jitter.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// First delay.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    /// The delay before attempt `n` (0-based): `initial * 2^n`, capped, then scaled by a random
    /// factor in [0.5, 1.0] so that many clients cut at once do not return at once.
    pub fn delay(&self, n: u32) -> Duration {
        let base = self.initial.saturating_mul(1u32 << n.min(16)).min(self.max);
        let mut b = [0u8; 2];
        let r = if getrandom::fill(&mut b).is_ok() {
            u16::from_le_bytes(b) as f64 / u16::MAX as f64
        } else {
            1.0
        };
        base.mul_f64(0.5 + 0.5 * r)
    }
}

/// What the client needs to run.
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
    /// WebSocket ping interval and dead-peer timeout.
    pub heartbeat: Heartbeat,
    /// Delays between reconnection attempts.
    pub backoff: Backoff,
    /// TLS settings for `wss://` (roots, private CA, client certificate).
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// HTTP CONNECT proxy to go through, if any.
    pub proxy: Option<Proxy>,
    /// Sent as `mcp-bridge-affinity` on every connect, for load balancers.
    pub affinity: Option<String>,
}

/// Why the client could not start or stopped.
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
    /// Writing to the IDE failed (it has gone away).
    #[error("writing to stdout failed: {0}")]
    Stdout(std::io::Error),
}

impl ClientError {
    /// Whether trying again later may work (the relay is down or busy, not refusing us).
    fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } | ClientError::Handshake { .. } => true,
            ClientError::Refused { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

/// Runs the client: reads JSON-RPC lines from `input`, forwards them to the relay, and writes
/// the relay's messages to `output`, until `input` ends (the IDE closed stdin: `Ok`). Fails only
/// when the very first connection cannot be made (a wrong URL, a relay that refuses, none there).
pub async fn run<R, W>(opts: Options, input: R, output: W) -> Result<(), ClientError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    run_until(opts, input, output, std::future::pending()).await
}

/// [`run`], but `stop` resolving (a signal from the IDE: SIGINT, SIGTERM, SIGHUP) ends the
/// session exactly as the end of `input` does: answers in flight are awaited briefly, the
/// relay is told the session is over (so it frees the session and the tool at once), then it
/// returns.
pub async fn run_until<R, W, S>(
    opts: Options,
    input: R,
    output: W,
    stop: S,
) -> Result<(), ClientError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
    S: std::future::Future<Output = ()> + Send + 'static,
{
    let (out_tx, out_rx) = mpsc::channel::<Bytes>(QUEUE_DEPTH);
    let writer = tokio::spawn(write_output(output, out_rx));
    let (in_tx, mut in_rx) = mpsc::channel::<Frame>(QUEUE_DEPTH);
    // Read stdin while the connection is being made, so neither waits on the other.
    let reader = tokio::spawn(read_input(input, opts.max_message_size, in_tx, stop));

    let first = tokio::time::timeout(CONNECT_TIMEOUT, connect::connect(&opts, None, false)).await;
    let first = first.unwrap_or_else(|_| {
        Err(ClientError::Unreachable {
            url: opts.url.clone(),
            reason: format!(
                "no answer within {}",
                shared::human_duration(CONNECT_TIMEOUT)
            ),
        })
    });
    let result = match first {
        Ok((conn, welcome)) => {
            info!(url = %opts.url, "connected to relay");
            let mut client = Client::new(&opts, out_tx.clone());
            client.attach(conn, &welcome);
            client.run(&mut in_rx).await;
            Ok(())
        }
        Err(e) => {
            // Answer what the IDE already asked, so nothing is left hanging — including lines
            // it wrote just before the failure that the reader has not handed over yet.
            let message = e.to_string();
            let until = Instant::now() + FIRST_FAILURE_DRAIN;
            while let Ok(Some(frame)) = tokio::time::timeout_at(until, in_rx.recv()).await {
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

/// The session we hold with the relay.
struct SessionInfo {
    id: String,
    resume_window: Duration,
}

/// The IDE's handshake, kept to replay on a new session.
#[derive(Default)]
struct Handshake {
    initialize: Option<Bytes>,
    initialized: Option<Bytes>,
}

struct Client<'a> {
    opts: &'a Options,
    out: mpsc::Sender<Bytes>,
    /// IDE → relay messages of the current session, numbered; kept until acknowledged.
    outbox: Outbox,
    /// Relay → IDE sequence numbers of the current session.
    inbox: Inbox,
    /// IDE requests sent into the current session and not answered yet.
    pending: HashSet<Id>,
    session: Option<SessionInfo>,
    link: Link,
    /// When the connection was lost (the resume window counts from here).
    lost_at: Option<Instant>,
    /// Next connection attempt: when, and how many have failed before it.
    retry: Option<(Instant, u32)>,
    handshake: Handshake,
    /// A replayed `initialize` in flight: its id and how long to wait for it.
    reinit: Option<(Id, Instant)>,
    reinit_count: u64,
    /// IDE messages held back until the replayed handshake completes or a draining session ends.
    held: VecDeque<Bytes>,
    /// The relay asked us to send no new requests on this session.
    draining: bool,
    ack_at: Option<Instant>,
    /// When the current session was opened.
    session_started: Option<Instant>,
    /// Set at stdin EOF: everything must be done by then.
    eof_deadline: Option<Instant>,
    /// Sessions lost so far (a new one after that is a re-establishment).
    lost_sessions: u64,
    /// Sessions in a row that ended within [`QUICK_FAILURE`] of opening without answering the
    /// IDE: past [`MAX_QUICK_FAILURES`], queued requests are answered with the reason instead of
    /// starting yet another session (a tool that dies at once must not loop).
    quick_failures: u32,
}

impl<'a> Client<'a> {
    fn new(opts: &'a Options, out: mpsc::Sender<Bytes>) -> Client<'a> {
        Client {
            opts,
            out,
            outbox: Outbox::new(1024, 4 * opts.max_message_size.max(1 << 20)),
            inbox: Inbox::default(),
            pending: HashSet::new(),
            session: None,
            link: Link::default(),
            lost_at: None,
            retry: None,
            handshake: Handshake::default(),
            reinit: None,
            reinit_count: 0,
            held: VecDeque::new(),
            draining: false,
            ack_at: None,
            session_started: None,
            eof_deadline: None,
            lost_sessions: 0,
            quick_failures: 0,
        }
    }

    /// Takes a fresh connection into use, for a new or a resumed session.
    fn attach(&mut self, conn: Conn, welcome: &connect::Welcome) {
        self.link.set(conn);
        self.inbox.reset_acked();
        self.ack_at = None;
        self.retry = None;
        self.lost_at = None;
        self.session = Some(SessionInfo {
            id: welcome.session.clone(),
            resume_window: welcome.resume_window,
        });
    }

    async fn run(&mut self, in_rx: &mut mpsc::Receiver<Frame>) {
        let far = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
        let mut eof_at: Option<Instant> = None;
        loop {
            if let Some(t) = eof_at {
                // Done when every request is answered and the relay can be told (connected, or
                // no session to tell it about) — or when time is up.
                let no_session = self.session.is_none();
                let settled = self.pending.is_empty() && (self.link.is_up() || no_session);
                if settled || t.elapsed() >= EOF_ANSWER_WAIT {
                    break;
                }
            }
            let queued = !self.outbox.is_empty() || !self.held.is_empty();
            if !self.link.is_up() && self.retry.is_none() && (self.session.is_some() || queued) {
                self.retry = Some((Instant::now(), 0));
            }
            let retry_at = self.retry.map_or(far, |(t, _)| t);
            let ack_deadline = self.ack_at.unwrap_or(far);
            let ack_now = self.ack_at.is_some_and(|t| t <= Instant::now());
            let want_send = self.link.is_up() && (!self.outbox.all_sent() || ack_now);
            let can_read_stdin =
                eof_at.is_none() && self.outbox.has_room(1) && self.held.len() < HELD_MAX;
            let reinit_deadline = self.reinit.as_ref().map_or(far, |(_, t)| *t);
            let eof_deadline = eof_at.map_or(far, |t| t + EOF_ANSWER_WAIT);

            tokio::select! {
                frame = in_rx.recv(), if can_read_stdin => match frame {
                    Some(frame) => self.on_stdin(frame).await,
                    None => {
                        debug!("stdin closed; waiting for answers in flight, then ending the session");
                        eof_at = Some(Instant::now());
                        self.eof_deadline = Some(Instant::now() + EOF_ANSWER_WAIT);
                    }
                },
                permit = reserve(self.link.tx.clone()), if want_send => match permit {
                    Some(permit) => self.send_next(permit),
                    // The writer is gone: the connection is over (its reader will say why, but
                    // do not spin waiting for it).
                    None => self.connection_lost("connection closed"),
                },
                ev = recv(&mut self.link.rx) => self.on_conn_event(ev).await,
                () = tokio::time::sleep_until(retry_at), if self.retry.is_some() && !self.link.is_up() => {
                    self.attempt().await;
                }
                () = tokio::time::sleep_until(ack_deadline), if self.ack_at.is_some() && !ack_now => {}
                () = tokio::time::sleep_until(reinit_deadline), if self.reinit.is_some() => {
                    warn!("the tool did not answer the replayed initialize within {} s; going on", REINIT_WAIT.as_secs());
                    self.finish_reinit();
                }
                () = tokio::time::sleep_until(eof_deadline), if eof_at.is_some() => {}
            }
        }
        if let Some(conn) = self.link.take() {
            let end = tunnel::encode_control(&Control::End {
                reason: "client done".to_owned(),
            });
            let frame = CloseFrame {
                code: CloseCode::Normal,
                reason: Utf8Bytes::from_static("client done"),
            };
            // Flush what is still unsent (a last notification, say) before the end notice.
            let _ = tokio::time::timeout(CLOSE_WAIT, async {
                while !self.outbox.all_sent() {
                    match conn.tx.clone().reserve_owned().await {
                        Ok(permit) => self.send_next(permit),
                        Err(_) => break,
                    }
                }
            })
            .await;
            conn.close(vec![Message::Binary(end)], Some(frame), CLOSE_WAIT)
                .await;
        }
    }

    /// One line from the IDE.
    async fn on_stdin(&mut self, frame: Frame) {
        let line = match frame {
            Frame::Line(line) => line,
            Frame::Oversize { head, len } => {
                let message = format!(
                    "message of {} exceeds bridge-client's limit of {} (raise it with --max-message-size)",
                    shared::human_bytes(len),
                    shared::human_bytes(self.opts.max_message_size)
                );
                warn!("{message}");
                match jsonrpc::oversize(&head, &message) {
                    Oversize::Request { error, .. } => {
                        let _ = self.out.send(Bytes::from(error)).await;
                    }
                    // The IDE's answer to a tool's request: tell the tool instead.
                    Oversize::Response { error, .. } => {
                        self.outbox.push(Bytes::from(error));
                    }
                    Oversize::Other => {}
                }
                return;
            }
        };
        let kind = match jsonrpc::classify(&line) {
            Ok(kind) => kind_owned(kind),
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
                    let _ = self.out.send(Bytes::from(body)).await;
                }
                return;
            }
            Err(e) => {
                let code = match e {
                    ClassifyError::Parse(_) => jsonrpc::PARSE_ERROR,
                    _ => jsonrpc::INVALID_REQUEST,
                };
                let id = jsonrpc::scan_head(&line).id;
                warn!("the IDE sent an unusable line: {e}");
                let body = jsonrpc::error_response(id.as_ref(), code, &e.to_string(), None);
                let _ = self.out.send(Bytes::from(body)).await;
                return;
            }
        };
        let new_work = match &kind {
            Kind::Request { method, .. } => {
                if method == "initialize" {
                    self.handshake.initialize = Some(line.clone());
                    self.handshake.initialized = None;
                }
                true
            }
            Kind::Notification { method } => {
                if method == "notifications/initialized" {
                    self.handshake.initialized = Some(line.clone());
                }
                method != "notifications/cancelled"
            }
            Kind::Response { .. } => false,
        };
        if self.reinit.is_some() || (self.draining && new_work) {
            self.held.push_back(line);
        } else {
            self.enqueue(line, &kind);
        }
    }

    /// Puts an IDE message into the current session's outbox.
    fn enqueue(&mut self, line: Bytes, kind: &Kind<'_>) {
        match kind {
            Kind::Request { id, .. } => {
                self.pending.insert(id.clone());
            }
            Kind::Notification { method } if method == "notifications/cancelled" => {
                if let Some(id) = jsonrpc::cancelled_request_id(&line) {
                    self.pending.remove(&id);
                }
            }
            _ => {}
        }
        self.outbox.push(line);
    }

    /// Moves held messages into the outbox, in order.
    fn release_held(&mut self) {
        while let Some(line) = self.held.pop_front() {
            match jsonrpc::classify(&line) {
                Ok(kind) => {
                    let kind = kind_owned(kind);
                    self.enqueue(line, &kind);
                }
                Err(_) => continue,
            }
        }
    }

    /// Writes the next unsent message, or a standalone ack, into a reserved slot.
    fn send_next(&mut self, permit: mpsc::OwnedPermit<Message>) {
        match self.outbox.next_to_send() {
            Some((seq, payload)) => {
                let frame = tunnel::encode_data(seq, self.inbox.last(), payload);
                permit.send(Message::Binary(frame));
                self.outbox.mark_sent(seq);
            }
            None => {
                permit.send(Message::Binary(tunnel::encode_ack(self.inbox.last())));
            }
        }
        self.inbox.acked();
        self.ack_at = None;
    }

    async fn on_conn_event(&mut self, ev: Option<ConnEvent>) {
        match ev {
            Some(ConnEvent::Message(Message::Binary(frame))) => match tunnel::decode(frame) {
                Ok(tunnel::Frame::Data { seq, ack, payload }) => {
                    if let Err(e) = self.outbox.ack(ack) {
                        return self.connection_lost(&format!("protocol error: {e}"));
                    }
                    match self.inbox.receive(seq) {
                        Received::New => {}
                        Received::Duplicate => return,
                        Received::Gap { expected } => {
                            return self.connection_lost(&format!(
                                "protocol error: the relay skipped from {expected} to {seq}"
                            ))
                        }
                    }
                    if self.inbox.unacked() >= ACK_EVERY {
                        self.ack_at = Some(Instant::now());
                    } else if self.ack_at.is_none() {
                        self.ack_at = Some(Instant::now() + ACK_DELAY);
                    }
                    self.deliver(payload).await;
                }
                Ok(tunnel::Frame::Ack { ack }) => {
                    if let Err(e) = self.outbox.ack(ack) {
                        self.connection_lost(&format!("protocol error: {e}"));
                    }
                }
                Ok(tunnel::Frame::Control(Control::End { reason })) => {
                    self.session_lost(&format!("the relay ended the session: {reason}"))
                        .await;
                }
                Ok(tunnel::Frame::Control(Control::Drain { reason })) => {
                    warn!(
                        "the relay is draining ({reason}); new requests will go to a new session"
                    );
                    self.draining = true;
                }
                Ok(tunnel::Frame::Control(other)) => debug!("ignoring control message {other:?}"),
                Err(e) => self.connection_lost(&format!("protocol error: {e}")),
            },
            Some(ConnEvent::Message(_)) => {}
            Some(ConnEvent::Fatal(why)) => {
                // Resuming would replay the offending message: this session cannot go on.
                self.session_lost(&format!("the relay broke a limit ({why})"))
                    .await;
            }
            Some(ConnEvent::Closed(why)) => self.connection_lost(&why),
            None => self.connection_lost("connection closed"),
        }
    }

    /// A message from the tool for the IDE.
    async fn deliver(&mut self, payload: Bytes) {
        if payload.len() > self.opts.max_message_size {
            return self.deliver_oversize(&payload).await;
        }
        if let Ok(Kind::Response { id: Some(id), .. }) = jsonrpc::classify(&payload) {
            if self.reinit.as_ref().is_some_and(|(rid, _)| *rid == id) {
                debug!("the tool answered the replayed initialize");
                self.finish_reinit();
                return;
            }
            if is_reinit_id(&id) {
                // An answer to a replayed initialize of an earlier session: ours, not the IDE's.
                return;
            }
            if self.pending.remove(&id) {
                self.quick_failures = 0;
            }
        }
        let _ = self.out.send(payload).await;
    }

    /// A message from the relay over `--max-message-size`: its requester gets an error instead.
    async fn deliver_oversize(&mut self, payload: &[u8]) {
        let message = format!(
            "a message of {} from the tool exceeds bridge-client's limit of {} (raise it with --max-message-size)",
            shared::human_bytes(payload.len()),
            shared::human_bytes(self.opts.max_message_size)
        );
        warn!("{message}");
        match jsonrpc::oversize(payload, &message) {
            Oversize::Response { id, error } if self.pending.remove(&id) => {
                let _ = self.out.send(Bytes::from(error)).await;
            }
            // The tool's own request: tell the tool it cannot be delivered.
            Oversize::Request { error, .. } => {
                self.outbox.push(Bytes::from(error));
            }
            _ => {}
        }
    }

    fn finish_reinit(&mut self) {
        self.reinit = None;
        if let Some(initialized) = self.handshake.initialized.clone() {
            self.outbox.push(initialized);
        }
        self.release_held();
    }

    /// The connection dropped; the session may still be resumable.
    fn connection_lost(&mut self, why: &str) {
        drop(self.link.take());
        if self.session.is_none() {
            return;
        }
        self.lost_at.get_or_insert_with(Instant::now);
        let delay = self.opts.backoff.delay(0);
        warn!(
            "connection to the relay lost ({why}); resuming in {:.1}s",
            delay.as_secs_f64()
        );
        self.retry = Some((Instant::now() + delay, 0));
    }

    /// The session cannot continue: answer everything it had in flight, forget it. A new
    /// session is opened when there is something to send.
    async fn session_lost(&mut self, why: &str) {
        drop(self.link.take());
        self.lost_sessions += 1;
        // Messages never written to a connection cannot have reached the old session: they go
        // to the new one, ahead of anything held since.
        let never_sent = self.outbox.take_never_sent();
        for line in never_sent.iter().rev() {
            if let Ok(Kind::Request { id, .. }) = jsonrpc::classify(line) {
                if is_reinit_id(&id) {
                    continue; // our own replayed handshake: a new session replays it afresh
                }
                self.pending.remove(&id);
            }
            self.held.push_front(line.clone());
        }
        let mut ids: Vec<Id> = self.pending.drain().collect();
        if !ids.is_empty() {
            warn!(
                "{why}; answering {} request(s) in flight with an error",
                ids.len()
            );
        } else {
            warn!("{why}");
        }
        ids.sort_by_key(|id| id.to_string());
        let message = format!("{why}; the request's outcome is unknown, retry it");
        for id in ids {
            self.answer(&id, jsonrpc::RELAY_UNAVAILABLE, &message).await;
        }
        if self
            .session_started
            .is_some_and(|t| t.elapsed() < QUICK_FAILURE)
        {
            self.quick_failures += 1;
        } else {
            self.quick_failures = 0;
        }
        self.session_started = None;
        if self.quick_failures >= MAX_QUICK_FAILURES {
            // Sessions keep dying at once: do not start another for what is queued; answer it.
            let message =
                format!("{why}; not retried: the last sessions ended right after they opened");
            self.fail_queued(&message).await;
        }
        // What reached the old session is gone with it (its requests were just answered).
        self.outbox = Outbox::new(1024, 4 * self.opts.max_message_size.max(1 << 20));
        self.inbox = Inbox::default();
        self.session = None;
        self.lost_at = None;
        self.retry = None;
        self.reinit = None;
        self.draining = false;
        self.ack_at = None;
    }

    /// One connection attempt: resume the session if we have one, else open a new one.
    async fn attempt(&mut self) {
        let attempt = self.retry.map_or(0, |(_, n)| n);
        if let (Some(s), Some(lost)) = (&self.session, self.lost_at) {
            if lost.elapsed() > s.resume_window {
                let window = shared::human_duration(s.resume_window);
                self.session_lost(&format!(
                    "the relay could not be reached within the {window} resume window"
                ))
                .await;
                return;
            }
        }
        let resume = self
            .session
            .as_ref()
            .map(|s| (s.id.clone(), self.inbox.last()));
        // After stdin EOF the whole exit must fit the IDE's patience: bound the attempt by it.
        let limit = match self.eof_deadline {
            Some(d) => d
                .saturating_duration_since(Instant::now())
                .min(CONNECT_TIMEOUT),
            None => CONNECT_TIMEOUT,
        };
        let outcome = tokio::time::timeout(
            limit,
            connect::connect(
                self.opts,
                resume.as_ref().map(|(id, seq)| (id.as_str(), *seq)),
                self.lost_sessions > 0,
            ),
        )
        .await;
        let outcome = match outcome {
            Ok(r) => r,
            Err(_) => Err(ClientError::Unreachable {
                url: self.opts.url.clone(),
                reason: format!("no answer within {}", shared::human_duration(limit)),
            }),
        };
        match outcome {
            Ok((conn, welcome)) if welcome.resumed => {
                let away = self.lost_at.map(|t| t.elapsed()).unwrap_or_default();
                if let Err(e) = self.outbox.rewind(welcome.last_seq) {
                    drop(conn);
                    self.session_lost(&format!("the relay's resume point is wrong ({e})"))
                        .await;
                    return;
                }
                self.attach(conn, &welcome);
                warn!(
                    "resumed the session after {} ms away; replaying {} message(s)",
                    away.as_millis(),
                    self.outbox.len()
                );
            }
            Ok((conn, welcome)) => {
                if self.session.is_some() {
                    // Asked to resume, got a new session: the old one is gone.
                    self.session_lost("the session could not be resumed").await;
                }
                self.attach(conn, &welcome);
                self.start_session();
            }
            Err(ClientError::Refused { status, reason, .. })
                if resume.is_some() && (400..500).contains(&status) =>
            {
                self.session_lost(&format!(
                    "the session could not be resumed: HTTP {status}: {reason}"
                ))
                .await;
                if status == 404 || status == 410 {
                    // Gone (relay restarted, window passed): open a new session right away.
                    self.retry = Some((Instant::now(), 0));
                } else {
                    // Refused outright (credentials revoked, say): answer what waits, and try
                    // again only when the IDE sends something new.
                    self.fail_queued(&format!("HTTP {status}: {reason}")).await;
                }
            }
            Err(e) if e.is_transient() && (self.session.is_some() || attempt < 3) => {
                let delay = self.opts.backoff.delay(attempt + 1);
                warn!("{e}; retrying in {:.1}s", delay.as_secs_f64());
                self.retry = Some((Instant::now() + delay, attempt + 1));
            }
            Err(e) => {
                warn!("{e}");
                if self.session.is_some() {
                    self.session_lost(&e.to_string()).await;
                }
                // No session and no luck: answer what the IDE is waiting for; the next message
                // from the IDE tries again.
                self.retry = None;
                self.fail_queued(&e.to_string()).await;
            }
        }
    }

    /// A new session is up: replay the IDE's handshake if it used one.
    fn start_session(&mut self) {
        self.session_started = Some(Instant::now());
        // Anything queued while there was no session must follow the handshake.
        let queued: Vec<Bytes> = std::iter::from_fn(|| {
            let next = self.outbox.next_to_send().map(|(s, p)| (s, p.clone()));
            next.map(|(seq, p)| {
                self.outbox.mark_sent(seq);
                p
            })
        })
        .collect();
        self.outbox = Outbox::new(1024, 4 * self.opts.max_message_size.max(1 << 20));
        self.pending.clear();
        for (i, line) in queued.into_iter().enumerate() {
            self.held.insert(i, line);
        }
        // If the IDE's own initialize never reached a session, it is among the held messages and
        // goes out itself: replaying it too would initialize twice.
        let replay = self
            .handshake
            .initialize
            .clone()
            .filter(|init| !self.held.iter().any(|held| held == init));
        match replay {
            Some(init) => match with_id(&init, &self.next_reinit_id()) {
                Some((line, id)) => {
                    info!("new session: replaying the IDE's initialize");
                    self.outbox.push(line);
                    self.reinit = Some((id, Instant::now() + REINIT_WAIT));
                }
                None => self.release_held(),
            },
            None => self.release_held(),
        }
        warn!("opened a new session with the relay");
    }

    fn next_reinit_id(&mut self) -> Id {
        self.reinit_count += 1;
        Id::Str(format!("{REINIT_PREFIX}{}", self.reinit_count).into())
    }

    /// Answers every request queued (not yet sent) or held with `why`.
    async fn fail_queued(&mut self, why: &str) {
        let mut lines: Vec<Bytes> = self.held.drain(..).collect();
        while let Some((seq, p)) = self.outbox.next_to_send().map(|(s, p)| (s, p.clone())) {
            self.outbox.mark_sent(seq);
            lines.push(p);
        }
        self.outbox = Outbox::new(1024, 4 * self.opts.max_message_size.max(1 << 20));
        self.pending.clear();
        for line in lines {
            if let Ok(Kind::Request { id, .. }) = jsonrpc::classify(&line) {
                self.answer(&id, jsonrpc::RELAY_UNAVAILABLE, why).await;
            }
        }
    }

    async fn answer(&self, id: &Id, code: i64, message: &str) {
        if is_reinit_id(id) {
            return; // the IDE never asked this
        }
        let body = jsonrpc::error_response(Some(id), code, message, None);
        let _ = self.out.send(Bytes::from(body)).await;
    }
}

/// Ids of replayed `initialize` requests start with this; the IDE never sees them.
const REINIT_PREFIX: &str = "mcp-bridge-reinit-";

fn is_reinit_id(id: &Id) -> bool {
    matches!(id, Id::Str(s) if s.starts_with(REINIT_PREFIX))
}

/// A copy of `kind` that does not borrow the message.
fn kind_owned(kind: Kind<'_>) -> Kind<'static> {
    match kind {
        Kind::Request { id, method } => Kind::Request {
            id,
            method: method.into_owned().into(),
        },
        Kind::Notification { method } => Kind::Notification {
            method: method.into_owned().into(),
        },
        Kind::Response { id, is_error } => Kind::Response { id, is_error },
    }
}

/// `msg` with its `id` replaced (only for the replayed `initialize`, so the one re-serialization
/// on this path is off the hot path).
fn with_id(msg: &[u8], id: &Id) -> Option<(Bytes, Id)> {
    let mut value: serde_json::Value = serde_json::from_slice(msg).ok()?;
    let raw = id.to_json()?;
    let id_value: serde_json::Value = serde_json::from_str(raw.get()).ok()?;
    value.as_object_mut()?.insert("id".to_owned(), id_value);
    let bytes = serde_json::to_vec(&value).ok()?;
    Some((Bytes::from(bytes), id.clone()))
}

async fn read_input<R, S>(input: R, max: usize, tx: mpsc::Sender<Frame>, stop: S)
where
    R: AsyncRead + Unpin,
    S: std::future::Future<Output = ()>,
{
    let mut reader = LineReader::new(input, max);
    let mut stop = std::pin::pin!(stop);
    loop {
        let next = tokio::select! {
            next = reader.next_frame() => next,
            () = &mut stop => {
                info!("asked to stop; ending the session as at the end of stdin");
                return;
            }
        };
        match next {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        for n in 0..10 {
            let d = b.delay(n);
            let base = (100u64 << n).min(2000);
            assert!(
                d >= Duration::from_millis(base / 2) && d <= Duration::from_millis(base),
                "{n}: {d:?}"
            );
        }
    }

    #[test]
    fn replayed_initialize_gets_its_own_id() {
        let init = br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}"#;
        let id = Id::Str("mcp-bridge-reinit-1".into());
        let (line, got) = with_id(init, &id).expect("rewritten");
        assert_eq!(got, id);
        let v: serde_json::Value = serde_json::from_slice(&line).expect("json");
        assert_eq!(v["id"], "mcp-bridge-reinit-1");
        assert_eq!(v["params"]["protocolVersion"], "2025-06-18");
    }
}

//! One relay session: a tool process on one side, and on the other a client that may come and
//! go (subprotocol `mcp-bridge.v1`) or stays for the session's life (plain `mcp`).
//!
//! The session owns the tool, the buffer of messages the client has not acknowledged, and the
//! table of the client's requests in flight, so that every request gets exactly one answer even
//! when the tool dies, the client is away, or the relay shuts down. It does not authenticate,
//! route or spawn: the HTTP layer does that and hands connections in.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::process::{ChildStderr, ChildStdin, ChildStdout};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use shared::conn::{recv, reserve, Conn, ConnEvent, Link};
use shared::framing::{self, Frame, LineReader};
use shared::jsonrpc::{self, ClassifyError, Id, Kind, Oversize};
use shared::tunnel::{self, Control, Inbox, Outbox, Received, PROTOCOL_VERSION};

use crate::child::{self, ToolProcess};
use crate::config::{Limits, ToolConfig};
use crate::metrics::{self, Direction, ExitLabels, Flow, MethodLabels, Metrics, ToolLabel};
use prometheus_client::metrics::histogram::Histogram;

/// Messages queued for the tool's stdin before the session stops reading from the client.
const TOOL_QUEUE: usize = 64;

/// Most data frames held back (unacknowledged) while the tool's queue is full; a client's
/// window is 1,024, so a compliant client never reaches this.
const STASH_MESSAGES: usize = 4096;

/// After the tool's stdout closes, how long to wait for its exit status before ending it.
const EXIT_STATUS_WAIT: Duration = Duration::from_millis(300);

/// How long to wait for queued frames and the close frame to reach a departing client.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Send a standalone ack after this many unacknowledged messages, or after [`ACK_DELAY`].
const ACK_EVERY: u64 = 32;
const ACK_DELAY: Duration = Duration::from_millis(5);

/// How many ended sessions are remembered, so a returning client learns why its session ended.
const TOMBSTONES: usize = 4096;

/// The framing of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wire {
    /// Subprotocol `mcp`: one JSON-RPC message per text frame; the session ends with the connection.
    Plain,
    /// Subprotocol `mcp-bridge.v1`: numbered data frames, acks, control messages, resume.
    V1,
}

/// A client connection being handed to an existing session.
pub(crate) struct Attach {
    pub(crate) conn: Conn,
    /// The highest sequence number the client says it received from the relay.
    pub(crate) last_seq: u64,
}

/// Relay-wide table of live sessions, and the reasons recent ones ended.
#[derive(Default)]
pub(crate) struct Registry {
    live: Mutex<HashMap<String, Entry>>,
    /// (session id, user, why it ended), newest last.
    ended: Mutex<VecDeque<(String, String, String)>>,
}

struct Entry {
    tool: String,
    /// The principal that opened the session; only it may resume it.
    user: String,
    attach: mpsc::Sender<Attach>,
}

/// The session limits a new session must fit in.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SessionLimits {
    pub(crate) total: usize,
    pub(crate) per_user: usize,
    pub(crate) per_tool: Option<usize>,
}

/// Which limit a new session would pass, and its value.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Over {
    User(usize),
    Relay(usize),
    Tool(usize),
}

/// Why a resume cannot happen.
pub(crate) enum ResumeRefusal {
    /// The session ended; the reason is known.
    Ended(String),
    /// Never heard of it (the relay restarted, or it ended long ago, or another node has it).
    Unknown,
    /// It exists but for another tool or another user (answered like `Unknown`, so nobody
    /// learns that someone else's session exists).
    NotYours,
}

impl Registry {
    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether no session is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.live().is_empty()
    }

    /// Registers a new session unless that would pass a limit; the check and the insert happen
    /// under one lock.
    pub(crate) fn try_insert(
        &self,
        id: &str,
        tool: &str,
        user: &str,
        attach: mpsc::Sender<Attach>,
        limits: SessionLimits,
    ) -> Result<(), Over> {
        let mut live = self.live();
        if live.values().filter(|e| e.user == user).count() >= limits.per_user {
            return Err(Over::User(limits.per_user));
        }
        if live.len() >= limits.total {
            return Err(Over::Relay(limits.total));
        }
        if let Some(max) = limits.per_tool {
            if live.values().filter(|e| e.tool == tool).count() >= max {
                return Err(Over::Tool(max));
            }
        }
        live.insert(
            id.to_owned(),
            Entry {
                tool: tool.to_owned(),
                user: user.to_owned(),
                attach,
            },
        );
        Ok(())
    }

    /// The way to hand a connection to session `id` of `tool`.
    pub(crate) fn attach_handle(
        &self,
        id: &str,
        tool: &str,
        user: &str,
    ) -> Result<mpsc::Sender<Attach>, ResumeRefusal> {
        if let Some(entry) = self.live().get(id) {
            return if entry.tool == tool && entry.user == user {
                Ok(entry.attach.clone())
            } else {
                Err(ResumeRefusal::NotYours)
            };
        }
        let ended = self.ended.lock().unwrap_or_else(PoisonError::into_inner);
        match ended.iter().rev().find(|(sid, _, _)| sid == id) {
            Some((_, owner, reason)) if owner == user => Err(ResumeRefusal::Ended(reason.clone())),
            // Someone else's ended session: as unknown as a live one would be.
            _ => Err(ResumeRefusal::Unknown),
        }
    }

    /// The reason session `id` ended, if it did.
    pub(crate) fn ended_reason(&self, id: &str) -> Option<String> {
        let ended = self.ended.lock().unwrap_or_else(PoisonError::into_inner);
        ended
            .iter()
            .rev()
            .find(|(sid, _, _)| sid == id)
            .map(|(_, _, r)| r.clone())
    }

    /// Forgets a session that never started (its upgrade failed).
    pub(crate) fn end_quietly(&self, id: &str) {
        self.live().remove(id);
    }

    fn end(&self, id: &str, reason: &str) {
        let user = self.live().remove(id).map(|e| e.user).unwrap_or_default();
        let mut ended = self.ended.lock().unwrap_or_else(PoisonError::into_inner);
        if ended.len() >= TOMBSTONES {
            ended.pop_front();
        }
        ended.push_back((id.to_owned(), user, reason.to_owned()));
    }
}

/// The relay's two shutdown stages, shared by every session.
#[derive(Clone, Debug, Default)]
pub(crate) struct Shutdown {
    /// Stop taking new work; let calls in flight finish.
    pub(crate) drain: CancellationToken,
    /// End everything now.
    pub(crate) force: CancellationToken,
}

/// What a session needs besides its tool and first connection.
pub(crate) struct Params {
    pub(crate) id: String,
    /// The authenticated user (for audit events).
    pub(crate) user: String,
    pub(crate) tool: Arc<ToolConfig>,
    pub(crate) wire: Wire,
    pub(crate) limits: Limits,
    pub(crate) shutdown: Shutdown,
    pub(crate) registry: Arc<crate::session::Registry>,
    pub(crate) metrics: Arc<Metrics>,
}

/// Something the tool's stdout reader hands over.
struct ToolMsg {
    bytes: Bytes,
    /// For a response: the client request it answers.
    answers: Option<Id>,
    /// Whether that response is an error.
    is_error: bool,
}

/// A client request in flight, as the audit log describes it.
struct Call {
    method: String,
    tool_name: Option<String>,
    started: Instant,
}

/// The first 8 hex digits of a session id: enough to follow a session in the logs, too few to
/// take it over.
pub(crate) fn short_id(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// Runs a session to its end. Owns the tool process and always reaps it.
pub(crate) async fn run(
    p: Params,
    mut tool_proc: ToolProcess,
    first: Conn,
    mut attach_rx: mpsc::Receiver<Attach>,
) {
    let started = Instant::now();
    let (to_tool, to_tool_rx) = mpsc::channel::<Bytes>(TOOL_QUEUE);
    let (tool_tx, mut tool_rx) = mpsc::channel::<ToolMsg>(TOOL_QUEUE);
    if let Some(stdin) = tool_proc.stdin.take() {
        tokio::spawn(write_tool(stdin, to_tool_rx).in_current_span());
    }
    if let Some(stderr) = tool_proc.stderr.take() {
        tokio::spawn(log_stderr(stderr).in_current_span());
    }
    if let Some(stdout) = tool_proc.stdout.take() {
        tokio::spawn(read_tool(stdout, p.tool.clone(), tool_tx, to_tool.clone()).in_current_span());
    }

    let tool_label = ToolLabel {
        tool: p.tool.name.clone(),
    };
    p.metrics.sessions_total.get_or_create(&tool_label).inc();
    p.metrics.sessions_active.get_or_create(&tool_label).inc();
    let to_client_flow = p.metrics.flow(&p.tool.name, Direction::ToClient);
    let mut s = State {
        to_tool_flow: p.metrics.flow(&p.tool.name, Direction::ToTool),
        latency: HashMap::new(),
        outbox: Outbox::new(
            p.limits.resume_buffer_messages,
            p.limits.resume_buffer_bytes,
        ),
        inbox: Inbox::default(),
        to_tool_q: VecDeque::new(),
        stash: VecDeque::new(),
        stash_bytes: 0,
        pending: HashMap::new(),
        tool_gone: None,
        draining: false,
        last_activity: Instant::now(),
        ack_at: None,
        p: &p,
    };
    let mut link = Link::default();
    link.set(first);
    if p.wire == Wire::V1 {
        s.welcome(&link, false).await;
    }
    let mut detached_at: Option<Instant> = None;
    let far = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);

    let end_reason: String = loop {
        if let Some(gone) = &s.tool_gone {
            if s.pending.is_empty() && link.is_up() && s.outbox.all_sent() {
                break gone.clone();
            }
        }
        if s.draining && s.pending.is_empty() {
            break "the relay is shutting down".to_owned();
        }
        if detached_at.is_some() && !s.outbox.has_room(1) {
            break format!(
                "the tool's output while the client was away filled the resume buffer ({} messages / {})",
                p.limits.resume_buffer_messages,
                shared::human_bytes(p.limits.resume_buffer_bytes)
            );
        }
        let resume_deadline = detached_at.map_or(far, |t| t + p.limits.resume_window);
        let idle_deadline = match p.limits.idle_timeout {
            Some(idle) if s.pending.is_empty() => s.last_activity + idle,
            _ => far,
        };
        let ack_deadline = s.ack_at.unwrap_or(far);
        let ack_now = s.ack_at.is_some_and(|t| t <= Instant::now());
        let want_send = link.is_up() && (!s.outbox.all_sent() || ack_now);
        // v1: always read (acks must get through; data waits in the stash); plain: stop when
        // the tool's queue is full (backpressure on the socket).
        let can_read_client = match p.wire {
            Wire::V1 => s.stash.len() < STASH_MESSAGES,
            Wire::Plain => s.to_tool_q.len() < TOOL_QUEUE,
        };
        let can_read_tool = s.tool_gone.is_none() && (!link.is_up() || s.outbox.has_room(1));

        tokio::select! {
            biased;
            () = p.shutdown.force.cancelled() => break "the relay is shutting down".to_owned(),
            () = p.shutdown.drain.cancelled(), if !s.draining => {
                s.draining = true;
                if p.wire == Wire::V1 {
                    send_control(&link, &Control::Drain { reason: "the relay is shutting down".into() }).await;
                }
            }
            attach = attach_rx.recv() => {
                let Some(attach) = attach else { continue };
                drop(link.take());
                match s.outbox.rewind(attach.last_seq) {
                    Ok(()) => {
                        link.set(attach.conn);
                        s.inbox.reset_acked();
                        s.ack_at = None;
                        s.welcome(&link, true).await;
                        if s.draining {
                            send_control(&link, &Control::Drain { reason: "the relay is shutting down".into() }).await;
                        }
                        info!(
                            away_ms = detached_at.map(|t| t.elapsed().as_millis() as u64).unwrap_or(0),
                            replay = s.outbox.len(),
                            "client resumed the session"
                        );
                        detached_at = None;
                    }
                    Err(e) => {
                        // The client's view and ours disagree: nothing can be replayed safely.
                        let reason = format!("cannot resume: {e}");
                        warn!("{reason}");
                        end_conn(attach.conn, p.wire, &reason).await;
                        break reason;
                    }
                }
            }
            msg = tool_rx.recv(), if can_read_tool => match msg {
                Some(msg) => {
                    s.last_activity = Instant::now();
                    to_client_flow.record(msg.bytes.len());
                    if let Some(id) = &msg.answers {
                        if let Some(call) = s.pending.remove(id) {
                            s.observe(&call);
                            s.audit(&call, if msg.is_error { "error" } else { "ok" });
                        }
                    }
                    s.outbox.push(msg.bytes);
                }
                None => {
                    let (what, clean) = tool_exit(&mut tool_proc, &p).await;
                    let how = if clean { "exited" } else { "crashed" };
                    p.metrics.tool_exits.get_or_create(&ExitLabels { tool: p.tool.name.clone(), how }).inc();
                    warn!("tool `{}` {what}", p.tool.name);
                    let message = format!("tool `{}` {what} before answering", p.tool.name);
                    s.fail_pending(jsonrpc::TOOL_EXITED, &message);
                    s.tool_gone = Some(format!("tool `{}` {what}", p.tool.name));
                }
            },
            permit = reserve(link.tx.clone()), if want_send => match permit {
                Some(permit) if s.outbox.all_sent() => {
                    permit.send(Message::Binary(tunnel::encode_ack(s.inbox.last())));
                    s.inbox.acked();
                    s.ack_at = None;
                }
                Some(permit) => s.send_next(permit),
                None => {
                    // The writer is gone: treat it as the connection closing (no spinning).
                    drop(link.take());
                    if p.wire == Wire::Plain {
                        break "client left (connection closed)".to_owned();
                    }
                    detached_at = Some(Instant::now());
                }
            },
            () = tokio::time::sleep_until(ack_deadline), if s.ack_at.is_some() && !ack_now => {
                // Wakes the loop so the send branch writes the ack.
            }
            ev = recv(&mut link.rx), if can_read_client => match ev {
                Some(ConnEvent::Message(Message::Close(_))) => {}
                Some(ConnEvent::Message(msg)) => {
                    s.last_activity = Instant::now();
                    match s.on_client(msg) {
                        Ok(()) => {}
                        Err(ClientStep::Ended(reason)) => break reason,
                        Err(ClientStep::Broken(reason)) => {
                            warn!("{reason}; dropping the connection");
                            drop(link.take());
                            if p.wire == Wire::Plain {
                                break reason;
                            }
                            detached_at = Some(Instant::now());
                        }
                    }
                }
                Some(ConnEvent::Fatal(why)) => {
                    warn!("{why}; ending the session");
                    drop(link.take());
                    break format!("the client broke a limit: {why}");
                }
                Some(ConnEvent::Closed(why)) => {
                    drop(link.take());
                    if p.wire == Wire::Plain {
                        break format!("client left ({why})");
                    }
                    info!(%why, window = %shared::human_duration(p.limits.resume_window), "client away; keeping the session for a resume");
                    detached_at = Some(Instant::now());
                }
                None => {
                    drop(link.take());
                    if p.wire == Wire::Plain {
                        break "client left".to_owned();
                    }
                    detached_at = Some(Instant::now());
                }
            },
            permit = to_tool.reserve(), if !s.to_tool_q.is_empty() => {
                match permit {
                    Ok(permit) => {
                        if let Some(msg) = s.to_tool_q.pop_front() {
                            permit.send(msg);
                        }
                        if let Err(ClientStep::Ended(reason) | ClientStep::Broken(reason)) = s.drain_stash() {
                            break reason;
                        }
                    }
                    // stdin is gone: the tool is exiting, and its stdout closing ends the wait.
                    Err(_) => s.to_tool_q.clear(),
                }
            }
            () = tokio::time::sleep_until(resume_deadline), if detached_at.is_some() => {
                break format!(
                    "the client was away longer than the resume window ({})",
                    shared::human_duration(p.limits.resume_window)
                );
            }
            () = tokio::time::sleep_until(idle_deadline), if idle_deadline < far => {
                break format!(
                    "idle for {} with no message either way",
                    shared::human_duration(p.limits.idle_timeout.unwrap_or_default())
                );
            }
        }
    };

    // Answer what is still in flight, tell the client (if it is here), end the tool.
    let code = if s.tool_gone.is_some() {
        jsonrpc::TOOL_EXITED
    } else {
        jsonrpc::RELAY_UNAVAILABLE
    };
    s.fail_pending(code, &format!("{end_reason}; the request was not answered"));
    drop(to_tool);
    p.registry.end(&p.id, &end_reason);
    if let Some(conn) = link.take() {
        // Flush what the client has not been sent yet (answers, errors), then the end notice.
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            while !s.outbox.all_sent() {
                match conn.tx.clone().reserve_owned().await {
                    Ok(permit) => s.send_next(permit),
                    Err(_) => break,
                }
            }
        })
        .await;
        end_conn(conn, p.wire, &end_reason).await;
    }
    if s.tool_gone.is_none() {
        match child::terminate(&mut tool_proc.child, tool_proc.pgid, p.limits.kill_grace).await {
            Ok(status) => debug!("tool {}", child::describe_exit(&status)),
            Err(e) => warn!("could not reap the tool: {e}"),
        }
        p.metrics
            .tool_exits
            .get_or_create(&ExitLabels {
                tool: p.tool.name.clone(),
                how: "ended",
            })
            .inc();
    }
    p.metrics.sessions_active.get_or_create(&tool_label).dec();
    p.metrics
        .session_duration
        .get_or_create(&tool_label)
        .observe(started.elapsed().as_secs_f64());
    info!(
        target: "audit",
        event = "session_ended",
        user = %p.user,
        reason = ?end_reason,
        duration_ms = started.elapsed().as_millis() as u64,
        "session ended"
    );
}

/// Learns how the tool ended after its stdout closed (and whether cleanly); ends it if it is
/// still running.
async fn tool_exit(tool_proc: &mut ToolProcess, p: &Params) -> (String, bool) {
    match tokio::time::timeout(EXIT_STATUS_WAIT, tool_proc.child.wait()).await {
        Ok(Ok(status)) => {
            // Helpers it started (in its process group) go with it.
            child::kill_group(tool_proc.pgid, nix::sys::signal::Signal::SIGKILL);
            (child::describe_exit(&status), status.success())
        }
        _ => {
            match child::terminate(&mut tool_proc.child, tool_proc.pgid, p.limits.kill_grace).await
            {
                // Closed its stdout but kept running: it can no longer answer, so it was ended.
                Ok(status) => (
                    format!("closed its stdout and {}", child::describe_exit(&status)),
                    false,
                ),
                Err(_) => ("closed its stdout".to_owned(), false),
            }
        }
    }
}

/// Sends a control message on the connection, if there is one.
async fn send_control(link: &Link, c: &Control) {
    if let Some(tx) = &link.tx {
        let _ = tx.send(Message::Binary(tunnel::encode_control(c))).await;
    }
}

/// Sends the end notice (v1) and a close frame, then drops the connection.
async fn end_conn(conn: Conn, wire: Wire, reason: &str) {
    let mut last = Vec::new();
    if wire == Wire::V1 {
        last.push(Message::Binary(tunnel::encode_control(&Control::End {
            reason: reason.to_owned(),
        })));
    }
    let code = if reason.starts_with("tool `") {
        CloseCode::Error
    } else if reason.contains("shutting down") {
        CloseCode::Away
    } else {
        CloseCode::Normal
    };
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from(truncate_reason(reason)),
    };
    conn.close(last, Some(frame), CLOSE_WAIT).await;
}

/// Why handling a client message stopped the connection or the session.
enum ClientStep {
    /// The client ended the session on purpose.
    Ended(String),
    /// The connection broke the protocol; resume may still work.
    Broken(String),
}

/// The per-session bookkeeping that the loop's branches share.
struct State<'a> {
    p: &'a Params,
    /// Tool → client messages the client has not acknowledged (also the send queue).
    outbox: Outbox,
    /// Client → tool sequence numbers.
    inbox: Inbox,
    /// Client → tool messages waiting for room in the tool's stdin queue.
    to_tool_q: VecDeque<Bytes>,
    /// Data frames read (for their acks) while `to_tool_q` was full; not acknowledged yet.
    stash: VecDeque<(u64, Bytes)>,
    stash_bytes: usize,
    /// Client requests the tool has not answered, with what the audit log needs.
    pending: HashMap<Id, Call>,
    /// Set when the tool has exited: how, in words.
    tool_gone: Option<String>,
    draining: bool,
    last_activity: Instant,
    /// When a standalone ack is due.
    ack_at: Option<Instant>,
    /// Client → tool message counters.
    to_tool_flow: Flow,
    /// Request latency histograms by method, looked up once per method per session.
    latency: HashMap<&'static str, Histogram>,
}

impl State<'_> {
    async fn welcome(&self, link: &Link, resumed: bool) {
        send_control(
            link,
            &Control::Welcome {
                version: PROTOCOL_VERSION,
                session: self.p.id.clone(),
                resumed,
                last_seq: self.inbox.last(),
                resume_window_ms: self.p.limits.resume_window.as_millis() as u64,
            },
        )
        .await;
    }

    /// Writes the next unsent outbox message into a reserved slot of the connection.
    fn send_next(&mut self, permit: mpsc::OwnedPermit<Message>) {
        let Some((seq, payload)) = self.outbox.next_to_send() else {
            return;
        };
        let msg = match self.p.wire {
            Wire::V1 => {
                let frame = tunnel::encode_data(seq, self.inbox.last(), payload);
                self.inbox.acked();
                self.ack_at = None;
                Message::Binary(frame)
            }
            Wire::Plain => match Utf8Bytes::try_from(payload.clone()) {
                Ok(text) => Message::Text(text),
                Err(_) => Message::Binary(payload.clone()),
            },
        };
        permit.send(msg);
        self.outbox.mark_sent(seq);
        if self.p.wire == Wire::Plain {
            // No acks on a plain connection: what is written is gone.
            let _ = self.outbox.ack(seq);
        }
    }

    /// Queues an error response for the client.
    fn reply(&mut self, id: Option<&Id>, code: i64, message: &str) {
        let body = jsonrpc::error_response(id, code, message, None);
        self.outbox.push(Bytes::from(body));
    }

    fn fail_pending(&mut self, code: i64, message: &str) {
        let mut calls: Vec<(Id, Call)> = self.pending.drain().collect();
        calls.sort_by_key(|(id, _)| id.to_string());
        let outcome = if code == jsonrpc::TOOL_EXITED {
            "tool_exited"
        } else {
            "session_ended"
        };
        for (id, call) in calls {
            self.audit(&call, outcome);
            self.reply(Some(&id), code, message);
        }
    }

    /// Records a request's latency under its method.
    fn observe(&mut self, call: &Call) {
        let method = metrics::method_label(&call.method);
        let metrics = &self.p.metrics;
        let tool = &self.p.tool.name;
        self.latency
            .entry(method)
            .or_insert_with(|| {
                metrics
                    .request_duration
                    .get_or_create(&MethodLabels {
                        tool: tool.clone(),
                        method: method.to_owned(),
                    })
                    .clone()
            })
            .observe(call.started.elapsed().as_secs_f64());
    }

    /// One audit event per finished client request: who, which session and tool, which method
    /// (and tool name for `tools/call`), how long, and how it ended. Never the payload.
    fn audit(&self, call: &Call, outcome: &str) {
        info!(
            target: "audit",
            event = "call",
            user = %self.p.user,
            session = %short_id(&self.p.id),
            tool = %self.p.tool.name,
            method = ?call.method,
            tool_name = ?call.tool_name.as_deref().unwrap_or(""),
            duration_ms = call.started.elapsed().as_millis() as u64,
            outcome,
            "call finished"
        );
    }

    /// Handles one message from the client connection.
    fn on_client(&mut self, msg: Message) -> Result<(), ClientStep> {
        let raw: Bytes = match msg {
            Message::Text(t) => t.into(),
            Message::Binary(b) => b,
            _ => return Ok(()),
        };
        let payload = match self.p.wire {
            Wire::Plain => raw,
            Wire::V1 => match tunnel::decode(raw) {
                Ok(tunnel::Frame::Data { seq, ack, payload }) => {
                    // The ack is always taken in, whether or not the data can be yet: acks must
                    // keep flowing while the tool is busy, or both ends wait on each other.
                    self.on_ack(ack)?;
                    if !self.stash.is_empty() || self.to_tool_q.len() >= TOOL_QUEUE {
                        return self.stash_data(seq, payload);
                    }
                    return self.accept_data(seq, payload);
                }
                Ok(tunnel::Frame::Ack { ack }) => return self.on_ack(ack),
                Ok(tunnel::Frame::Control(Control::End { reason })) => {
                    return Err(ClientStep::Ended(format!(
                        "client ended the session ({reason})"
                    )))
                }
                Ok(tunnel::Frame::Control(other)) => {
                    debug!("ignoring control message from client: {other:?}");
                    return Ok(());
                }
                Err(e) => return Err(ClientStep::Broken(format!("bad frame from client: {e}"))),
            },
        };
        self.on_client_message(payload);
        Ok(())
    }

    /// Takes in one data frame in order: deduplicates, schedules the ack, forwards.
    fn accept_data(&mut self, seq: u64, payload: Bytes) -> Result<(), ClientStep> {
        match self.inbox.receive(seq) {
            Received::New => {}
            Received::Duplicate => return Ok(()),
            Received::Gap { expected } => {
                return Err(ClientStep::Broken(format!(
                    "client skipped from {expected} to {seq}"
                )))
            }
        }
        if self.inbox.unacked() >= ACK_EVERY {
            self.ack_at = Some(Instant::now());
        } else if self.ack_at.is_none() {
            self.ack_at = Some(Instant::now() + ACK_DELAY);
        }
        self.on_client_message(payload);
        Ok(())
    }

    /// Keeps a data frame for later (not acknowledged yet) while the tool's queue is full.
    /// A client sends at most its window unacknowledged, so this stays bounded; one that
    /// sends more breaks the protocol.
    fn stash_data(&mut self, seq: u64, payload: Bytes) -> Result<(), ClientStep> {
        let cap_bytes = (4 * self.p.tool.max_message_size).max(64 * 1024 * 1024);
        if self.stash.len() >= STASH_MESSAGES || self.stash_bytes + payload.len() > cap_bytes {
            return Err(ClientStep::Ended(
                "the client sent more than its window without acknowledgement".to_owned(),
            ));
        }
        self.stash_bytes += payload.len();
        self.stash.push_back((seq, payload));
        Ok(())
    }

    /// Moves stashed data frames on while the tool's queue has room.
    fn drain_stash(&mut self) -> Result<(), ClientStep> {
        while self.to_tool_q.len() < TOOL_QUEUE {
            let Some((seq, payload)) = self.stash.pop_front() else {
                break;
            };
            self.stash_bytes -= payload.len();
            self.accept_data(seq, payload)?;
        }
        Ok(())
    }

    fn on_ack(&mut self, ack: u64) -> Result<(), ClientStep> {
        self.outbox
            .ack(ack)
            .map_err(|e| ClientStep::Broken(e.to_string()))
    }

    /// Classifies a JSON-RPC message from the client; queues it for the tool or answers it.
    fn on_client_message(&mut self, bytes: Bytes) {
        let tool = &self.p.tool;
        if bytes.len() > tool.max_message_size {
            let message = format!(
                "message of {} exceeds the relay's limit of {} for tool `{}`",
                shared::human_bytes(bytes.len()),
                shared::human_bytes(tool.max_message_size),
                tool.name
            );
            warn!("{message}");
            match jsonrpc::oversize(&bytes, &message) {
                Oversize::Request { error, .. } => {
                    self.outbox.push(Bytes::from(error));
                }
                // The client's answer to a tool's request: the tool must still get an answer.
                Oversize::Response { error, .. } => self.to_tool_q.push_back(Bytes::from(error)),
                Oversize::Other => {}
            }
            return;
        }
        match jsonrpc::classify(&bytes) {
            Ok(Kind::Request { id, method }) => {
                if let Some(gone) = &self.tool_gone {
                    let message = format!("{gone}; the request was not delivered");
                    self.reply(Some(&id), jsonrpc::TOOL_EXITED, &message);
                    return;
                }
                let tool_name = if method == "tools/call" {
                    jsonrpc::tool_call_name(&bytes)
                } else {
                    None
                };
                let call = Call {
                    method: method.into_owned(),
                    tool_name,
                    started: Instant::now(),
                };
                self.pending.insert(id, call);
            }
            Ok(Kind::Notification { method }) => {
                if method == "notifications/cancelled" {
                    if let Some(id) = jsonrpc::cancelled_request_id(&bytes) {
                        if let Some(call) = self.pending.remove(&id) {
                            self.audit(&call, "cancelled");
                        }
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
                    self.outbox.push(Bytes::from(body));
                }
                return;
            }
            Err(e) => {
                let info = jsonrpc::scan_head(&bytes);
                let code = match e {
                    ClassifyError::Parse(_) => jsonrpc::PARSE_ERROR,
                    _ => jsonrpc::INVALID_REQUEST,
                };
                debug!(error = %e, "client sent an unusable message");
                self.reply(info.id.as_ref(), code, &e.to_string());
                return;
            }
        }
        if self.tool_gone.is_none() {
            self.to_tool_flow.record(bytes.len());
            self.to_tool_q.push_back(bytes);
        }
    }
}

/// Reads the tool's stdout and hands each JSON-RPC line to the session.
async fn read_tool(
    stdout: ChildStdout,
    tool: Arc<ToolConfig>,
    tx: mpsc::Sender<ToolMsg>,
    to_tool: mpsc::Sender<Bytes>,
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
        let msg = match frame {
            Frame::Line(line) => match jsonrpc::classify(&line) {
                Ok(Kind::Response { id, is_error }) => ToolMsg {
                    bytes: line,
                    answers: id,
                    is_error,
                },
                Ok(_) => ToolMsg {
                    bytes: line,
                    answers: None,
                    is_error: false,
                },
                Err(e) => {
                    let shown = String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
                    warn!(error = %e, line = %shown, "tool wrote a line that is not a JSON-RPC message to stdout; skipped");
                    continue;
                }
            },
            Frame::Oversize { head, len } => {
                let message = format!(
                    "the tool's message of {} exceeds the relay's limit of {} for tool `{}`",
                    shared::human_bytes(len),
                    shared::human_bytes(tool.max_message_size),
                    tool.name
                );
                warn!("{message}");
                match jsonrpc::oversize(&head, &message) {
                    // The client's request waits for this answer: it gets the error instead.
                    Oversize::Response { id, error } => ToolMsg {
                        bytes: Bytes::from(error),
                        answers: Some(id),
                        is_error: true,
                    },
                    Oversize::Request { error, .. } => {
                        let _ = to_tool.send(Bytes::from(error)).await;
                        continue;
                    }
                    Oversize::Other => continue,
                }
            }
        };
        if tx.send(msg).await.is_err() {
            return;
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
                info!(target: "tool", "tool stderr: (a line of {len} bytes, not shown)");
            }
        }
    }
}

/// Close reasons are limited to 123 bytes by RFC 6455.
fn truncate_reason(reason: &str) -> String {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

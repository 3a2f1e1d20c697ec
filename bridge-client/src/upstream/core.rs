//! The HTTP upstream's session core: every decision of a Streamable HTTP session, as a plain
//! state machine with explicit time.
//!
//! It is told what happened — a line from the IDE, a response head, a piece of a body, a
//! broken connection, output written, the time — and answers with the HTTP requests to make
//! ([`HttpCore::poll_request`]), the exchanges to stop reading ([`HttpCore::poll_dropped`]),
//! what to write to the IDE ([`Output`]), events for the driver ([`HttpCore::poll_event`]) and
//! when to wake it ([`HttpCore::poll_timeout`]). This file holds the IDE's side and the
//! bookkeeping; `requests.rs` builds the requests, `upstream.rs` reads the server's answers,
//! `session.rs` handles lost sessions and broken streams. No sockets, tasks or clocks.

use crate::ide_input::{from_ide, FromIde};
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use tokio::time::Instant;

use shared::framing::Frame;
use shared::ingress::{Msg, MsgKind};
use shared::jsonrpc::{self, Id};

use super::exchange::{Outgoing, RequestMeta};
use super::params::ParamHeaders;
use super::sse::SseParser;
use super::UpstreamEvent;
use crate::session::core::{EOF_ANSWER_WAIT, HELD_MAX, OUT_LIMIT};
use crate::session::stdout::Output;

mod auth;
mod legacy;
mod relist;
mod requests;
mod session;
use requests::Post;
#[cfg(test)]
mod tests;
mod timers;
mod upstream;

/// HTTP exchanges open at once at most (POSTs, resumed streams, the standalone stream).
pub(crate) const MAX_EXCHANGES: usize = 32;

/// Names the limit in `-32012` errors.
pub(crate) use crate::ide_input::LIMIT_NAME;

/// What the core needs to know.
#[derive(Debug, Clone)]
pub(crate) struct HttpConfig {
    /// The MCP endpoint.
    pub(crate) url: http::Uri,
    /// Largest message accepted from the IDE or the server.
    pub(crate) max_message: usize,
    /// How long requests refused with a 401 wait for the authorizer (`None`: there is none;
    /// they are answered at once).
    pub(crate) auth_wait: Option<Duration>,
}

impl HttpConfig {
    /// Bytes of IDE messages waiting to be sent, at most.
    fn queue_bytes(&self) -> usize {
        4 * self.max_message.max(1 << 20)
    }
}

/// What an exchange is for.
#[derive(Debug)]
enum Purpose {
    /// A POST of one message.
    Post(Post),
    /// A GET resuming a POST's broken stream (`Last-Event-ID`).
    Resume,
    /// The standalone GET stream for server-initiated messages.
    Listen,
    /// The DELETE that ends the session.
    Delete,
    /// The SSE stream of the legacy HTTP+SSE transport.
    LegacyStream,
}

/// How far the response has come.
#[derive(Debug)]
enum Body {
    /// No head yet.
    Head,
    Json(BytesMut),
    Sse(SseParser),
    /// A failure's body (bounded), read for a JSON-RPC error.
    Error {
        status: u16,
        buf: BytesMut,
    },
    /// Nothing more is wanted from it.
    Done,
}

/// One HTTP exchange in flight.
#[derive(Debug)]
struct Exchange {
    purpose: Purpose,
    body: Body,
    /// The session id the request carried.
    sent_session: Option<String>,
    /// The IDE request whose answer this exchange carries.
    awaiting: Option<Id>,
    /// The stream's last event id and `retry:` (kept across resumes).
    last_event_id: Option<String>,
    retry: Option<Duration>,
    /// Resumes so far of this stream.
    resumes: u32,
    /// When it is given up on if nothing comes: the head's bound, then a JSON body's idle
    /// bound; `None` while an SSE body streams (TCP keep-alive finds a dead peer) and for the
    /// DELETE (the driver bounds it).
    deadline: Option<Instant>,
    /// Part of the legacy HTTP+SSE transport (its stream, or a POST to its endpoint).
    legacy: bool,
}

/// A resume GET waiting for its time.
#[derive(Debug)]
struct Resume {
    at: Instant,
    awaiting: Id,
    last_event_id: String,
    retry: Option<Duration>,
    resumes: u32,
}

/// The standalone GET stream.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Listen {
    /// Not wanted yet (no session handshake done).
    Off,
    /// To be opened at this time, resuming from the id.
    Due {
        at: Instant,
        last_event_id: Option<String>,
        failures: u32,
    },
    /// Open as this exchange.
    Open(u64),
    /// The server has none (405).
    Unsupported,
}

/// The IDE's handshake, kept to replay on a new session.
#[derive(Debug, Default)]
struct Handshake {
    initialize: Option<Bytes>,
    initialized: Option<Bytes>,
}

/// The HTTP upstream's state.
#[derive(Debug)]
pub(crate) struct HttpCore {
    cfg: HttpConfig,
    /// `Mcp-Session-Id` the server assigned.
    session: Option<String>,
    /// The protocol version from the initialize result.
    negotiated: Option<String>,
    /// The IDE's `initialize` in flight (its answer carries the negotiated version).
    init_id: Option<Id>,
    handshake: Handshake,
    /// A replayed `initialize` in flight: nothing else is sent until it is answered.
    reinit: Option<Id>,
    reinit_count: u64,
    /// The session was lost and the handshake must be replayed before the next message.
    lost_handshake: bool,
    /// Replayed handshake messages: sent before anything queued.
    replay: VecDeque<Post>,
    /// IDE messages waiting to be POSTed, and their bytes.
    queue: VecDeque<Post>,
    queue_bytes: usize,
    /// An order-sensitive POST (the handshake) in flight: nothing is sent after it until its
    /// answer's head has come.
    barrier: Option<u64>,
    exchanges: HashMap<u64, Exchange>,
    next_ex: u64,
    /// Exchanges answered and waiting for their end, until the time given.
    draining: Vec<(u64, Instant)>,
    resumes: Vec<Resume>,
    listen: Listen,
    /// IDE requests not answered yet.
    pending: HashSet<Id>,
    /// The `tools/list` bridge-client sent after a `-32020`, and the call to send again.
    relist: Option<relist::Relist>,
    relist_count: u64,
    /// Pending 2026-07-28 `tools/list` requests, whose answers teach `params`.
    tool_lists: HashSet<Id>,
    params: ParamHeaders,
    /// A 2xx has come from the server.
    ever_ok: bool,
    /// The legacy HTTP+SSE transport, once a POST was refused with 404/405 (`None`:
    /// Streamable HTTP).
    legacy: Option<legacy::Legacy>,
    /// A refresh or sign-in the driver is waiting for, and the requests it holds.
    auth: Option<auth::AuthWait>,
    events: VecDeque<UpstreamEvent>,
    requests: VecDeque<Outgoing>,
    dropped: Vec<u64>,
    out: VecDeque<Bytes>,
    out_bytes: usize,
    in_stdout: usize,
    eof_at: Option<Instant>,
    ide_gone: bool,
    finished: bool,
}

impl HttpCore {
    /// A core with no session yet (one starts with the IDE's first message).
    pub(crate) fn new(cfg: HttpConfig) -> HttpCore {
        HttpCore {
            cfg,
            session: None,
            negotiated: None,
            init_id: None,
            handshake: Handshake::default(),
            reinit: None,
            reinit_count: 0,
            lost_handshake: false,
            replay: VecDeque::new(),
            queue: VecDeque::new(),
            queue_bytes: 0,
            barrier: None,
            exchanges: HashMap::new(),
            next_ex: 0,
            draining: Vec::new(),
            resumes: Vec::new(),
            listen: Listen::Off,
            pending: HashSet::new(),
            relist: None,
            relist_count: 0,
            tool_lists: HashSet::new(),
            params: ParamHeaders::default(),
            ever_ok: false,
            legacy: None,
            auth: None,
            events: VecDeque::new(),
            requests: VecDeque::new(),
            dropped: Vec::new(),
            out: VecDeque::new(),
            out_bytes: 0,
            in_stdout: 0,
            eof_at: None,
            ide_gone: false,
            finished: false,
        }
    }

    fn out_has_room(&self) -> bool {
        self.out_bytes + self.in_stdout < OUT_LIMIT
    }

    /// Whether the core takes a line from stdin now (every queue it may feed has room).
    pub(crate) fn wants_stdin(&self) -> bool {
        self.eof_at.is_none()
            && !self.ide_gone
            && self.out_has_room()
            && self.queue.len() < HELD_MAX
            && self.queue_bytes < self.cfg.queue_bytes()
    }

    /// Whether the core takes more of the server's bodies now (stdout has room).
    pub(crate) fn wants_upstream(&self) -> bool {
        self.out_has_room() && !self.ide_gone && !self.finished
    }

    /// One unit read from stdin: a line, or the head of one over the size limit.
    pub(crate) fn on_stdin(&mut self, frame: Frame) {
        match from_ide(frame, self.cfg.max_message) {
            FromIde::Forward(msg) => self.on_ide_message(msg),
            FromIde::Reply(error) => self.push_out(error),
            FromIde::Nothing => {}
        }
    }

    fn on_ide_message(&mut self, msg: Msg) {
        match &msg.kind {
            MsgKind::Request { id, method, .. } => {
                if &**method == "initialize" {
                    self.handshake.initialize = Some(msg.bytes.clone());
                    self.handshake.initialized = None;
                    self.init_id = Some(id.clone());
                }
                let modern = || RequestMeta::of(&msg).version.is_some();
                if &**method == "tools/list" && self.tool_lists.len() < HELD_MAX && modern() {
                    self.tool_lists.insert(id.clone());
                }
                self.pending.insert(id.clone());
            }
            MsgKind::Notification { method } => {
                if &**method == "notifications/initialized" {
                    self.handshake.initialized = Some(msg.bytes.clone());
                }
                if &**method == "notifications/cancelled" {
                    // The server suppresses the answer; the IDE expects none.
                    if let Some(id) = jsonrpc::cancelled_request_id(&msg.bytes) {
                        self.tool_lists.remove(&id);
                        self.pending.remove(&id);
                    }
                }
            }
            MsgKind::Response { .. } => {}
        }
        self.queue_bytes += msg.bytes.len();
        self.queue.push_back(Post::new(msg));
    }

    /// The next HTTP request to make, if one is due and a slot is free.
    pub(crate) fn poll_request(&mut self, now: Instant) -> Option<Outgoing> {
        if let Some(r) = self.requests.pop_front() {
            return Some(r);
        }
        if self.finished || self.auth.is_some() || self.exchanges.len() >= MAX_EXCHANGES {
            return None;
        }
        if let Some(i) = self.resumes.iter().position(|r| r.at <= now) {
            let r = self.resumes.swap_remove(i);
            return self.start_resume(r, now);
        }
        if let Listen::Due { at, .. } = &self.listen {
            if *at <= now && self.eof_at.is_none() {
                return Some(self.start_listen(now));
            }
        }
        if let Some(out) = self.poll_legacy(now) {
            return out;
        }
        if self.barrier.is_some() {
            return None;
        }
        if self.lost_handshake && self.reinit.is_none() && !self.queue.is_empty() {
            self.start_replay();
        }
        let post = match self.replay.pop_front() {
            Some(p) => p,
            None if self.reinit.is_none() => {
                let p = self.queue.pop_front()?;
                self.queue_bytes -= p.msg.bytes.len();
                p
            }
            None => return None,
        };
        Some(self.start_post(post, now))
    }

    /// Exchanges the driver should stop reading (answered, or no longer wanted).
    pub(crate) fn poll_dropped(&mut self) -> Option<u64> {
        self.dropped.pop()
    }

    /// The next event for the driver.
    pub(crate) fn poll_event(&mut self) -> Option<UpstreamEvent> {
        self.events.pop_front()
    }

    /// stdin ended, or a stop was asked for: finish what is in flight, then end.
    pub(crate) fn on_stdin_eof(&mut self, now: Instant) {
        self.eof_at.get_or_insert(now);
    }

    /// stdout cannot be written any more: the IDE has gone.
    pub(crate) fn on_output_failed(&mut self) {
        self.ide_gone = true;
        self.out.clear();
        self.out_bytes = 0;
        self.in_stdout = 0;
    }

    fn drop_exchange(&mut self, ex: u64) {
        if self.exchanges.remove(&ex).is_some() {
            self.dropped.push(ex);
        }
        if self.barrier == Some(ex) {
            self.barrier = None;
        }
    }

    /// Whether the client is done: stdin ended and everything is answered (or time is up), or
    /// the IDE is gone.
    pub(crate) fn is_done(&self, now: Instant) -> bool {
        if self.ide_gone {
            return true;
        }
        let Some(eof) = self.eof_at else {
            return false;
        };
        let posting = self
            .exchanges
            .values()
            .any(|e| matches!(e.purpose, Purpose::Post(_)) && matches!(e.body, Body::Head));
        let settled = self.pending.is_empty() && self.queue.is_empty() && !posting;
        settled || now >= eof + EOF_ANSWER_WAIT
    }

    /// Answers the IDE's request `id` with an error, once.
    fn answer(&mut self, id: &Id, code: i64, message: &str) {
        if let Some(body) = crate::ide_input::error_for_ide(id, code, message) {
            self.push_out(body);
        }
    }

    /// Answers `id` with an error if it still waits for an answer.
    fn answer_pending(&mut self, id: &Id, code: i64, message: &str) {
        if relist::is_relist_id(id) {
            return self.on_relist_lost(id);
        }
        self.tool_lists.remove(id);
        if self.pending.remove(id) {
            self.answer(id, code, message);
        }
    }

    fn push_out(&mut self, bytes: Bytes) {
        if self.ide_gone {
            return;
        }
        self.out_bytes += bytes.len();
        self.out.push_back(bytes);
    }
}

impl Output for HttpCore {
    fn poll_output(&mut self) -> Option<Bytes> {
        let b = self.out.pop_front()?;
        self.out_bytes -= b.len();
        self.in_stdout += b.len() + 1;
        Some(b)
    }

    fn on_output_written(&mut self, n: usize, _now: Instant) {
        self.in_stdout = self.in_stdout.saturating_sub(n);
    }
}

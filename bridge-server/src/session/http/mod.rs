//! The Streamable HTTP carrier of a relay session: the session's "client connection" when the
//! client speaks MCP Streamable HTTP (spec 2025-11-25) instead of WebSocket.
//!
//! The HTTP handlers reach the session's driver task through its [`HttpDoor`] (two bounded
//! channels: POST bodies, and GET/DELETE); the carrier, owned by the driver, hands each POST
//! body to the core as one client message (only while the core takes client messages: the
//! bounded channel is the backpressure) and gives the POST back its answer: the answer alone
//! as a JSON body when it is the first thing for the request and comes within
//! [`heads::JSON_WITHIN`], else an SSE stream (opened with its priming event at the first other
//! message for the request, or when that time is up). What the core sends to the client is
//! routed by [`route::Router`] to the open streams and written as SSE events with
//! session-wide increasing ids. Deciding about messages is the core's job;
//! HTTP headers, auth and limits are the HTTP layer's.
//!
//! Bounds: messages no stream can take yet wait here (256 messages, max(1 MiB, M) bytes, and
//! the one that crosses it — the core keeps the rest in its own bounded queue); events handed
//! to streams and not yet taken by the connection count against one session-wide budget of
//! max(4 MiB, M) bytes (a semaphore whose permits travel with each event).

mod door;
mod heads;
mod replay;
pub(crate) mod route;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use shared::carrier::Io;
use shared::endpoint::Transmit;

pub(crate) use door::{door, Ctl, HttpDoor, Inlet, Post, PostReply};
pub(crate) use heads::HeadDeadlines;
#[cfg(test)]
pub(crate) use heads::JSON_WITHIN;
use replay::Replay;
use route::{Dest, Out, Router, StreamId};

/// Messages waiting for a stream.
const WAIT_MESSAGES: usize = 256;
/// Events one stream may hold beyond the byte budget's say (a count bound for tiny events).
const STREAM_EVENTS: usize = 1024;
/// Events kept for `Last-Event-ID` (with a byte bound of max(1 MiB, M)).
const REPLAY_EVENTS: usize = 256;
/// Resumed streams of finished requests, kept open (as a client expects) but sent nothing.
const PARKED: usize = 4;
/// How long a POST stream whose connection broke waits for a resume before its answer goes
/// to the GET stream instead.
const DETACHED_FOR: Duration = Duration::from_secs(10);
/// How often closed streams are noticed and the away timer checked.
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// A POST request whose answer has not begun: its handler still waits for [`PostReply`].
struct Head {
    reply: oneshot::Sender<PostReply>,
}

/// One SSE event on its way to a connection, holding its share of the session's budget until
/// the connection takes it; or a whole answer (see [`Chunk::whole`]).
pub(crate) struct Chunk {
    pub(crate) bytes: Bytes,
    /// The answer alone, to be the whole response body (JSON), not an SSE event.
    pub(crate) whole: bool,
    /// `None` for events held elsewhere already (priming, replayed).
    _budget: Option<OwnedSemaphorePermit>,
}

impl Chunk {
    /// An event holding `budget` (its share of a byte budget) until the connection takes it.
    pub(crate) fn new(bytes: Bytes, budget: Option<OwnedSemaphorePermit>) -> Chunk {
        Chunk {
            bytes,
            whole: false,
            _budget: budget,
        }
    }

    /// A whole answer (a JSON message, not an SSE event), holding `budget`.
    pub(crate) fn whole(bytes: Bytes, budget: Option<OwnedSemaphorePermit>) -> Chunk {
        Chunk {
            bytes,
            whole: true,
            _budget: budget,
        }
    }
}

/// An SSE stream's events, for the HTTP response body.
pub(crate) type Events = mpsc::Receiver<Chunk>;

/// What the carrier is waiting for before it can deliver again.
#[derive(Debug, Clone, Copy)]
enum Blocked {
    /// This many bytes of budget.
    Budget(u32),
    /// Room in this stream's channel.
    Full(StreamId),
}

/// The carrier: open streams, routing, waiting messages.
pub(crate) struct HttpCarrier {
    inlet: Inlet,
    router: Router,
    streams: HashMap<StreamId, mpsc::Sender<Chunk>>,
    /// POST streams not begun yet (see [`heads::JSON_WITHIN`]).
    heads: HashMap<StreamId, Head>,
    /// When each head's time is up.
    head_deadlines: HeadDeadlines<StreamId>,
    waiting: VecDeque<(Out, Bytes)>,
    waiting_bytes: usize,
    wait_bytes: usize,
    budget: Arc<Semaphore>,
    budget_bytes: usize,
    blocked: Option<Blocked>,
    next_event: u64,
    /// Recent events, for `Last-Event-ID`.
    replay: Replay,
    /// Resumed streams of requests already answered: open, silent (oldest closed first).
    parked: VecDeque<mpsc::Sender<Chunk>>,
    /// POST streams whose connection broke, and since when.
    detached: Vec<(StreamId, Instant)>,
    /// The last request, or when the last stream closed.
    last_activity: Instant,
    /// How long a session with no request and no open stream lives on.
    away: Duration,
    next_check: Instant,
}

impl HttpCarrier {
    /// The carrier of a new session; `max_message` is the tool's limit (M), `away` how long
    /// the session waits for a client that has no stream open and sends nothing.
    pub(crate) fn new(
        inlet: Inlet,
        max_message: usize,
        away: Duration,
        now: Instant,
    ) -> HttpCarrier {
        let budget_bytes = max_message.clamp(4 << 20, Semaphore::MAX_PERMITS);
        HttpCarrier {
            inlet,
            router: Router::default(),
            streams: HashMap::new(),
            heads: HashMap::new(),
            head_deadlines: HeadDeadlines::default(),
            waiting: VecDeque::new(),
            waiting_bytes: 0,
            wait_bytes: max_message.max(1 << 20),
            budget: Arc::new(Semaphore::new(budget_bytes)),
            budget_bytes,
            blocked: None,
            next_event: 0,
            replay: Replay::new(REPLAY_EVENTS, max_message.max(1 << 20)),
            parked: VecDeque::new(),
            detached: Vec::new(),
            last_activity: now,
            away,
            next_check: now + CHECK_EVERY,
        }
    }

    /// Whether a message for the client can be taken now.
    pub(crate) fn has_room(&self) -> bool {
        self.waiting.len() < WAIT_MESSAGES && self.waiting_bytes < self.wait_bytes
    }

    /// Waits for something to do: a POST body for the core (only if `recv`), room for a
    /// message for the client (only if `send`), or DELETE. GETs and deliveries happen inside.
    /// Cancel-safe.
    pub(crate) async fn io(&mut self, recv: bool, send: bool) -> Io {
        enum Wake {
            Ctl(Option<Ctl>),
            Post(Option<Post>),
            Unblocked,
        }
        loop {
            // GET and DELETE first, even while there is something to send.
            while let Ok(c) = self.inlet.ctl.try_recv() {
                if let Some(io) = self.on_ctl(c) {
                    return io;
                }
            }
            if send && self.has_room() {
                return Io::Ready;
            }
            let wake = {
                let budget = &self.budget;
                let streams = &self.streams;
                let blocked = self.blocked;
                let unblock = async move {
                    match blocked {
                        Some(Blocked::Budget(n)) => {
                            let _ = budget.acquire_many(n).await;
                        }
                        Some(Blocked::Full(s)) => {
                            if let Some(tx) = streams.get(&s) {
                                let _ = tx.reserve().await;
                            }
                        }
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    biased;
                    c = self.inlet.ctl.recv() => Wake::Ctl(c),
                    () = unblock => Wake::Unblocked,
                    p = self.inlet.posts.recv(), if recv => Wake::Post(p),
                }
            };
            match wake {
                Wake::Ctl(None) | Wake::Post(None) => {
                    return Io::Closed("the session's door was closed".to_owned())
                }
                Wake::Ctl(Some(c)) => {
                    if let Some(io) = self.on_ctl(c) {
                        return io;
                    }
                }
                Wake::Unblocked => self.pump(),
                Wake::Post(Some(p)) => {
                    if let Some(raw) = self.take_post(p) {
                        return Io::Message(raw);
                    }
                }
            }
        }
    }

    /// A GET opens the standalone stream (replacing an earlier one) and gets what waits; a
    /// DELETE ends the carrier.
    fn on_ctl(&mut self, c: Ctl) -> Option<Io> {
        self.last_activity = Instant::now();
        match c {
            Ctl::Delete { reply } => {
                let _ = reply.send(());
                Some(Io::Closed(
                    "the client ended the session (HTTP DELETE)".to_owned(),
                ))
            }
            Ctl::Get {
                last_event_id,
                reply,
            } => {
                match last_event_id.and_then(|n| self.replay.after(n)) {
                    Some((s, later)) => self.resume(s, later, reply),
                    None => {
                        let (s, replaced) = self.router.open_get();
                        if let Some(old) = replaced {
                            self.streams.remove(&old);
                        }
                        if let Some(tx) = self.open_stream(s, reply) {
                            self.streams.insert(s, tx);
                        } else {
                            self.router.closed(s);
                        }
                    }
                }
                self.pump();
                None
            }
        }
    }

    /// Opens the POST's stream (for a request; its answer begins later) or answers the
    /// handler; the body is for the core unless the request's id is already waiting for an
    /// answer.
    fn take_post(&mut self, p: Post) -> Option<Bytes> {
        let now = Instant::now();
        self.last_activity = now;
        if let Some(s) = p.cancels.and_then(|id| self.router.post_for(&id)) {
            // Its handler gets an empty stream (the client has stopped reading it anyway).
            if let Some(head) = self.heads.remove(&s) {
                self.begin_stream(s, head);
            }
            self.close_stream(s);
        }
        let Some(id) = p.request else {
            let _ = p.reply.send(PostReply::Accepted);
            return Some(p.body);
        };
        let Some(s) = self.router.open_post(id) else {
            let _ = p.reply.send(PostReply::DuplicateId);
            return None;
        };
        self.heads.insert(s, Head { reply: p.reply });
        let heads = &self.heads;
        self.head_deadlines
            .push(s, now, |old| heads.contains_key(old));
        self.pump();
        Some(p.body)
    }

    /// Begins POST stream `s` as an SSE stream: its priming event (an id and no data, for the
    /// client to resume after), then whatever is routed to it. `false` if the client left
    /// before: the request still goes to the tool (leaving is not cancelling), and what is for
    /// its stream goes elsewhere (the answer waits for a GET stream).
    fn begin_stream(&mut self, s: StreamId, head: Head) -> bool {
        let (tx, rx) = mpsc::channel(STREAM_EVENTS);
        self.next_event += 1;
        let priming = priming_event(self.next_event);
        self.replay.push(self.next_event, s, priming.clone());
        let _ = tx.try_send(self.free_chunk(priming));
        if head.reply.send(PostReply::Stream(rx)).is_ok() {
            self.streams.insert(s, tx);
            true
        } else {
            self.close_stream(s);
            false
        }
    }

    /// A new stream `s` for a GET, answered over `reply`; `None` if the client left already.
    fn open_stream(
        &mut self,
        s: StreamId,
        reply: oneshot::Sender<Events>,
    ) -> Option<mpsc::Sender<Chunk>> {
        let (tx, rx) = mpsc::channel(STREAM_EVENTS);
        self.next_event += 1;
        let priming = priming_event(self.next_event);
        self.replay.push(self.next_event, s, priming.clone());
        let _ = tx.try_send(self.free_chunk(priming));
        reply.send(rx).ok().map(|()| tx)
    }

    /// A GET resumes stream `s`: what followed the client's last event is sent again, then the
    /// new connection serves the stream if it is still open (the old one is let go); a stream
    /// whose request was answered is kept open and silent, as a client expects.
    fn resume(&mut self, s: StreamId, later: Vec<Bytes>, reply: oneshot::Sender<Events>) {
        let (tx, rx) = mpsc::channel(STREAM_EVENTS.max(later.len()));
        for event in later {
            // Held by the replay buffer already: no budget taken twice.
            let _ = tx.try_send(self.free_chunk(event));
        }
        if reply.send(rx).is_err() {
            return;
        }
        if self.router.open().any(|o| o == s) {
            self.router.attach(s);
            self.detached.retain(|(d, _)| *d != s);
            self.streams.insert(s, tx);
        } else {
            if self.parked.len() >= PARKED {
                self.parked.pop_front();
            }
            self.parked.retain(|p| !p.is_closed());
            self.parked.push_back(tx);
        }
    }

    /// A chunk that takes none of the budget (a priming event, a replayed one).
    fn free_chunk(&self, bytes: Bytes) -> Chunk {
        Chunk::new(bytes, None)
    }

    /// Takes a message for the client (call only with [`Self::has_room`]).
    pub(crate) fn send(&mut self, t: Transmit) -> Result<(), String> {
        let (Transmit::Text(msg) | Transmit::Binary(msg)) = t;
        self.waiting_bytes += msg.len();
        self.waiting.push_back((Out::of(&msg), msg));
        self.pump();
        Ok(())
    }

    /// Delivers waiting messages to their streams, in order, until one cannot be delivered
    /// for want of budget or room (those after it wait too, so no stream sees them out of
    /// order); messages with no stream stay and are passed over.
    pub(crate) fn pump(&mut self) {
        self.blocked = None;
        let mut i = 0;
        while i < self.waiting.len() {
            let Dest::Stream { id, last } = self.router.route(&self.waiting[i].0) else {
                i += 1;
                continue;
            };
            if self.heads.contains_key(&id) {
                if last {
                    // The answer comes first: it is the whole response, within the budget
                    // as an event would be.
                    let msg = self.waiting[i].1.clone();
                    let need = u32::try_from(msg.len().min(self.budget_bytes)).unwrap_or(u32::MAX);
                    let Ok(permit) = self.budget.clone().try_acquire_many_owned(need) else {
                        self.blocked = Some(Blocked::Budget(need));
                        return;
                    };
                    let answered = self.heads.remove(&id).is_some_and(|head| {
                        head.reply
                            .send(PostReply::Json(Chunk::whole(msg, Some(permit))))
                            .is_ok()
                    });
                    if answered {
                        if let Some((_, msg)) = self.waiting.remove(i) {
                            self.waiting_bytes -= msg.len();
                        }
                        self.close_stream(id);
                    } else {
                        // The client left before: the answer is routed again (to a GET).
                        self.close_stream(id);
                    }
                    continue;
                }
                if let Some(head) = self.heads.remove(&id) {
                    if !self.begin_stream(id, head) {
                        continue;
                    }
                }
            }
            let Some(tx) = self.streams.get(&id) else {
                self.lost(id);
                continue;
            };
            let event = sse_event(Some(self.next_event + 1), &self.waiting[i].1);
            let event_copy = event.clone();
            let need = u32::try_from(event.len().min(self.budget_bytes)).unwrap_or(u32::MAX);
            let Ok(permit) = self.budget.clone().try_acquire_many_owned(need) else {
                self.blocked = Some(Blocked::Budget(need));
                return;
            };
            match tx.try_send(Chunk::new(event, Some(permit))) {
                Ok(()) => {
                    self.next_event += 1;
                    self.replay.push(self.next_event, id, event_copy);
                    if let Some((_, msg)) = self.waiting.remove(i) {
                        self.waiting_bytes -= msg.len();
                    }
                    if last {
                        self.close_stream(id);
                    }
                }
                Err(TrySendError::Full(_)) => {
                    self.blocked = Some(Blocked::Full(id));
                    return;
                }
                Err(TrySendError::Closed(_)) => self.lost(id),
            }
        }
    }

    /// Stream `s`'s connection is gone: a POST stream waits for a resume a while; any other
    /// stream is closed.
    fn lost(&mut self, s: StreamId) {
        self.streams.remove(&s);
        if self.router.detach(s) {
            if !self.detached.iter().any(|(d, _)| *d == s) {
                self.detached.push((s, Instant::now()));
            }
        } else {
            self.close_stream(s);
        }
    }

    fn close_stream(&mut self, s: StreamId) {
        self.streams.remove(&s);
        self.heads.remove(&s);
        self.router.closed(s);
        if self.router.is_idle() {
            self.last_activity = Instant::now();
        }
    }

    /// The session ends: answers not begun yet begin as SSE streams, which end with the
    /// carrier (as every open stream does), so no handler is left with a 404.
    pub(crate) fn end_heads(&mut self) {
        let heads: Vec<StreamId> = self.heads.keys().copied().collect();
        for s in heads {
            if let Some(head) = self.heads.remove(&s) {
                self.begin_stream(s, head);
            }
        }
    }

    /// When to call [`Self::on_timer`].
    pub(crate) fn deadline(&self) -> Instant {
        match self.head_deadlines.next() {
            Some(at) => self.next_check.min(at),
            None => self.next_check,
        }
    }

    /// Begins as SSE streams the POST streams whose [`heads::JSON_WITHIN`] is up; notices streams
    /// whose client left; `Err` once the session has had no request and no open stream for
    /// its away time.
    pub(crate) fn on_timer(&mut self, now: Instant) -> Result<(), String> {
        while let Some(s) = {
            let heads = &self.heads;
            self.head_deadlines.pop_due(now, |s| heads.contains_key(s))
        } {
            if let Some(head) = self.heads.remove(&s) {
                self.begin_stream(s, head);
            }
        }
        if now < self.next_check {
            return Ok(());
        }
        self.next_check = now + CHECK_EVERY;
        let gone: Vec<StreamId> = self
            .router
            .open()
            .filter(|s| self.streams.get(s).is_some_and(mpsc::Sender::is_closed))
            .collect();
        for s in gone {
            self.lost(s);
        }
        let expired: Vec<StreamId> = self
            .detached
            .iter()
            .filter(|(_, since)| now >= *since + DETACHED_FOR)
            .map(|(s, _)| *s)
            .collect();
        for s in expired {
            self.detached.retain(|(d, _)| *d != s);
            self.close_stream(s);
        }
        self.parked.retain(|p| !p.is_closed());
        self.pump();
        if self.router.is_idle() && now >= self.last_activity + self.away {
            return Err(format!(
                "no request and no open stream for {}",
                shared::human_duration(self.away)
            ));
        }
        Ok(())
    }
}

/// How long a client waits before it reconnects a broken stream (the priming event's
/// `retry:`, in ms): soon, since the answer waits for it (10 s at most, see [`DETACHED_FOR`]).
const RETRY_MS: u32 = 1000;

/// A stream's first event: an id and no data, for the client to resume after, and
/// [`RETRY_MS`].
fn priming_event(id: u64) -> Bytes {
    Bytes::from(format!("id: {id}\nretry: {RETRY_MS}\ndata: \n\n"))
}

/// One SSE event: `id` (when the stream resumes), then the message as `data` lines (a message
/// has no raw line breaks but JSON may hold a CR or LF as whitespace: each splits a `data`
/// line, which the client joins with a line feed, a JSON whitespace again). Also the 2026-07-28
/// carrier's, with no id (that revision does not resume).
pub(crate) fn sse_event(id: Option<u64>, msg: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(msg.len() + 32);
    if let Some(id) = id {
        b.put_slice(b"id: ");
        b.put_slice(id.to_string().as_bytes());
        b.put_u8(b'\n');
    }
    for line in msg.split(|c| *c == b'\n' || *c == b'\r') {
        b.put_slice(b"data: ");
        b.put_slice(line);
        b.put_u8(b'\n');
    }
    b.put_u8(b'\n');
    b.freeze()
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;

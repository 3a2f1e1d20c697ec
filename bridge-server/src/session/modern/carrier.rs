//! The carrier of a pooled tool process that serves session-less (2026-07-28) requests: takes
//! calls from the pool's bounded channel (only while the core takes client messages, and only
//! once the tool has shown, by answering the relay's `server/discover`, that it speaks the
//! revision, and has answered the relay's `tools/list`), checks a `tools/call`'s `Mcp-Param-*`
//! headers against the annotations learned, gives each call its own answer stream, hands what the tool sends to the stream the
//! [`Mux`] names, and turns a stream closed before its answer into `notifications/cancelled`
//! for the tool. The process ends after `idle` with nothing in flight, or when the relay
//! drains and nothing is in flight. Which stream a message belongs to is the mux's decision;
//! HTTP is the handler's.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use shared::carrier::Io;
use shared::endpoint::Transmit;
use shared::mcp_params::ToolParams;

use super::check::Refusal;
use super::mux::{Era, FromTool, Key, Mux};
use super::params::{self, ParamHeaders};
use super::pool::Pool;
use super::wire::RequestSpans;
use crate::session::http::{sse_event, Chunk, Events, HeadDeadlines};

/// Requests one pooled process serves at once.
pub(crate) const MAX_INFLIGHT: usize = 64;
/// Events queued on one stream (the last slot is kept for the answer).
const STREAM_EVENTS: usize = 64;
/// Bytes of notifications queued on one stream and not yet taken by its connection; past it,
/// a slow client's progress is dropped (a subscription's stream is ended instead).
const STREAM_BUDGET: usize = 256 * 1024;
/// Errors for the tool's own requests waiting to be written; past it the tool is ended.
const TOOL_ERRORS: usize = 64;
/// How long the tool has to answer the relay's `server/discover` (and, then, its `tools/list`).
pub(crate) const PROBE_WITHIN: Duration = Duration::from_secs(15);
/// Pages of the relay's own `tools/list` read at most (the rest are learned from clients').
const LIST_PAGES: usize = 16;
/// How often closed streams' bookkeeping and the idle time are checked.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// One session-less request for the pooled process.
pub(crate) struct Call {
    pub(crate) body: Bytes,
    /// What the handler's parse found in `body` that the mux needs.
    pub(crate) request: RequestSpans,
    /// Answer on an SSE stream (else one JSON body: only the answer is sent).
    pub(crate) sse: bool,
    /// A `tools/call`'s `Mcp-Param-*` headers, to check against the tool's annotations.
    pub(crate) params: Option<ParamHeaders>,
    pub(crate) reply: oneshot::Sender<Reply>,
}

/// What became of a call.
pub(crate) enum Reply {
    /// Its events: SSE events, or (JSON) the answer alone.
    Stream(Events),
    /// The process serves this many requests already.
    Busy(usize),
    /// Refused before it reached the tool (`Mcp-Param-*` headers that do not match the body).
    Refused(Refusal),
}

struct Stream {
    tx: mpsc::Sender<Chunk>,
    sse: bool,
    /// The handler knows the answer's form (an SSE stream whose first chunk it has, or the
    /// whole answer); until then it waits, having written nothing.
    begun: bool,
    listen: bool,
    /// A `tools/list`: its answer teaches the process's `Mcp-Param-*` annotations.
    lists_tools: bool,
    budget: Arc<Semaphore>,
}

/// The carrier: the calls' inlet, the mux and the open streams.
pub(crate) struct ModernCarrier {
    calls: mpsc::Receiver<Call>,
    mux: Mux,
    streams: HashMap<Key, Stream>,
    /// When the SSE streams not begun yet must begin.
    head_deadlines: HeadDeadlines<Key>,
    /// Messages for the tool the carrier makes itself (the probe, cancels, errors for the
    /// tool's requests), handed to the core as client messages.
    to_tool: VecDeque<Bytes>,
    era: Option<Era>,
    /// The process's tools' `x-mcp-header` annotations, learned from `tools/list` answers.
    params: ToolParams,
    /// The relay's own `tools/list` is done (every page, an error, or its time ran out):
    /// calls may be taken.
    listed: bool,
    /// Pages of it asked for so far.
    pages: usize,
    pool: Arc<Pool>,
    user: String,
    tool: String,
    drain: CancellationToken,
    /// The drain was seen: subscriptions ended, no call taken any more.
    drained: bool,
    idle: Duration,
    last_activity: Instant,
    probe_deadline: Instant,
    next_check: Instant,
}

impl ModernCarrier {
    /// The carrier of a new pooled process of `tool` for `user`; it ends after `idle` with
    /// nothing in flight.
    pub(crate) fn new(
        calls: mpsc::Receiver<Call>,
        pool: Arc<Pool>,
        user: String,
        tool: String,
        drain: CancellationToken,
        idle: Duration,
        now: Instant,
    ) -> ModernCarrier {
        let mut mux = Mux::new(MAX_INFLIGHT);
        let probe = mux.probe();
        ModernCarrier {
            calls,
            mux,
            streams: HashMap::new(),
            head_deadlines: HeadDeadlines::default(),
            to_tool: VecDeque::from([probe]),
            era: None,
            params: ToolParams::default(),
            listed: false,
            pages: 0,
            pool,
            user,
            tool,
            drain,
            drained: false,
            idle,
            last_activity: now,
            probe_deadline: now + PROBE_WITHIN,
            next_check: now + CHECK_EVERY,
        }
    }

    /// Waits for something to do: a message for the core (only if `recv`), room for a
    /// message for the client (always, if `send`: streams that cannot take one drop it), or
    /// the end. Cancel-safe.
    pub(crate) async fn io(&mut self, recv: bool, send: bool) -> Io {
        loop {
            if recv {
                if let Some(msg) = self.to_tool.pop_front() {
                    return Io::Message(msg);
                }
            }
            if send {
                return Io::Ready;
            }
            if self.drain.is_cancelled() && self.mux.len() == 0 && self.to_tool.is_empty() {
                return Io::Closed("the relay is draining".to_owned());
            }
            let take =
                recv && self.era == Some(Era::Modern) && self.listed && !self.drain.is_cancelled();
            enum Wake {
                Call(Option<Call>),
                Drain,
            }
            // Streams whose client left are noticed by `on_timer`, not waited on here: a wait
            // over every open stream would be rebuilt at each call of this function.
            if !take && self.drained {
                // Nothing to wait for here: the driver's other branches (the tool, timers).
                return std::future::pending().await;
            }
            let wake = {
                let drain = self.drain.cancelled();
                tokio::select! {
                    biased;
                    c = self.calls.recv(), if take => Wake::Call(c),
                    () = drain, if !self.drained => Wake::Drain,
                }
            };
            match wake {
                Wake::Call(None) => return Io::Closed("the pool let the process go".to_owned()),
                Wake::Call(Some(c)) => {
                    if let Some(msg) = self.take(c) {
                        return Io::Message(msg);
                    }
                }
                Wake::Drain => {
                    // Subscriptions never end by themselves: they end now, gracefully, so
                    // the process can end once the calls in flight are answered.
                    self.drained = true;
                    for (key, done, cancel) in self.mux.end_listens() {
                        self.deliver(key, done, true);
                        self.to_tool.push_back(cancel);
                    }
                }
            }
        }
    }

    /// A call: its stream opened and answered to the handler; the body for the tool.
    fn take(&mut self, c: Call) -> Option<Bytes> {
        self.last_activity = Instant::now();
        let listen = c.request.method.as_deref() == Some("subscriptions/listen");
        let lists_tools = c.request.method.as_deref() == Some("tools/list");
        if let Some(p) = &c.params {
            if let Err(r) = params::check(self.params.of(&p.tool), &c.body, &p.headers) {
                let _ = c.reply.send(Reply::Refused(r));
                return None;
            }
        }
        let (key, body) = match self.mux.request(&c.request, &c.body) {
            Ok(taken) => taken,
            Err(super::mux::Busy::Full(n)) => {
                let _ = c.reply.send(Reply::Busy(n));
                return None;
            }
        };
        let (tx, rx) = mpsc::channel(STREAM_EVENTS);
        if c.reply.send(Reply::Stream(rx)).is_err() {
            // The client left before its stream opened: the tool never hears of it.
            self.mux.forget(key);
            return None;
        }
        // A subscription's stream begins at once (its first event may be long in coming);
        // a call's waits for its answer up to JSON_WITHIN (see `deliver`).
        let begun = !c.sse || listen;
        if listen && c.sse {
            let _ = tx.try_send(Chunk::new(Bytes::new(), None));
        } else if !begun {
            let streams = &self.streams;
            self.head_deadlines.push(key, Instant::now(), |old| {
                streams.get(old).is_some_and(|s| !s.begun)
            });
        }
        self.streams.insert(
            key,
            Stream {
                tx,
                sse: c.sse,
                begun,
                listen,
                lists_tools,
                budget: Arc::new(Semaphore::new(STREAM_BUDGET)),
            },
        );
        debug!(key, method = ?c.request.method, "a session-less call goes to the tool");
        Some(body)
    }

    /// Stream `k`'s client went away: a request still unanswered is cancelled at the tool.
    fn on_closed(&mut self, k: Key) {
        self.streams.remove(&k);
        self.last_activity = Instant::now();
        if let Some(cancel) = self.mux.closed(k) {
            debug!(
                key = k,
                "the client closed its stream before the answer: cancelling"
            );
            self.to_tool.push_back(cancel);
        }
    }

    /// A message for the client (from the tool, or an answer the core made).
    pub(crate) fn send(&mut self, t: Transmit) -> Result<(), String> {
        let (Transmit::Text(msg) | Transmit::Binary(msg)) = t;
        match self.mux.on_tool_message(&msg) {
            FromTool::Stream { key, bytes, last } => {
                if last && self.streams.get(&key).is_some_and(|s| s.lists_tools) {
                    self.learn(&bytes);
                }
                self.deliver(key, bytes, last)
            }
            FromTool::End(key) => {
                self.streams.remove(&key);
            }
            FromTool::Probe(None) => {
                return Err(format!(
                    "tool `{}` ended before it answered server/discover",
                    self.tool
                ))
            }
            FromTool::Probe(Some(era)) => {
                self.era = Some(era);
                self.pool.verdict(&self.tool, era, Instant::now());
                if era == Era::Modern {
                    // Its tools' annotations, before any call is taken.
                    self.pages = 1;
                    self.probe_deadline = Instant::now() + PROBE_WITHIN;
                    self.to_tool.push_back(self.mux.list_tools(None));
                }
                if era == Era::Handshake {
                    return Err(format!(
                        "tool `{}` speaks only the handshake era (it did not answer server/discover with 2026-07-28)",
                        self.tool
                    ));
                }
            }
            FromTool::Listed(answer) => {
                let cursor = self.learn(&answer);
                match cursor {
                    Some(c) if self.pages < LIST_PAGES => {
                        self.pages += 1;
                        self.to_tool.push_back(self.mux.list_tools(Some(&c)));
                    }
                    _ => self.listed = true,
                }
            }
            FromTool::AnswerTool(error) => {
                if self.to_tool.len() >= TOOL_ERRORS {
                    return Err("the tool sends requests no 2026-07-28 client can answer, faster than it reads the errors".to_owned());
                }
                self.to_tool.push_back(error);
            }
            FromTool::Drop(why) => {
                debug!(user = %self.user, "a message from the tool goes nowhere: {why}")
            }
        }
        Ok(())
    }

    /// Learns the annotations of a `tools/list` answer (a client's: before the client gets
    /// it, so a call it sends after reading it is checked). Returns the next page's cursor.
    fn learn(&mut self, answer: &[u8]) -> Option<String> {
        let learned = params::learn(&mut self.params, answer);
        for bad in learned.invalid {
            debug!(
                user = %self.user,
                "tool `{}` has invalid x-mcp-header annotations ({}): its calls' Mcp-Param-* headers are not checked",
                shared::log_safe_max(&bad.name, 128),
                bad.why
            );
        }
        learned.next_cursor
    }

    fn deliver(&mut self, key: Key, bytes: Bytes, last: bool) {
        let Some(s) = self.streams.get_mut(&key) else {
            return;
        };
        if !s.sse && !last {
            return;
        }
        if !s.begun && last {
            // The answer comes first, and soon: it is the whole response (the slot kept for
            // the last chunk takes it).
            let _ = s.tx.try_send(Chunk::whole(bytes, None));
            self.streams.remove(&key);
            self.last_activity = Instant::now();
            return;
        }
        let chunk = if last {
            // The slot kept for it is there: nothing else takes the last one.
            Chunk::new(
                if s.sse {
                    sse_event(None, &bytes)
                } else {
                    bytes
                },
                None,
            )
        } else {
            let event = sse_event(None, &bytes);
            let need = u32::try_from(event.len()).unwrap_or(u32::MAX);
            let permit = s.budget.clone().try_acquire_many_owned(need).ok();
            match permit.filter(|_| s.tx.capacity() > 1) {
                Some(p) => Chunk::new(event, Some(p)),
                None if s.listen => {
                    debug!(key, "a subscriber reads too slowly: its stream ends");
                    self.streams.remove(&key);
                    if let Some(cancel) = self.mux.closed(key) {
                        self.to_tool.push_back(cancel);
                    }
                    return;
                }
                None => {
                    debug!(key, "a client reads too slowly: a notification is dropped");
                    return;
                }
            }
        };
        s.begun = true;
        let _ = s.tx.try_send(chunk);
        if last {
            self.streams.remove(&key);
            self.last_activity = Instant::now();
        }
    }

    /// When [`Self::on_timer`] is due.
    pub(crate) fn deadline(&self) -> Instant {
        let next = match self.head_deadlines.next() {
            Some(at) => self.next_check.min(at),
            None => self.next_check,
        };
        if self.era.is_none() || !self.listed {
            next.min(self.probe_deadline)
        } else {
            next
        }
    }

    /// A tool that never answers the probe is taken as handshake-era; streams whose client left
    /// are cancelled at the tool; `Err` once the process has served nothing for its idle time.
    pub(crate) fn on_timer(&mut self, now: Instant) -> Result<(), String> {
        // Calls not answered within JSON_WITHIN: their SSE streams begin (an empty chunk
        // tells the handler; nothing is written for it).
        while let Some(key) = {
            let streams = &self.streams;
            self.head_deadlines
                .pop_due(now, |k| streams.get(k).is_some_and(|s| !s.begun))
        } {
            if let Some(s) = self.streams.get_mut(&key) {
                s.begun = true;
                let _ = s.tx.try_send(Chunk::new(Bytes::new(), None));
            }
        }
        if self.era.is_none() && now >= self.probe_deadline {
            self.pool.verdict(&self.tool, Era::Handshake, now);
            return Err(format!(
                "tool `{}` did not answer server/discover within {}: taken as handshake-era",
                self.tool,
                shared::human_duration(PROBE_WITHIN)
            ));
        }
        if self.era.is_some() && !self.listed && now >= self.probe_deadline {
            debug!(user = %self.user, "tool `{}` did not answer the relay's tools/list in time: calls go on, their Mcp-Param-* headers checked once a tools/list answer is seen", self.tool);
            self.listed = true;
        }
        if now < self.next_check {
            return Ok(());
        }
        self.next_check = now + CHECK_EVERY;
        // Streams whose client left (hyper dropped the body, or a JSON client's handler went).
        let gone: Vec<Key> = self
            .streams
            .iter()
            .filter(|(_, s)| s.tx.is_closed())
            .map(|(k, _)| *k)
            .collect();
        for k in gone {
            self.on_closed(k);
        }
        let idle = self.era.is_some()
            && self.calls.is_empty()
            && self.mux.len() == 0
            && self.streams.is_empty();
        if idle && now >= self.last_activity + self.idle {
            return Err(format!(
                "no request for {}",
                shared::human_duration(self.idle)
            ));
        }
        Ok(())
    }

    /// The answers the core makes at the end go to their streams; then every stream ends.
    pub(crate) fn finish(&mut self, answers: impl Iterator<Item = Transmit>) {
        for t in answers {
            let _ = self.send(t);
        }
        self.streams.clear();
    }
}

#[cfg(test)]
#[path = "carrier_tests.rs"]
mod tests;

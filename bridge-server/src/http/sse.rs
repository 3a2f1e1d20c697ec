//! The body of an answer to a Streamable HTTP request, as the session gives it: an SSE stream
//! (the events the session routes to it, and a comment line every 15 s while none comes, so
//! proxies and load balancers with idle cuts — often 60 s — keep a long call's stream open), or
//! one whole JSON answer. Either way each chunk's share of the session's budget is given back
//! as soon as hyper takes the chunk. Which events go to which stream is the session's business.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use tokio::time::{interval_at, Instant, Interval, MissedTickBehavior};

use crate::session::http::{Chunk, Events};

/// How often a comment keeps an idle stream alive.
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// A streaming `text/event-stream` body that ends when the session closes the stream, or one
/// whole answer.
pub(crate) struct StreamBody(Kind);

enum Kind {
    Sse {
        /// An event taken before the body began (sent first).
        first: Option<Chunk>,
        events: Events,
        keep_alive: Interval,
    },
    /// Taken (`None`) once hyper has it.
    Whole(Option<Chunk>),
}

impl StreamBody {
    /// An SSE stream: `first` (an event already taken from it, if any), then `events`.
    pub(crate) fn sse(first: Option<Chunk>, events: Events) -> StreamBody {
        let mut keep_alive = interval_at(Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
        keep_alive.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let first = first.filter(|c| !c.bytes.is_empty());
        StreamBody(Kind::Sse {
            first,
            events,
            keep_alive,
        })
    }

    /// One whole answer (its length is known: `Content-Length` on HTTP/1.1).
    pub(crate) fn whole(chunk: Chunk) -> StreamBody {
        StreamBody(Kind::Whole(Some(chunk)))
    }
}

impl hyper::body::Body for StreamBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let (events, keep_alive) = match &mut self.0 {
            Kind::Whole(chunk) => {
                // The chunk's budget goes with it here.
                return Poll::Ready(chunk.take().map(|c| Ok(Frame::data(c.bytes))));
            }
            Kind::Sse {
                first,
                events,
                keep_alive,
            } => {
                if let Some(c) = first.take() {
                    return Poll::Ready(Some(Ok(Frame::data(c.bytes))));
                }
                (events, keep_alive)
            }
        };
        match events.poll_recv(cx) {
            Poll::Ready(Some(chunk)) => {
                keep_alive.reset();
                return Poll::Ready(Some(Ok(Frame::data(chunk.bytes))));
            }
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        if keep_alive.poll_tick(cx).is_ready() {
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
                b": keep-alive\n\n",
            )))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.0, Kind::Whole(None))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Whole(Some(c)) => SizeHint::with_exact(c.bytes.len() as u64),
            Kind::Whole(None) => SizeHint::with_exact(0),
            Kind::Sse { .. } => SizeHint::default(),
        }
    }
}

//! The body of an SSE answer: the events a session routes to this stream, and a comment line
//! every 15 s while none comes, so proxies and load balancers with idle cuts (often 60 s) keep
//! a long call's stream open. Each event's share of the session's budget is given back as soon
//! as hyper takes the event. Which events go to which stream is the session's business.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Frame;
use tokio::time::{interval_at, Instant, Interval, MissedTickBehavior};

use crate::session::http::Events;

/// How often a comment keeps an idle stream alive.
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// A streaming `text/event-stream` body; it ends when the session closes the stream.
pub(crate) struct SseBody {
    events: Events,
    keep_alive: Interval,
}

impl SseBody {
    pub(crate) fn new(events: Events) -> SseBody {
        let mut keep_alive = interval_at(Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
        keep_alive.set_missed_tick_behavior(MissedTickBehavior::Delay);
        SseBody { events, keep_alive }
    }
}

impl hyper::body::Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        match this.events.poll_recv(cx) {
            Poll::Ready(Some(chunk)) => {
                this.keep_alive.reset();
                return Poll::Ready(Some(Ok(Frame::data(chunk.bytes))));
            }
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        if this.keep_alive.poll_tick(cx).is_ready() {
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
                b": keep-alive\n\n",
            )))));
        }
        Poll::Pending
    }
}

//! The recent SSE events of a Streamable HTTP session, kept so that a client whose stream broke
//! can ask for what followed the last event it saw (`Last-Event-ID`) on that stream. Bounded
//! in events and bytes: the oldest go first. Which stream a resumed connection then serves is
//! the carrier's business.

use std::collections::VecDeque;

use bytes::Bytes;

use super::route::StreamId;

/// Sent events, oldest first.
#[derive(Debug)]
pub(crate) struct Replay {
    events: VecDeque<(u64, StreamId, Bytes)>,
    bytes: usize,
    max_events: usize,
    max_bytes: usize,
}

impl Replay {
    pub(crate) fn new(max_events: usize, max_bytes: usize) -> Replay {
        Replay {
            events: VecDeque::new(),
            bytes: 0,
            max_events,
            max_bytes,
        }
    }

    /// Keeps event `id` (its encoded bytes) sent on `stream`.
    pub(crate) fn push(&mut self, id: u64, stream: StreamId, event: Bytes) {
        self.bytes += event.len();
        self.events.push_back((id, stream, event));
        while self.events.len() > self.max_events
            || (self.bytes > self.max_bytes && self.events.len() > 1)
        {
            if let Some((_, _, e)) = self.events.pop_front() {
                self.bytes -= e.len();
            }
        }
    }

    /// The stream event `last` was sent on, and the events sent on it after `last`; `None`
    /// when `last` is no longer (or never was) kept.
    pub(crate) fn after(&self, last: u64) -> Option<(StreamId, Vec<Bytes>)> {
        let (_, stream, _) = self.events.iter().find(|(id, _, _)| *id == last)?;
        let later = self
            .events
            .iter()
            .filter(|(id, s, _)| *id > last && s == stream)
            .map(|(_, _, e)| e.clone())
            .collect();
        Some((*stream, later))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_what_followed_on_the_same_stream_only() {
        let mut r = Replay::new(8, 1024);
        r.push(1, 10, Bytes::from_static(b"a"));
        r.push(2, 11, Bytes::from_static(b"b"));
        r.push(3, 10, Bytes::from_static(b"c"));
        r.push(4, 10, Bytes::from_static(b"d"));
        let (stream, later) = r.after(1).expect("kept");
        assert_eq!(stream, 10);
        assert_eq!(
            later,
            vec![Bytes::from_static(b"c"), Bytes::from_static(b"d")]
        );
        assert_eq!(r.after(4), Some((10, vec![])));
        assert_eq!(r.after(9), None);
    }

    #[test]
    fn the_oldest_go_first_past_either_bound() {
        let mut r = Replay::new(2, 1024);
        for i in 1..=3 {
            r.push(i, 1, Bytes::from_static(b"x"));
        }
        assert_eq!(r.after(1), None);
        assert!(r.after(2).is_some());
        let mut r = Replay::new(100, 4);
        r.push(1, 1, Bytes::from_static(b"xxx"));
        r.push(2, 1, Bytes::from_static(b"yyy"));
        assert_eq!(r.after(1), None, "over the byte bound");
        assert!(r.after(2).is_some());
    }
}

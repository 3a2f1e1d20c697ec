//! Which open SSE stream of a Streamable HTTP session a message for the client goes to, as a
//! plain state machine: the answer to request X goes to the stream of the POST that carried X
//! (and ends it); any other message (a tool's request or notification, an answer whose stream
//! is gone) goes to the oldest POST stream still waiting for its answer — the one it most
//! likely belongs to — else to the standalone GET stream, else waits for one. No channels,
//! bytes or event encoding: the carrier does those.

use std::collections::VecDeque;

use shared::jsonrpc::{self, Id, Kind};

/// A stream's number within its session.
pub(crate) type StreamId = u64;

/// What a message for the client is, as far as routing cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Out {
    /// The answer to the client's request with this id.
    Response(Id),
    /// Anything else: a request or notification from the tool, an error with a null id.
    Other,
}

impl Out {
    /// Classifies a message (a light, borrowing parse).
    pub(crate) fn of(msg: &[u8]) -> Out {
        match jsonrpc::classify(msg) {
            Ok(Kind::Response { id: Some(id), .. }) => Out::Response(id),
            _ => Out::Other,
        }
    }
}

/// Where a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dest {
    /// To this stream; `last`: it is the stream's answer, and the stream ends after it.
    Stream { id: StreamId, last: bool },
    /// No stream can take it yet: it waits for one.
    Wait,
}

/// The open streams of one session.
#[derive(Debug, Default)]
pub(crate) struct Router {
    /// POST streams waiting for their answer, oldest first, with the request id each waits for.
    posts: VecDeque<(StreamId, Id)>,
    /// POST streams whose connection broke: their messages wait for a resume (`Last-Event-ID`).
    detached: Vec<StreamId>,
    /// The standalone GET stream, if one is open.
    get: Option<StreamId>,
    next: StreamId,
}

impl Router {
    /// A POST carrying request `id` opens a stream for its answer; `None` while another
    /// request with the same id waits for its answer (the answer could not be told apart).
    pub(crate) fn open_post(&mut self, id: Id) -> Option<StreamId> {
        if self.posts.iter().any(|(_, i)| *i == id) {
            return None;
        }
        let s = self.new_id();
        self.posts.push_back((s, id));
        Some(s)
    }

    /// A GET opens the standalone stream; returns it and the one it replaces, if any.
    pub(crate) fn open_get(&mut self) -> (StreamId, Option<StreamId>) {
        let s = self.new_id();
        (s, self.get.replace(s))
    }

    fn new_id(&mut self) -> StreamId {
        self.next += 1;
        self.next
    }

    /// POST stream `s` lost its connection: what goes to it waits for the client to resume it,
    /// and other messages go elsewhere. Returns whether `s` is a POST stream.
    pub(crate) fn detach(&mut self, s: StreamId) -> bool {
        let is_post = self.posts.iter().any(|(id, _)| *id == s);
        if is_post && !self.detached.contains(&s) {
            self.detached.push(s);
        }
        is_post
    }

    /// Stream `s` has a connection again.
    pub(crate) fn attach(&mut self, s: StreamId) {
        self.detached.retain(|d| *d != s);
    }

    /// Stream `s` is gone (its client stopped listening, or its answer was sent).
    pub(crate) fn closed(&mut self, s: StreamId) {
        self.detached.retain(|d| *d != s);
        self.posts.retain(|(id, _)| *id != s);
        if self.get == Some(s) {
            self.get = None;
        }
    }

    /// The POST stream waiting for the answer to request `id`.
    pub(crate) fn post_for(&self, id: &Id) -> Option<StreamId> {
        self.posts.iter().find(|(_, i)| i == id).map(|(s, _)| *s)
    }

    /// Whether no stream is open.
    pub(crate) fn is_idle(&self) -> bool {
        self.posts.is_empty() && self.get.is_none()
    }

    /// The open streams.
    pub(crate) fn open(&self) -> impl Iterator<Item = StreamId> + '_ {
        self.posts.iter().map(|(s, _)| *s).chain(self.get)
    }

    /// Where `out` goes now. Routing does not change the streams: report a stream's answer
    /// as sent with [`Self::closed`].
    pub(crate) fn route(&self, out: &Out) -> Dest {
        if let Some(s) = match out {
            Out::Response(id) => self.post_for(id),
            Out::Other => None,
        } {
            if self.detached.contains(&s) {
                return Dest::Wait;
            }
            return Dest::Stream { id: s, last: true };
        }
        let live_post = self
            .posts
            .iter()
            .map(|(s, _)| *s)
            .find(|s| !self.detached.contains(s));
        match (live_post, self.get) {
            (Some(s), _) if matches!(out, Out::Other) => Dest::Stream { id: s, last: false },
            (_, Some(g)) => Dest::Stream { id: g, last: false },
            _ => Dest::Wait,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(n: u32) -> Id {
        Id::Num(n.to_string().into())
    }

    #[test]
    fn an_answer_goes_to_its_post_and_ends_it() {
        let mut r = Router::default();
        let a = r.open_post(num(1)).expect("a");
        let b = r.open_post(num(2)).expect("b");
        assert_eq!(
            r.route(&Out::Response(num(2))),
            Dest::Stream { id: b, last: true }
        );
        r.closed(b);
        assert_eq!(
            r.route(&Out::Response(num(1))),
            Dest::Stream { id: a, last: true }
        );
        r.closed(a);
        assert!(r.is_idle());
    }

    #[test]
    fn other_messages_go_to_the_oldest_post_then_the_get_then_wait() {
        let mut r = Router::default();
        assert_eq!(r.route(&Out::Other), Dest::Wait);
        let (g, replaced) = r.open_get();
        assert_eq!(replaced, None);
        assert_eq!(r.route(&Out::Other), Dest::Stream { id: g, last: false });
        let a = r.open_post(num(7)).expect("a");
        let _b = r.open_post(num(8)).expect("b");
        assert_eq!(r.route(&Out::Other), Dest::Stream { id: a, last: false });
        r.closed(a);
        r.closed(_b);
        assert_eq!(r.route(&Out::Other), Dest::Stream { id: g, last: false });
    }

    #[test]
    fn an_answer_without_its_stream_goes_to_the_get_or_waits() {
        let mut r = Router::default();
        let a = r.open_post(num(1)).expect("a");
        r.closed(a);
        assert_eq!(r.route(&Out::Response(num(1))), Dest::Wait);
        // …and never to another request's POST stream.
        let b = r.open_post(num(2)).expect("b");
        assert_eq!(r.route(&Out::Response(num(1))), Dest::Wait);
        let (g, _) = r.open_get();
        assert_eq!(
            r.route(&Out::Response(num(1))),
            Dest::Stream { id: g, last: false }
        );
        assert_eq!(
            r.route(&Out::Response(num(2))),
            Dest::Stream { id: b, last: true }
        );
    }

    #[test]
    fn a_detached_post_holds_its_answer_and_others_go_elsewhere() {
        let mut r = Router::default();
        let a = r.open_post(num(1)).expect("a");
        let b = r.open_post(num(2)).expect("b");
        assert!(r.detach(a));
        assert_eq!(r.route(&Out::Response(num(1))), Dest::Wait);
        assert_eq!(r.route(&Out::Other), Dest::Stream { id: b, last: false });
        r.attach(a);
        assert_eq!(
            r.route(&Out::Response(num(1))),
            Dest::Stream { id: a, last: true }
        );
        let (g, _) = r.open_get();
        assert!(!r.detach(g), "only POST streams wait for a resume");
    }

    #[test]
    fn a_duplicate_id_in_flight_is_refused_and_a_get_replaces_the_last() {
        let mut r = Router::default();
        let s = Id::Str("x".into());
        assert!(r.open_post(s.clone()).is_some());
        assert!(r.open_post(s).is_none());
        let (g1, _) = r.open_get();
        let (g2, replaced) = r.open_get();
        assert_eq!(replaced, Some(g1));
        assert_ne!(g1, g2);
        assert_eq!(r.open().count(), 2);
    }

    #[test]
    fn messages_are_classified_by_their_id() {
        assert_eq!(
            Out::of(br#"{"jsonrpc":"2.0","id":3,"result":{}}"#),
            Out::Response(num(3))
        );
        assert_eq!(
            Out::of(br#"{"jsonrpc":"2.0","id":null,"error":{"code":1,"message":"x"}}"#),
            Out::Other
        );
        assert_eq!(
            Out::of(br#"{"jsonrpc":"2.0","id":0,"method":"roots/list"}"#),
            Out::Other
        );
    }
}

//! The WebSocket carrier: moves a session core's transmits onto one WebSocket connection and
//! what arrives back off it, with heartbeats, and nothing else.
//!
//! It is polled by the session's one driver task (no tasks or channels of its own): [`WsCarrier::io`]
//! waits for whichever of "a message arrived", "a frame may be written" or "the writes are
//! flushed" comes first, and it is cancel-safe so it can sit in a `select!`. What frames mean
//! (sequence numbers, JSON-RPC) belongs to the cores.

use std::future::poll_fn;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use crate::endpoint::Transmit;

/// Heartbeat settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// How often to send a WebSocket ping.
    pub interval: Duration,
    /// Silence after which the peer is considered dead. Longer than `interval`.
    pub timeout: Duration,
}

impl Default for Heartbeat {
    /// Every 20 s (well under the 60 s idle cut of common load balancers); dead after 45 s.
    fn default() -> Self {
        Heartbeat {
            interval: Duration::from_secs(20),
            timeout: Duration::from_secs(45),
        }
    }
}

/// What the connection did.
#[derive(Debug)]
pub enum Io {
    /// A text or binary message arrived (its payload).
    Message(Bytes),
    /// A frame may be written now ([`WsCarrier::send`]).
    Ready,
    /// The connection is over; why (peer text escaped).
    Closed(String),
    /// The peer broke a hard limit (a message over the size cap): the session cannot go on.
    Fatal(String),
}

/// One WebSocket connection of a session.
pub struct WsCarrier<S> {
    sink: SplitSink<WebSocketStream<S>, Message>,
    stream: SplitStream<WebSocketStream<S>>,
    heartbeat: Heartbeat,
    /// When anything last arrived (data, ping or pong).
    last_rx: Instant,
    next_ping: Instant,
    ping_due: bool,
    /// Frames written since the last flush.
    dirty: bool,
}

impl<S> std::fmt::Debug for WsCarrier<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsCarrier").finish_non_exhaustive()
    }
}

impl<S> WsCarrier<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Wraps an open WebSocket.
    pub fn new(ws: WebSocketStream<S>, heartbeat: Heartbeat) -> WsCarrier<S> {
        let (sink, stream) = ws.split();
        let now = Instant::now();
        WsCarrier {
            sink,
            stream,
            heartbeat,
            last_rx: now,
            next_ping: now + heartbeat.interval,
            ping_due: false,
            dirty: false,
        }
    }

    /// Waits for the next thing the connection does. `recv`: whether the caller takes a
    /// message now; `send`: whether it has a frame to write. Cancel-safe.
    pub async fn io(&mut self, recv: bool, send: bool) -> Io {
        poll_fn(|cx| {
            if send || self.ping_due {
                match self.sink.poll_ready_unpin(cx) {
                    Poll::Ready(Ok(())) if self.ping_due => {
                        self.ping_due = false;
                        if let Err(e) = self.sink.start_send_unpin(Message::Ping(Bytes::new())) {
                            return Poll::Ready(closed(e));
                        }
                        self.dirty = true;
                        if send {
                            return Poll::Ready(Io::Ready);
                        }
                    }
                    Poll::Ready(Ok(())) => return Poll::Ready(Io::Ready),
                    Poll::Ready(Err(e)) => return Poll::Ready(closed(e)),
                    Poll::Pending => {}
                }
            }
            if self.dirty {
                match self.sink.poll_flush_unpin(cx) {
                    Poll::Ready(Ok(())) => self.dirty = false,
                    Poll::Ready(Err(e)) => return Poll::Ready(closed(e)),
                    Poll::Pending => {}
                }
            }
            if recv {
                loop {
                    match self.stream.poll_next_unpin(cx) {
                        Poll::Ready(Some(Ok(msg))) => {
                            self.last_rx = Instant::now();
                            match msg {
                                Message::Text(t) => return Poll::Ready(Io::Message(t.into())),
                                Message::Binary(b) => return Poll::Ready(Io::Message(b)),
                                Message::Close(frame) => {
                                    // Answer the close now (tungstenite has queued the
                                    // answer; a flush writes it): the caller drops us next.
                                    let _ = self.sink.poll_flush_unpin(cx);
                                    return Poll::Ready(Io::Closed(match frame {
                                        Some(f) if !f.reason.is_empty() => format!(
                                            "closed by peer: {}",
                                            crate::log_safe(&f.reason)
                                        ),
                                        _ => "closed by peer".to_owned(),
                                    }));
                                }
                                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                            }
                        }
                        Poll::Ready(Some(Err(WsError::Capacity(e)))) => {
                            return Poll::Ready(Io::Fatal(format!(
                                "a message exceeded the size limit: {e}"
                            )))
                        }
                        Poll::Ready(Some(Err(e))) => return Poll::Ready(closed(e)),
                        Poll::Ready(None) => {
                            return Poll::Ready(Io::Closed("connection closed".to_owned()))
                        }
                        Poll::Pending => break,
                    }
                }
            }
            Poll::Pending
        })
        .await
    }

    /// Writes one frame; call after [`Io::Ready`].
    pub fn send(&mut self, t: Transmit) -> Result<(), String> {
        self.dirty = true;
        self.sink
            .start_send_unpin(message(t))
            .map_err(|e| format!("connection error: {}", crate::log_safe(&e.to_string())))
    }

    /// When [`Self::on_timer`] must run next (a ping is due, or the peer's silence runs out).
    pub fn deadline(&self) -> Instant {
        self.next_ping.min(self.last_rx + self.heartbeat.timeout)
    }

    /// The heartbeat's clock: `Err` when the peer has been silent too long; otherwise a ping
    /// is scheduled when one is due.
    pub fn on_timer(&mut self, now: Instant) -> Result<(), String> {
        if now >= self.last_rx + self.heartbeat.timeout {
            return Err(format!(
                "no heartbeat from the peer for {:.1} s",
                self.heartbeat.timeout.as_secs_f64()
            ));
        }
        if now >= self.next_ping {
            self.ping_due = true;
            self.next_ping = now + self.heartbeat.interval;
        }
        Ok(())
    }

    /// Writes `last` (an end notice, say) and a close frame, then waits at most `wait` for
    /// them to go out and the peer to answer the close. A peer that has already closed or gone
    /// (see [`Self::peer_done`]) is sent nothing more than the answer to its close.
    pub async fn close(mut self, last: Vec<Transmit>, frame: Option<CloseFrame>, wait: Duration) {
        let _ = tokio::time::timeout(wait, async {
            if self.peer_done().await {
                return;
            }
            for t in last {
                if self.sink.feed(message(t)).await.is_err() {
                    return;
                }
            }
            if self.sink.send(Message::Close(frame)).await.is_err() {
                return;
            }
            // Read until the peer answers the close (or goes), so the close is clean.
            while let Some(Ok(msg)) = self.stream.next().await {
                if matches!(msg, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }

    /// For a peer that said it is done (and closes next, as `end` promises): waits at most
    /// `wait` for its close frame and answers it, writing nothing else; sends `frame` itself
    /// only when the peer's close does not come in time. Whatever else arrives is dropped: the
    /// session it was for is over.
    pub async fn await_close(mut self, frame: Option<CloseFrame>, wait: Duration) {
        let answered = tokio::time::timeout(wait, async {
            while let Some(Ok(msg)) = self.stream.next().await {
                if matches!(msg, Message::Close(_)) {
                    // Writes the answer tungstenite queued; a peer already gone is fine.
                    let _ = self.sink.flush().await;
                    return;
                }
            }
        })
        .await;
        if answered.is_err() {
            self.close(Vec::new(), frame, wait).await;
        }
    }

    /// Whether the peer has already closed the connection or gone, judged from what has
    /// arrived, without waiting. Its close frame, if that is what came, is answered. Data
    /// that arrived before it is dropped: only a session that is over asks.
    pub async fn peer_done(&mut self) -> bool {
        poll_fn(|cx| loop {
            match self.stream.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(Message::Close(_)))) => {
                    let _ = self.sink.poll_flush_unpin(cx);
                    return Poll::Ready(true);
                }
                Poll::Ready(Some(Ok(_))) => continue,
                Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(true),
                Poll::Pending => return Poll::Ready(false),
            }
        })
        .await
    }
}

fn message(t: Transmit) -> Message {
    match t {
        Transmit::Binary(b) => Message::Binary(b),
        Transmit::Text(b) => match Utf8Bytes::try_from(b.clone()) {
            Ok(text) => Message::Text(text),
            Err(_) => Message::Binary(b),
        },
    }
}

fn closed(e: WsError) -> Io {
    match e {
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            Io::Closed("connection closed".to_owned())
        }
        e => Io::Closed(format!(
            "connection error: {}",
            crate::log_safe(&e.to_string())
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::DuplexStream;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::protocol::Role;

    type Peer = WebSocketStream<DuplexStream>;

    async fn pair() -> (WsCarrier<DuplexStream>, Peer) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let server = WebSocketStream::from_raw_socket(a, Role::Server, None).await;
        let client = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
        (WsCarrier::new(server, Heartbeat::default()), client)
    }

    fn bye() -> Message {
        Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        }))
    }

    /// Everything the peer receives until the connection ends.
    async fn rest(peer: &mut Peer) -> Vec<Message> {
        let mut got = Vec::new();
        while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(2), peer.next()).await
        {
            got.push(m);
        }
        got
    }

    #[tokio::test]
    async fn a_close_from_the_peer_is_answered() {
        let (mut carrier, mut peer) = pair().await;
        peer.send(bye()).await.expect("close");
        assert!(matches!(carrier.io(true, false).await, Io::Closed(why) if why.contains("bye")));
        drop(carrier);
        let got = rest(&mut peer).await;
        assert!(matches!(&got[..], [Message::Close(Some(_))]), "{got:?}");
    }

    #[tokio::test]
    async fn a_peer_that_closed_first_gets_nothing_but_the_answer() {
        let (carrier, mut peer) = pair().await;
        peer.send(bye()).await.expect("close");
        let end = Transmit::Binary(Bytes::from_static(b"end"));
        carrier.close(vec![end], None, Duration::from_secs(1)).await;
        let got = rest(&mut peer).await;
        assert!(matches!(&got[..], [Message::Close(Some(_))]), "{got:?}");
    }

    #[tokio::test]
    async fn a_peer_that_said_end_is_waited_for() {
        let (carrier, mut peer) = pair().await;
        peer.send(Message::Binary(Bytes::from_static(b"end")))
            .await
            .expect("end");
        let closing = tokio::spawn(carrier.await_close(None, Duration::from_secs(1)));
        peer.send(bye()).await.expect("close");
        let got = rest(&mut peer).await;
        assert!(matches!(&got[..], [Message::Close(Some(_))]), "{got:?}");
        closing.await.expect("closed");
    }

    #[tokio::test]
    async fn a_live_peer_gets_the_last_frames_and_a_close() {
        let (carrier, mut peer) = pair().await;
        let closing = tokio::spawn(carrier.close(
            vec![Transmit::Binary(Bytes::from_static(b"end"))],
            None,
            Duration::from_secs(1),
        ));
        let first = peer.next().await;
        assert!(matches!(first, Some(Ok(Message::Binary(ref b))) if &b[..] == b"end"));
        assert!(matches!(peer.next().await, Some(Ok(Message::Close(_)))));
        // The peer's answer to the close goes out on its next read or flush.
        let _ = peer.flush().await;
        closing.await.expect("closed");
    }
}

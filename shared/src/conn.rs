//! One WebSocket connection as a pair of channels, with heartbeats.
//!
//! A reader task and a writer task own the socket; the session on either end talks to them
//! through bounded channels, so it never blocks on the network while it has other work. The
//! writer pings every `interval`; the reader declares the peer dead when nothing at all (data,
//! ping or pong) has arrived for `timeout`, even if TCP reports nothing. Sessions, sequence
//! numbers and resume are not this module's business.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Depth of each direction's queue.
const QUEUE_DEPTH: usize = 64;

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

/// What the reader reports.
#[derive(Debug)]
pub enum ConnEvent {
    /// A text, binary or close message from the peer (pings and pongs are handled here).
    Message(Message),
    /// The connection is over; the text says why ("closed by peer", "no heartbeat for 45 s", …).
    Closed(String),
    /// The peer broke a hard limit (a message over the WebSocket size cap). Resuming would
    /// replay the same message, so the session cannot go on.
    Fatal(String),
}

/// A live connection: send messages on `tx`, receive events on `rx`. Dropping `tasks` drops
/// the socket at once; [`ConnTasks::finish`] lets queued messages (a close frame, say) out first.
#[derive(Debug)]
pub struct Conn {
    /// Messages to write.
    pub tx: mpsc::Sender<Message>,
    /// Messages read, then exactly one [`ConnEvent::Closed`].
    pub rx: mpsc::Receiver<ConnEvent>,
    /// The reader and writer tasks.
    pub tasks: ConnTasks,
}

/// The tasks behind a [`Conn`]; aborted on drop.
#[derive(Debug)]
pub struct ConnTasks {
    writer: JoinHandle<()>,
    reader: JoinHandle<()>,
}

impl ConnTasks {
    /// Waits at most `wait` for the writer to send what is queued; call after queueing a close
    /// frame and dropping the sender.
    pub async fn finish(&mut self, wait: Duration) {
        let _ = tokio::time::timeout(wait, &mut self.writer).await;
    }
}

impl Drop for ConnTasks {
    fn drop(&mut self) {
        self.writer.abort();
        self.reader.abort();
    }
}

impl Conn {
    /// Sends what is queued, then `last` messages and a close frame, waiting at most `wait`.
    pub async fn close(self, last: Vec<Message>, frame: Option<CloseFrame>, wait: Duration) {
        let Conn { tx, rx, mut tasks } = self;
        drop(rx);
        let _ = tokio::time::timeout(wait, async {
            for msg in last {
                let _ = tx.send(msg).await;
            }
            let _ = tx.send(Message::Close(frame)).await;
        })
        .await;
        drop(tx);
        tasks.finish(wait).await;
    }
}

/// Starts the reader and writer tasks for `ws`.
pub fn spawn<S>(ws: WebSocketStream<S>, heartbeat: Heartbeat) -> Conn
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sink, stream) = ws.split();
    let (out_tx, out_rx) = mpsc::channel(QUEUE_DEPTH);
    let (in_tx, in_rx) = mpsc::channel(QUEUE_DEPTH);
    Conn {
        tx: out_tx,
        rx: in_rx,
        tasks: ConnTasks {
            writer: tokio::spawn(write(sink, out_rx, heartbeat.interval)),
            reader: tokio::spawn(read(stream, in_tx, heartbeat.timeout)),
        },
    }
}

async fn write<S>(
    mut sink: futures_util::stream::SplitSink<WebSocketStream<S>, Message>,
    mut rx: mpsc::Receiver<Message>,
    interval: Duration,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = rx.recv() => {
                let Some(msg) = msg else { break };
                let closing = matches!(msg, Message::Close(_));
                if sink.feed(msg).await.is_err() {
                    return;
                }
                if (closing || rx.is_empty()) && sink.flush().await.is_err() {
                    return;
                }
                if closing {
                    return;
                }
            }
            _ = ping.tick() => {
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
}

async fn read<S>(
    mut stream: futures_util::stream::SplitStream<WebSocketStream<S>>,
    tx: mpsc::Sender<ConnEvent>,
    timeout: Duration,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let why = loop {
        match tokio::time::timeout(timeout, stream.next()).await {
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)))) => continue,
            Ok(Some(Ok(Message::Close(frame)))) => {
                let _ = tx
                    .send(ConnEvent::Message(Message::Close(frame.clone())))
                    .await;
                break match frame {
                    Some(f) if !f.reason.is_empty() => format!("closed by peer: {}", f.reason),
                    _ => "closed by peer".to_owned(),
                };
            }
            Ok(Some(Ok(msg))) => {
                if tx.send(ConnEvent::Message(msg)).await.is_err() {
                    return;
                }
            }
            Ok(Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(e)))) => {
                let _ = tx
                    .send(ConnEvent::Fatal(format!(
                        "a message exceeded the size limit: {e}"
                    )))
                    .await;
                return;
            }
            Ok(Some(Err(e))) => break format!("connection error: {e}"),
            Ok(None) => break "connection closed".to_owned(),
            Err(_) => {
                break format!(
                    "no heartbeat from the peer for {:.1} s",
                    timeout.as_secs_f64()
                )
            }
        }
    };
    let _ = tx.send(ConnEvent::Closed(why)).await;
}

/// A connection slot that may be empty (between a drop and a reconnect), split into fields so
/// that a `select!` can wait on sending and receiving at the same time.
#[derive(Debug, Default)]
pub struct Link {
    /// Where to send, while connected.
    pub tx: Option<mpsc::Sender<Message>>,
    /// What arrives, while connected.
    pub rx: Option<mpsc::Receiver<ConnEvent>>,
    tasks: Option<ConnTasks>,
}

impl Link {
    /// Takes a fresh connection into the slot (dropping any previous one).
    pub fn set(&mut self, conn: Conn) {
        self.tx = Some(conn.tx);
        self.rx = Some(conn.rx);
        self.tasks = Some(conn.tasks);
    }

    /// Empties the slot, returning the connection if there was one.
    pub fn take(&mut self) -> Option<Conn> {
        match (self.tx.take(), self.rx.take(), self.tasks.take()) {
            (Some(tx), Some(rx), Some(tasks)) => Some(Conn { tx, rx, tasks }),
            _ => None,
        }
    }

    /// Whether a connection is in the slot.
    pub fn is_up(&self) -> bool {
        self.tx.is_some()
    }
}

/// A slot in a connection's send queue; never resolves while there is no connection, and
/// yields `None` once the connection's writer is gone.
pub async fn reserve(tx: Option<mpsc::Sender<Message>>) -> Option<mpsc::OwnedPermit<Message>> {
    match tx {
        Some(tx) => tx.reserve_owned().await.ok(),
        None => std::future::pending().await,
    }
}

/// The next event of a connection; never resolves while there is no connection.
pub async fn recv(rx: &mut Option<mpsc::Receiver<ConnEvent>>) -> Option<ConnEvent> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

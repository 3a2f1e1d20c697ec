//! A session's client side, whichever carrier it is: a WebSocket connection (which may come
//! and go: see `Attach`) or the Streamable HTTP carrier. The driver talks to this one type;
//! what a message means is the core's business.

use tokio::time::Instant;

use shared::carrier::{Io, WsCarrier};
use shared::endpoint::Transmit;

use super::driver::Socket;
use super::http::HttpCarrier;
use super::modern::carrier::ModernCarrier;

/// The client side of a session.
pub(crate) enum Carrier {
    Ws(WsCarrier<Socket>),
    Http(Box<HttpCarrier>),
    /// A pooled process serving session-less (2026-07-28) requests.
    Modern(Box<ModernCarrier>),
}

impl Carrier {
    /// The carrier's metric label.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Carrier::Ws(_) => "ws",
            Carrier::Http(_) => "http",
            Carrier::Modern(_) => "http-modern",
        }
    }

    /// The next event: a message (if `recv`), room to send (if `send`), or the end.
    pub(crate) async fn io(&mut self, recv: bool, send: bool) -> Io {
        match self {
            Carrier::Ws(c) => c.io(recv, send).await,
            Carrier::Http(c) => c.io(recv, send).await,
            Carrier::Modern(c) => c.io(recv, send).await,
        }
    }

    /// Writes (or queues) one message for the client.
    pub(crate) fn send(&mut self, t: Transmit) -> Result<(), String> {
        match self {
            Carrier::Ws(c) => c.send(t),
            Carrier::Http(c) => c.send(t),
            Carrier::Modern(c) => c.send(t),
        }
    }

    /// When [`Self::on_timer`] is due.
    pub(crate) fn deadline(&self) -> Instant {
        match self {
            Carrier::Ws(c) => c.deadline(),
            Carrier::Http(c) => c.deadline(),
            Carrier::Modern(c) => c.deadline(),
        }
    }

    /// Heartbeats, dead connections, an away client.
    pub(crate) fn on_timer(&mut self, now: Instant) -> Result<(), String> {
        match self {
            Carrier::Ws(c) => c.on_timer(now),
            Carrier::Http(c) => c.on_timer(now),
            Carrier::Modern(c) => c.on_timer(now),
        }
    }
}

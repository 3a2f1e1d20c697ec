//! A Streamable HTTP request for a session that lives on another relay node (its
//! `Mcp-Session-Id` starts with that node's id): passed on to that node, whose address
//! `[cluster]` gives, and its answer (JSON or an SSE stream) streamed back as it comes. So a
//! load balancer that cannot route by session (round robin, ingress-nginx's hash) can front
//! several relays. Admission (Origin, auth, grant) has already happened here and happens again
//! there; the session's node decides everything else. Not for WebSocket (bridge-client's
//! affinity header does that job) and never twice: a passed-on request carries
//! `mcp-bridge-forwarded`, and a node does not pass such a request on again.

use std::net::SocketAddr;
use std::time::Duration;

use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use shared::jsonrpc;
use tokio::net::TcpStream;
use tracing::{debug, warn};

use super::{json, Body, SESSION_ID};
use crate::config::check_node_id;
use crate::Relay;

/// The header a passed-on request carries: the node that passed it on.
pub(super) const FORWARDED: &str = "mcp-bridge-forwarded";

/// How long connecting to the session's node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The node a request is passed on to.
pub(super) struct Target {
    /// The node's id, from the session id.
    node: String,
    /// Where it listens.
    addr: String,
    /// Its metric label: its id when it is one of `[cluster] peers`, else "other" (ids under
    /// `peer_address` come from clients: not a label).
    label: String,
}

/// The session's node, and where it listens, when the request names a session of another
/// node this relay knows (and was not passed on already). Reads the config in force once.
pub(super) fn elsewhere<B>(req: &Request<B>, relay: &Relay) -> Option<Target> {
    let live = relay.live();
    if live.cluster.is_empty() || req.headers().contains_key(FORWARDED) {
        return None;
    }
    let sid = req.headers().get(SESSION_ID)?.to_str().ok()?;
    let (node, _) = sid.split_once('.')?;
    if relay.node_id.as_deref() == Some(node) || check_node_id(node).is_err() {
        return None;
    }
    let addr = live.cluster.address_of(node)?;
    let label = if live.cluster.peers.contains_key(node) {
        node
    } else {
        "other"
    };
    Some(Target {
        node: node.to_owned(),
        addr,
        label: label.to_owned(),
    })
}

/// Passes `req` on to `node` at `addr` and streams its answer back. A node that cannot be
/// reached holds no session any more, as far as the client can tell: 404, so it starts a new
/// one (the MCP spec's rule for a session that is gone).
pub(super) async fn forward(
    mut req: Request<Incoming>,
    target: &Target,
    relay: &Relay,
    peer: SocketAddr,
) -> Response<Body> {
    let (node, addr) = (target.node.as_str(), target.addr.as_str());
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return unreachable(target, &e.to_string(), relay),
        Err(_) => return unreachable(target, "timed out", relay),
    };
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    {
        Ok(pair) => pair,
        Err(e) => return unreachable(target, &e.to_string(), relay),
    };
    // The connection to the node lives as long as this request's answer streams.
    relay.tracker.spawn(async move {
        if let Err(e) = conn.await {
            debug!("connection to a cluster node ended: {e}");
        }
    });
    let me = relay.node_id.as_deref().unwrap_or("relay");
    if let Ok(v) = HeaderValue::from_str(me) {
        req.headers_mut().insert(FORWARDED, v);
    }
    req.headers_mut().remove(http::header::CONNECTION);
    match sender.send_request(req).await {
        Ok(resp) => {
            relay.metrics.forwarded(&target.label, "passed_on");
            debug!(%peer, node, status = resp.status().as_u16(), "passed a request on to its session's node");
            resp.map(|body| Either::Right(Either::Right(body)))
        }
        Err(e) => unreachable(target, &e.to_string(), relay),
    }
}

fn unreachable(target: &Target, why: &str, relay: &Relay) -> Response<Body> {
    let (node, addr) = (target.node.as_str(), target.addr.as_str());
    warn!(
        node,
        addr, "cannot pass a request on to its session's node: {why}"
    );
    relay.metrics.forwarded(&target.label, "unreachable");
    json(
        StatusCode::NOT_FOUND,
        jsonrpc::error_response(
            None,
            jsonrpc::INVALID_REQUEST,
            &format!(
                "session not found: the relay node `{node}` that held it cannot be reached; \
                 start a new session with `initialize`"
            ),
            None,
        ),
    )
}

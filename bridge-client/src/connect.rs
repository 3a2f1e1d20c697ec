//! Opening the WebSocket to the relay: the upgrade request (headers, token, subprotocol) and
//! errors that say what failed in words a user can act on.

use std::time::Duration;

use futures_util::StreamExt;
use http::HeaderValue;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use shared::tunnel::{
    self, Control, HEADER_AFFINITY, HEADER_LAST_SEQ, HEADER_REESTABLISH, HEADER_SESSION,
    SUBPROTOCOL_V1,
};

use crate::session::Welcome;
use crate::transport::{self, BoxIo};
use crate::{ClientError, Options, Secret};

/// How long the relay may take to send its welcome after the upgrade.
const WELCOME_WAIT: Duration = Duration::from_secs(10);

/// An open WebSocket to the relay.
pub(crate) type Ws = WebSocketStream<BoxIo>;

/// Connects, upgrades with subprotocol `mcp-bridge.v1` (resuming `resume` = (session id, last
/// sequence received) when given), and waits for the relay's welcome. What the relay sends
/// after the welcome stays in the returned stream.
pub(crate) async fn connect(
    opts: &Options,
    bearer: Option<&Secret>,
    resume: Option<(&str, u64)>,
    reestablish: bool,
) -> Result<(Ws, Welcome), ClientError> {
    let mut ws = upgrade(opts, bearer, resume, reestablish).await?;
    let handshake = |reason: String| ClientError::Handshake {
        url: opts.url.clone(),
        reason,
    };
    let first = match tokio::time::timeout(WELCOME_WAIT, first_message(&mut ws)).await {
        Ok(Ok(frame)) => frame,
        Ok(Err(why)) => {
            return Err(handshake(format!(
                "the relay closed before its welcome{why}"
            )))
        }
        Err(_) => {
            return Err(handshake(format!(
                "no welcome from the relay within {} s",
                WELCOME_WAIT.as_secs()
            )))
        }
    };
    match tunnel::decode(first) {
        Ok(tunnel::Frame::Control(Control::Welcome {
            session,
            resumed,
            last_seq,
            resume_window_ms,
            ..
        })) => Ok((
            ws,
            Welcome {
                session,
                resumed,
                last_seq,
                resume_window: Duration::from_millis(resume_window_ms),
            },
        )),
        Ok(tunnel::Frame::Control(Control::End { reason })) => Err(ClientError::Refused {
            url: opts.url.clone(),
            status: 410,
            reason: shared::log_safe_max(&reason, 1024).into_owned(),
            www_authenticate: None,
        }),
        Ok(other) => Err(handshake(format!("expected a welcome, got {other:?}"))),
        Err(e) => Err(handshake(format!("bad first frame: {e}"))),
    }
}

/// The first binary message; `Err` (a suffix for the error text) when the connection ends or
/// something else comes first.
async fn first_message(ws: &mut Ws) -> Result<bytes::Bytes, String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => return Ok(b),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(Message::Text(_))) => return Err(": it sent a text message".to_owned()),
            Some(Ok(Message::Close(Some(f)))) if !f.reason.is_empty() => {
                return Err(format!(": closed by peer: {}", shared::log_safe(&f.reason)))
            }
            Some(Ok(Message::Close(_))) | None => return Err(String::new()),
            Some(Err(e)) => {
                return Err(format!(
                    ": connection error: {}",
                    shared::log_safe(&e.to_string())
                ))
            }
        }
    }
}

/// Connects (directly or through the proxy, with TLS for wss) and upgrades with `bearer` (else
/// the static token); every failure names the URL.
async fn upgrade(
    opts: &Options,
    bearer: Option<&Secret>,
    resume: Option<(&str, u64)>,
    reestablish: bool,
) -> Result<Ws, ClientError> {
    let url = opts.url.clone();
    let bad_url = |reason: String| ClientError::BadUrl {
        url: url.clone(),
        reason,
    };
    let mut req = url
        .as_str()
        .into_client_request()
        .map_err(|e| bad_url(e.to_string()))?;
    let uri = req.uri().clone();
    let scheme = uri.scheme_str().unwrap_or("");
    let host = uri
        .host()
        .ok_or_else(|| bad_url("no host".into()))?
        .to_owned();
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "wss" { 443 } else { 80 });
    let tls = match scheme {
        "wss" => Some(
            opts.tls
                .as_ref()
                .ok_or_else(|| bad_url("wss:// needs TLS settings".into()))?,
        ),
        "ws" => None,
        other => {
            return Err(bad_url(format!(
                "unsupported scheme `{other}`: use ws:// or wss://"
            )))
        }
    };
    let headers = req.headers_mut();
    for (name, value) in &opts.headers {
        headers.append(name.clone(), value.clone());
    }
    headers.insert(
        http::header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(SUBPROTOCOL_V1),
    );
    if let Some(key) = &opts.affinity {
        if let Ok(v) = HeaderValue::from_str(key) {
            headers.insert(HEADER_AFFINITY, v);
        }
    }
    if reestablish && resume.is_none() {
        headers.insert(HEADER_REESTABLISH, HeaderValue::from_static("1"));
    }
    if let Some((session, last_seq)) = resume {
        if let Ok(v) = HeaderValue::from_str(session) {
            headers.insert(HEADER_SESSION, v);
        }
        headers.insert(HEADER_LAST_SEQ, HeaderValue::from(last_seq));
    }
    if let Some(token) = bearer.or(opts.token.as_ref()) {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
            .map_err(|_| ClientError::BadToken)?;
        value.set_sensitive(true);
        headers.insert(http::header::AUTHORIZATION, value);
    }
    let config = WebSocketConfig::default()
        .read_buffer_size(64 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(ws_hard_limit(opts.max_message_size)))
        .max_frame_size(Some(ws_hard_limit(opts.max_message_size)));
    let stream = transport::open(&url, &host, port, opts.proxy.as_ref(), tls).await?;
    match tokio_tungstenite::client_async_with_config(req, stream, Some(config)).await {
        Ok((ws, _resp)) => Ok(ws),
        Err(WsError::Http(resp)) => {
            let status = resp.status();
            let body = resp
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            let reason = body.lines().next().unwrap_or("").trim().to_owned();
            let reason = if reason.is_empty() {
                status
                    .canonical_reason()
                    .unwrap_or("no reason given")
                    .to_owned()
            } else {
                reason
            };
            let www_authenticate = resp
                .headers()
                .get(http::header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            Err(ClientError::Refused {
                url,
                status: status.as_u16(),
                reason,
                www_authenticate,
            })
        }
        // The relay was reached but the connection ended before an answer (a relay shedding
        // handshakes under a burst, a proxy in the way): worth another try, even at first.
        Err(WsError::Io(e)) => Err(ClientError::Handshake {
            url,
            reason: format!("the connection ended before the relay answered ({e})"),
        }),
        Err(WsError::Url(e)) => Err(bad_url(e.to_string())),
        Err(e) => Err(ClientError::Handshake {
            url,
            reason: e.to_string(),
        }),
    }
}

/// The WebSocket layer's cap: generous, so that a message over `--max-message-size` (but within
/// what a relay sends by default) arrives whole and is answered with a JSON-RPC error instead of
/// breaking the connection — which a resume would only replay.
fn ws_hard_limit(max: usize) -> usize {
    max.saturating_mul(4)
        .max(shared::DEFAULT_MAX_MESSAGE_SIZE)
        .saturating_add(64 * 1024 + tunnel::DATA_HEADER)
}

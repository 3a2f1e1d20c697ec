//! Opening the WebSocket to the relay: the upgrade request (headers, token, subprotocol) and
//! errors that say what failed in words a user can act on.

use http::{HeaderName, HeaderValue};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use shared::SUBPROTOCOL_MCP;

use crate::{ClientError, Options};

/// The connected WebSocket.
pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connects and upgrades; every failure names the URL.
pub(crate) async fn connect(opts: &Options) -> Result<Ws, ClientError> {
    let url = opts.url.clone();
    let mut req = url
        .as_str()
        .into_client_request()
        .map_err(|e| ClientError::BadUrl {
            url: url.clone(),
            reason: e.to_string(),
        })?;
    let headers = req.headers_mut();
    for (name, value) in &opts.headers {
        headers.append(name.clone(), value.clone());
    }
    headers.insert(
        http::header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(SUBPROTOCOL_MCP),
    );
    if let Some(token) = &opts.token {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
            .map_err(|_| ClientError::BadToken)?;
        value.set_sensitive(true);
        headers.insert(http::header::AUTHORIZATION, value);
    }
    let config = WebSocketConfig::default()
        .read_buffer_size(64 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(opts.max_message_size + 1024))
        .max_frame_size(Some(opts.max_message_size + 1024));
    match tokio_tungstenite::connect_async_with_config(req, Some(config), true).await {
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
            Err(ClientError::Refused {
                url,
                status: status.as_u16(),
                reason,
            })
        }
        Err(WsError::Io(e)) => Err(ClientError::Unreachable {
            url,
            reason: e.to_string(),
        }),
        Err(WsError::Url(e)) => Err(ClientError::BadUrl {
            url,
            reason: e.to_string(),
        }),
        Err(e) => Err(ClientError::Handshake {
            url,
            reason: e.to_string(),
        }),
    }
}

/// Parses `Name: value` into a header pair.
pub fn parse_header(text: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("header `{text}` has no `:`; write it as 'Name: value'"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("`{}` is not a valid header name", name.trim()))?;
    let value = HeaderValue::from_str(value.trim())
        .map_err(|_| format!("the value of header `{name}` is not valid"))?;
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::parse_header;

    #[test]
    fn headers_parse() {
        let (n, v) = parse_header("X-Team:  tools ").expect("valid");
        assert_eq!(n.as_str(), "x-team");
        assert_eq!(v.to_str().ok(), Some("tools"));
        assert!(parse_header("nocolon").is_err());
        assert!(parse_header("bad name: x").is_err());
    }
}

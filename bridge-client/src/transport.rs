//! The byte stream under the WebSocket: TCP to the relay, or through an HTTP proxy (CONNECT),
//! then TLS for `wss://`. Proxy settings come from `--proxy` or the usual environment variables
//! (`HTTPS_PROXY` for wss, `HTTP_PROXY` for ws, `NO_PROXY` exceptions).

use std::sync::Arc;

use base64::Engine;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::{ClientError, Secret};

/// Anything the WebSocket can run over.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A boxed stream (plain TCP or TLS, direct or proxied).
pub(crate) type BoxIo = Box<dyn Io>;

/// Largest proxy response head we read.
const MAX_PROXY_HEAD: usize = 8 * 1024;

/// An HTTP proxy that tunnels with CONNECT.
#[derive(Clone)]
pub struct Proxy {
    /// Proxy host.
    pub host: String,
    /// Proxy port.
    pub port: u16,
    /// `user:password` for `Proxy-Authorization: Basic`, from the proxy URL.
    pub credentials: Option<Secret>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Proxy({}:{}", self.host, self.port)?;
        if self.credentials.is_some() {
            f.write_str(", with credentials")?;
        }
        f.write_str(")")
    }
}

impl Proxy {
    /// Parses `http://[user:password@]host[:port]` (the port defaults to 80).
    pub fn parse(url: &str) -> Result<Proxy, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            "proxy URL must start with http:// (HTTP CONNECT proxies only)".to_owned()
        })?;
        let authority = rest.split('/').next().unwrap_or("");
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h.trim_start_matches('[').trim_end_matches(']').to_owned(),
                p.parse::<u16>()
                    .map_err(|_| "the proxy port is not a number".to_owned())?,
            ),
            _ => (hostport.to_owned(), 80),
        };
        if host.is_empty() {
            return Err("the proxy URL has no host".to_owned());
        }
        Ok(Proxy {
            host,
            port,
            credentials: userinfo.map(|u| Secret::new(percent_decode(u))),
        })
    }

    /// The proxy the environment asks for when connecting to `scheme://host`, if any.
    pub fn from_env(scheme: &str, host: &str) -> Option<Result<Proxy, String>> {
        let var = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
        };
        let no_proxy = var(&["NO_PROXY", "no_proxy"]).unwrap_or_default();
        if bypass(&no_proxy, host) {
            return None;
        }
        let url = if scheme == "wss" {
            var(&["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"])
        } else {
            var(&["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"])
        }?;
        Some(Proxy::parse(url.trim()))
    }
}

/// Whether `host` matches a `NO_PROXY` list (comma-separated names, `.suffix`es, or `*`).
fn bypass(no_proxy: &str, host: &str) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    no_proxy
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            let entry = entry
                .split(':')
                .next()
                .unwrap_or(entry)
                .to_ascii_lowercase();
            let bare = entry.trim_start_matches('.');
            host == bare || host.ends_with(&format!(".{bare}"))
        })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Opens the stream to `host:port` (through `proxy` if given), with TLS when `tls` is given.
pub(crate) async fn open(
    url: &str,
    host: &str,
    port: u16,
    proxy: Option<&Proxy>,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<BoxIo, ClientError> {
    open_negotiated(url, host, port, proxy, tls)
        .await
        .map(|(io, _)| io)
}

/// [`open`], also saying whether TLS negotiated HTTP/2 (ALPN `h2`).
pub(crate) async fn open_negotiated(
    url: &str,
    host: &str,
    port: u16,
    proxy: Option<&Proxy>,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<(BoxIo, bool), ClientError> {
    let unreachable = |reason: String| ClientError::Unreachable {
        url: url.to_owned(),
        reason,
    };
    let tcp = match proxy {
        None => TcpStream::connect((host, port))
            .await
            .map_err(|e| unreachable(e.to_string()))?,
        Some(p) => {
            let mut s = TcpStream::connect((p.host.as_str(), p.port))
                .await
                .map_err(|e| {
                    unreachable(format!("cannot reach the proxy {}:{}: {e}", p.host, p.port))
                })?;
            connect_tunnel(&mut s, host, port, p)
                .await
                .map_err(|reason| unreachable(format!("proxy {}:{}: {reason}", p.host, p.port)))?;
            s
        }
    };
    let _ = tcp.set_nodelay(true);
    keep_alive(&tcp);
    match tls {
        None => Ok((Box::new(tcp), false)),
        Some(config) => {
            let name = ServerName::try_from(
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned(),
            )
            .map_err(|_| ClientError::BadUrl {
                url: url.to_owned(),
                reason: format!("`{host}` is not a valid TLS server name"),
            })?;
            let stream = TlsConnector::from(config.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| ClientError::Handshake {
                    url: url.to_owned(),
                    reason: format!("TLS: {e}"),
                })?;
            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            Ok((Box::new(stream), h2))
        }
    }
}

/// Asks the proxy to open a tunnel to `host:port` and reads its answer.
async fn connect_tunnel(s: &mut TcpStream, host: &str, port: u16, p: &Proxy) -> Result<(), String> {
    let target = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(creds) = &p.credentials {
        let b64 = base64::engine::general_purpose::STANDARD.encode(creds.expose());
        req.push_str(&format!("Proxy-Authorization: Basic {b64}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut head = Vec::with_capacity(512);
    let mut byte = [0u8; 1];
    // Byte by byte, so nothing after the head (the tunnel's first bytes) is consumed.
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_PROXY_HEAD {
            return Err("the proxy's answer is too long".into());
        }
        match s.read(&mut byte).await {
            Ok(0) => return Err("the proxy closed the connection".into()),
            Ok(_) => head.push(byte[0]),
            Err(e) => return Err(e.to_string()),
        }
    }
    let text = String::from_utf8_lossy(&head);
    let status_line = text.lines().next().unwrap_or("");
    let code = status_line.split_whitespace().nth(1).unwrap_or("");
    if code == "200" {
        Ok(())
    } else {
        Err(format!("CONNECT refused: {}", status_line.trim()))
    }
}

/// TCP keep-alive on every connection: a peer that vanished is found within about a minute
/// even while the stream is rightly silent (an SSE body waiting for a long tool call, an idle
/// tunnel), with no application timer that would cut a live but quiet server.
fn keep_alive(tcp: &TcpStream) {
    let ka = socket2::TcpKeepalive::new().with_time(std::time::Duration::from_secs(30));
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let ka = ka
        .with_interval(std::time::Duration::from_secs(10))
        .with_retries(3);
    if let Err(e) = socket2::SockRef::from(tcp).set_tcp_keepalive(&ka) {
        tracing::debug!("cannot set TCP keep-alive: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls_parse() {
        let p = Proxy::parse("http://u%40x:p%3Ass@proxy.local:3128/").expect("ok");
        assert_eq!((p.host.as_str(), p.port), ("proxy.local", 3128));
        assert_eq!(p.credentials.as_ref().map(Secret::expose), Some("u@x:p:ss"));
        assert!(!format!("{p:?}").contains("p:ss"));
        let p = Proxy::parse("http://127.0.0.1:8080").expect("ok");
        assert!(p.credentials.is_none());
        assert!(Proxy::parse("https://x").is_err());
    }

    #[test]
    fn no_proxy_matches() {
        assert!(bypass("localhost,.internal", "relay.internal"));
        assert!(bypass("localhost, 127.0.0.1", "127.0.0.1"));
        assert!(bypass("*", "anything"));
        assert!(!bypass("example.com", "notexample.com"));
        assert!(!bypass("", "x"));
    }
}

//! The HTTP client of the upstream: hyper-util's pooled client over the tunnel's own byte
//! streams (`crate::transport`: TCP or an HTTP CONNECT proxy, then rustls with the private CA
//! and client certificate), HTTP/2 when the server's ALPN offers `h2`. It turns an
//! [`Outgoing`] into a stream of [`HttpIo`] events; what they mean is the core's business.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use http::{HeaderValue, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::warn;

use super::exchange::Outgoing;
use super::HttpIo;
use crate::oauth::Authorizer;
use crate::transport::{self, BoxIo};
use crate::{ClientError, Options, Secret};

/// How long opening one connection may take (TCP, proxy, TLS).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Idle pooled connections are closed after this (under common load-balancer idle cuts).
const POOL_IDLE: Duration = Duration::from_secs(50);

/// HTTP/2 connections are pinged this often while streams are open, and dropped when a ping
/// is not answered as long (HTTP/1.1 relies on TCP keep-alive, set in `transport`).
const H2_PING: Duration = Duration::from_secs(30);

/// The events of one exchange: the head, body pieces, then the end or an error.
pub(crate) type Exchange = Pin<Box<dyn Stream<Item = HttpIo> + Send>>;

/// A pooled HTTP client with the static headers (token, `-H`) and, without a static token,
/// the authorizer whose current bearer each request takes.
#[derive(Clone)]
pub(crate) struct HttpClient {
    client: Client<Connector, Full<Bytes>>,
    opts: Arc<Options>,
    auth: Option<Arc<Authorizer>>,
}

type Responding = Pin<
    Box<
        dyn Future<Output = Result<http::Response<Incoming>, hyper_util::client::legacy::Error>>
            + Send,
    >,
>;

fn set_bearer(headers: &mut http::HeaderMap, token: &Secret) {
    if let Ok(mut v) = HeaderValue::from_str(&format!("Bearer {}", token.expose())) {
        v.set_sensitive(true);
        headers.insert(http::header::AUTHORIZATION, v);
    }
}

impl HttpClient {
    /// A client for `opts` (its URL is http:// or https://).
    pub(crate) fn new(opts: Arc<Options>, auth: Option<Arc<Authorizer>>) -> HttpClient {
        let tls = opts.tls.as_ref().map(|c| {
            let mut c = (**c).clone();
            c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            Arc::new(c)
        });
        let connector = Connector {
            opts: opts.clone(),
            tls,
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(8)
            .timer(TokioTimer::new())
            .http2_keep_alive_interval(H2_PING)
            .http2_keep_alive_timeout(H2_PING)
            .build(connector);
        HttpClient { client, opts, auth }
    }

    /// Starts `out`; its events come from the returned stream.
    pub(crate) fn start(&self, out: Outgoing) -> Exchange {
        let mut req = http::Request::new(Full::new(out.body));
        *req.method_mut() = out.method;
        *req.uri_mut() = out.url;
        let headers = req.headers_mut();
        for (name, value) in &self.opts.headers {
            headers.append(name.clone(), value.clone());
        }
        headers.extend(out.headers);
        // A static token wins; else the authorizer's current one (refreshed near expiry).
        let auth = match &self.opts.token {
            Some(token) => {
                set_bearer(headers, token);
                None
            }
            None => self.auth.clone(),
        };
        let client = self.client.clone();
        let fut: Responding = Box::pin(async move {
            if let Some(a) = auth {
                match a.bearer().await {
                    Ok(Some(t)) => set_bearer(req.headers_mut(), &t),
                    Ok(None) => {}
                    Err(e) => warn!("sending without a token: {e}"),
                }
            }
            client.request(req).await
        });
        Box::pin(futures_util::stream::unfold(
            State::Start(fut),
            |state| async move {
                match state {
                    State::Start(fut) => match fut.await {
                        Ok(resp) => {
                            let (parts, body) = resp.into_parts();
                            Some((
                                HttpIo::Head {
                                    status: parts.status,
                                    headers: parts.headers,
                                },
                                State::Body(body),
                            ))
                        }
                        Err(e) => Some((HttpIo::Error(reason(&e)), State::Done)),
                    },
                    State::Body(mut body) => loop {
                        match body.frame().await {
                            Some(Ok(f)) => {
                                if let Ok(data) = f.into_data() {
                                    if !data.is_empty() {
                                        break Some((HttpIo::Data(data), State::Body(body)));
                                    }
                                }
                            }
                            Some(Err(e)) => break Some((HttpIo::Error(reason(&e)), State::Done)),
                            None => break Some((HttpIo::End, State::Done)),
                        }
                    },
                    State::Done => None,
                }
            },
        ))
    }
}

enum State {
    Start(Responding),
    Body(Incoming),
    Done,
}

/// An error with its causes, on one line (hyper's own text is only "client error (Connect)").
fn reason(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let t = s.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        source = s.source();
    }
    shared::log_safe_max(&text, 300).into_owned()
}

/// Opens connections with `crate::transport` (proxy, TLS with ALPN).
#[derive(Clone)]
struct Connector {
    opts: Arc<Options>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Conn>;
    type Error = ClientError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ClientError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ClientError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let url = this.opts.url.clone();
            let https = uri.scheme_str() == Some("https");
            let host = uri
                .host()
                .ok_or_else(|| ClientError::BadUrl {
                    url: url.clone(),
                    reason: "no host".into(),
                })?
                .to_owned();
            let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
            let tls = if https {
                Some(this.tls.as_ref().ok_or_else(|| ClientError::BadUrl {
                    url: url.clone(),
                    reason: "https:// needs TLS settings".into(),
                })?)
            } else {
                None
            };
            let open = transport::open_negotiated(&url, &host, port, this.opts.proxy.as_ref(), tls);
            match tokio::time::timeout(CONNECT_TIMEOUT, open).await {
                Ok(Ok((io, h2))) => Ok(TokioIo::new(Conn { io, h2 })),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(ClientError::Unreachable {
                    url,
                    reason: format!("no connection within {} s", CONNECT_TIMEOUT.as_secs()),
                }),
            }
        })
    }
}

/// An open connection and whether it speaks HTTP/2.
struct Conn {
    io: BoxIo,
    h2: bool,
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        let c = Connected::new();
        if self.h2 {
            c.negotiated_h2()
        } else {
            c
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

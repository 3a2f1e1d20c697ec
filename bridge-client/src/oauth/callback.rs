//! The loopback redirect listener (RFC 8252 §7.3): `127.0.0.1` on a port the OS picks, with a
//! path that is unique to the flow when the client is registered for it, so any number of
//! sign-ins run at once without colliding. It answers the one matching GET and 404 to the rest.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::AuthError;

/// Largest request head read from the browser.
const MAX_HEAD: usize = 16 * 1024;

/// A bound listener waiting for the browser's redirect.
#[derive(Debug)]
pub(super) struct Callback {
    listener: TcpListener,
    path: String,
    /// `http://127.0.0.1:PORT/PATH`, the `redirect_uri`.
    pub(super) redirect_uri: String,
}

impl Callback {
    /// Binds `127.0.0.1:0`; `path` starts with `/`.
    pub(super) async fn bind(path: &str) -> Result<Callback, AuthError> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.map_err(|e| {
            AuthError::Io(format!(
                "cannot listen on 127.0.0.1 for the sign-in redirect: {e}"
            ))
        })?;
        let port = listener
            .local_addr()
            .map_err(|e| AuthError::Io(e.to_string()))?
            .port();
        Ok(Callback {
            listener,
            path: path.to_owned(),
            redirect_uri: format!("http://127.0.0.1:{port}{path}"),
        })
    }

    /// The query string of the first GET to our path, within `timeout`.
    pub(super) async fn wait(self, timeout: Duration) -> Result<String, AuthError> {
        let run = async {
            loop {
                let (stream, _) = match self.listener.accept().await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!("callback accept: {e}");
                        continue;
                    }
                };
                match tokio::time::timeout(Duration::from_secs(10), self.serve(stream)).await {
                    Ok(Some(query)) => return query,
                    _ => continue,
                }
            }
        };
        tokio::time::timeout(timeout, run)
            .await
            .map_err(|_| AuthError::Timeout(timeout.as_secs()))
    }

    /// One connection: the query when it is our redirect.
    async fn serve(&self, mut stream: TcpStream) -> Option<String> {
        let mut head = Vec::with_capacity(1024);
        let mut buf = [0u8; 2048];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.ok()?;
            if n == 0 || head.len() + n > MAX_HEAD {
                return None;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let line = head.split(|&b| b == b'\r').next()?;
        let line = std::str::from_utf8(line).ok()?;
        let mut parts = line.split(' ');
        let (method, target) = (parts.next()?, parts.next()?);
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let ours = method == "GET" && path == self.path;
        let (status, body) = if ours {
            (
                "200 OK",
                "<!doctype html><title>Signed in</title><p>bridge-client: sign-in received. \
                 You can close this tab.</p>",
            )
        } else {
            ("404 Not Found", "not found")
        };
        let resp = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nReferrer-Policy: no-referrer\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(resp.as_bytes()).await;
        let _ = stream.shutdown().await;
        ours.then(|| query.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(uri: &str) -> String {
        let u = url::Url::parse(uri).unwrap();
        let mut s = TcpStream::connect((u.host_str().unwrap(), u.port().unwrap()))
            .await
            .unwrap();
        let target = match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_owned(),
        };
        s.write_all(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn only_our_path_ends_the_wait() {
        let cb = Callback::bind("/callback/abc").await.unwrap();
        let uri = cb.redirect_uri.clone();
        let waiter = tokio::spawn(cb.wait(Duration::from_secs(10)));
        let base = uri.trim_end_matches("/callback/abc");
        assert!(get(&format!("{base}/callback/other?code=1"))
            .await
            .contains("404"));
        assert!(get(&format!("{uri}?code=2&state=s"))
            .await
            .contains("200 OK"));
        assert_eq!(waiter.await.unwrap().unwrap(), "code=2&state=s");
    }

    #[tokio::test]
    async fn two_listeners_never_share_a_port() {
        let a = Callback::bind("/cb").await.unwrap();
        let b = Callback::bind("/cb").await.unwrap();
        assert_ne!(a.redirect_uri, b.redirect_uri);
    }

    #[tokio::test]
    async fn times_out() {
        let cb = Callback::bind("/cb").await.unwrap();
        assert!(matches!(
            cb.wait(Duration::from_millis(100)).await,
            Err(AuthError::Timeout(_))
        ));
    }
}

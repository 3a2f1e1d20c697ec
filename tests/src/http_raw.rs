//! A small raw HTTP/1.1 client for the Streamable HTTP tests and the benchmark: one request per connection, the
//! answer read to its end (de-chunked); [`Conn`], several requests on one kept-alive
//! connection; and SSE bodies split into events.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// An HTTP answer, its body de-chunked.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The messages of a POST's answer, either form: a JSON body (one message, no event id)
    /// or an SSE stream's events (see [`sse_events`]).
    pub fn messages(&self) -> Vec<(Option<String>, Value)> {
        if self
            .header("content-type")
            .is_some_and(|v| v.starts_with("application/json"))
        {
            serde_json::from_str(&self.body)
                .map(|v| vec![(None, v)])
                .unwrap_or_default()
        } else {
            sse_events(&self.body)
        }
    }
}

/// A connection to `addr` whose reads give up after 20 s (a test never hangs on a silent peer).
fn connect(addr: SocketAddr) -> Result<std::net::TcpStream> {
    let s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    Ok(s)
}

/// Writes one HTTP/1.1 request: `Host: test`, `headers`, and `body` with its length.
fn send_request(
    s: &mut std::net::TcpStream,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<()> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes())?;
    Ok(())
}

/// One HTTP/1.1 request on its own connection; reads the answer to its end (bounded in time).
pub fn raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<Resp> {
    let mut s = connect(addr)?;
    let mut with_close = headers.to_vec();
    with_close.push(("Connection", "close"));
    send_request(&mut s, method, path, &with_close, body)?;
    let mut bytes = Vec::new();
    s.read_to_end(&mut bytes)?;
    let text = String::from_utf8(bytes)?;
    let (head, rest) = text.split_once("\r\n\r\n").context("response head")?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .context("status line")?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_owned()
    };
    Ok(Resp {
        status,
        headers,
        body,
    })
}

/// [`raw`] to an `http://host:port/path` URL (a loopback address, no name lookup).
pub fn raw_url(method: &str, url: &str, body: &str) -> Result<Resp> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url} is not an http:// URL"))?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr: SocketAddr = host
        .parse()
        .with_context(|| format!("{url}: {host} is not an address"))?;
    raw(
        addr,
        method,
        if path.is_empty() { "/" } else { path },
        &[],
        body,
    )
}

fn dechunk(mut rest: &str) -> Result<String> {
    let mut out = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").context("chunk size")?;
        let n = usize::from_str_radix(size.trim(), 16)?;
        if n == 0 {
            return Ok(out);
        }
        if after.len() < n + 2 {
            bail!("truncated chunk");
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
}

/// The events of an SSE body: (id, the JSON of its data), comments skipped.
pub fn sse_events(body: &str) -> Vec<(Option<String>, Value)> {
    body.split("\n\n")
        .filter_map(|ev| {
            let mut id = None;
            let mut data = Vec::new();
            for line in ev.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            let value = serde_json::from_str(&data.join("\n")).ok()?;
            Some((id, value))
        })
        .collect()
}

/// One kept-alive HTTP/1.1 connection: requests one after another, each answer read to its
/// end by its framing (Content-Length or chunked), the connection left open.
pub struct Conn {
    stream: std::net::TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> Result<Conn> {
        Ok(Conn {
            stream: connect(addr)?,
            buf: Vec::new(),
        })
    }

    /// Sends one request (no `Connection` header: HTTP/1.1's default, keep-alive) and reads its
    /// whole answer.
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<Resp> {
        send_request(&mut self.stream, method, path, headers, body)?;
        loop {
            if let Some((resp, used)) = complete(&self.buf)? {
                self.buf.drain(..used);
                return Ok(resp);
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                bail!(
                    "connection closed before the answer was whole: {}",
                    String::from_utf8_lossy(&self.buf)
                );
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Waits for the relay to close the connection; how long that took.
    pub fn wait_closed(&mut self) -> Result<Duration> {
        let start = std::time::Instant::now();
        let mut chunk = [0u8; 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => Ok(start.elapsed()),
            Ok(n) => bail!(
                "unexpected bytes: {:?}",
                String::from_utf8_lossy(&chunk[..n])
            ),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(start.elapsed()),
            Err(e) => Err(e.into()),
        }
    }
}

/// A whole answer at the start of `buf`, and how many bytes it took; `None` while incomplete.
fn complete(buf: &[u8]) -> Result<Option<(Resp, usize)>> {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end])?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .context("status line")?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let rest = &buf[head_end + 4..];
    let (body, used) = if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        let text = String::from_utf8_lossy(rest);
        let Some(end) = text
            .find("\r\n0\r\n\r\n")
            .map(|i| i + 7)
            .or_else(|| text.starts_with("0\r\n\r\n").then_some(5))
        else {
            return Ok(None);
        };
        (dechunk(&text[..end])?, end)
    } else {
        let len: usize = find("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if rest.len() < len {
            return Ok(None);
        }
        (String::from_utf8_lossy(&rest[..len]).into_owned(), len)
    };
    let resp = Resp {
        status,
        headers,
        body,
    };
    Ok(Some((resp, head_end + 4 + used)))
}

/// An SSE answer read as it arrives, on a connection of its own: the head, then the chunked
/// body de-chunked incrementally and split into events. For tests that break a stream at a
/// chosen event and resume it.
pub struct SseStream {
    stream: std::net::TcpStream,
    /// Bytes read and not yet de-chunked.
    raw: Vec<u8>,
    /// De-chunked body not yet split into events.
    body: String,
    pub status: u16,
    /// The body ended (the last chunk came).
    pub ended: bool,
}

/// One SSE event: its id (if any) and the JSON of its data (`Null` for a priming event, whose
/// data is empty).
pub type SseEvent = (Option<String>, Value);

impl SseStream {
    /// Sends `method path` with `headers` and `body` and reads the answer's head.
    pub fn open(
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<SseStream> {
        let mut stream = connect(addr)?;
        send_request(&mut stream, method, path, headers, body)?;
        let mut s = SseStream {
            stream,
            raw: Vec::new(),
            body: String::new(),
            status: 0,
            ended: false,
        };
        let head_end = loop {
            if let Some(i) = s.raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            s.fill()?;
        };
        let head = String::from_utf8_lossy(&s.raw[..head_end]).into_owned();
        s.status = head
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .context("status line")?;
        if !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            bail!("not a chunked (streamed) answer: {head}");
        }
        s.raw.drain(..head_end + 4);
        Ok(s)
    }

    fn fill(&mut self) -> Result<()> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            bail!("connection closed mid-stream");
        }
        self.raw.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// Moves whole chunks from `raw` to `body`.
    fn dechunk(&mut self) -> Result<()> {
        while let Some(eol) = self.raw.windows(2).position(|w| w == b"\r\n") {
            let size = std::str::from_utf8(&self.raw[..eol])?.trim();
            let n =
                usize::from_str_radix(size, 16).with_context(|| format!("chunk size {size:?}"))?;
            if self.raw.len() < eol + 2 + n + 2 {
                return Ok(());
            }
            if n == 0 {
                self.ended = true;
            }
            self.body
                .push_str(&String::from_utf8_lossy(&self.raw[eol + 2..eol + 2 + n]));
            self.raw.drain(..eol + 2 + n + 2);
        }
        Ok(())
    }

    /// The next event (comments skipped); `None` once the stream has ended.
    pub fn next_event(&mut self) -> Result<Option<SseEvent>> {
        loop {
            self.dechunk()?;
            while let Some(end) = self.body.find("\n\n") {
                let text: String = self.body.drain(..end + 2).collect();
                let mut id = None;
                let mut data = Vec::new();
                for line in text.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v).to_owned());
                    }
                }
                if id.is_none() && data.is_empty() {
                    continue; // a comment (keep-alive) or a bare `retry:`
                }
                let value = if data.iter().all(|d| d.is_empty()) {
                    Value::Null
                } else {
                    serde_json::from_str(&data.join("\n"))
                        .with_context(|| format!("event data is not JSON: {text:?}"))?
                };
                return Ok(Some((id, value)));
            }
            if self.ended {
                return Ok(None);
            }
            self.fill()?;
        }
    }
}

//! A sans-IO parser for `text/event-stream` (the WHATWG EventSource format): bytes in, in any
//! chunking, events out. It keeps what resuming a stream needs — the last event id and the
//! server's `retry:` delay — and bounds what it holds: a line or an event's data over the limit
//! is an error, never a growing buffer. It knows nothing about JSON-RPC or HTTP.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};

/// One dispatched event with data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    /// The `event:` field (`message` when absent).
    pub(crate) name: String,
    /// The `data:` lines joined with `\n`.
    pub(crate) data: Bytes,
}

/// The stream broke a limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum SseError {
    /// A line or an event's data exceeded the limit.
    #[error("an event on the server's stream is larger than {0} bytes")]
    TooLarge(usize),
}

/// The parser's state.
#[derive(Debug)]
pub(crate) struct SseParser {
    /// Bytes received and not yet split into lines.
    buf: BytesMut,
    /// How far `buf` has been scanned for a line end.
    scanned: usize,
    /// The data of the event being read.
    data: BytesMut,
    /// Whether a `data:` field was seen for the event being read.
    has_data: bool,
    name: Option<String>,
    /// The last-event-id buffer: becomes [`Self::last_event_id`] when an event is dispatched.
    id_buffer: Option<String>,
    last_event_id: Option<String>,
    retry: Option<Duration>,
    /// A `\r` ended the last line: a `\n` right after it belongs to it.
    after_cr: bool,
    /// The optional byte-order mark at the very start is still possible.
    at_start: bool,
    max: usize,
}

impl SseParser {
    /// A parser accepting lines and event data up to `max` bytes.
    pub(crate) fn new(max: usize) -> SseParser {
        SseParser {
            buf: BytesMut::new(),
            scanned: 0,
            data: BytesMut::new(),
            has_data: false,
            name: None,
            id_buffer: None,
            last_event_id: None,
            retry: None,
            after_cr: false,
            at_start: true,
            max,
        }
    }

    /// The id of the last dispatched event (what `Last-Event-ID` resumes from).
    pub(crate) fn last_event_id(&self) -> Option<&str> {
        self.last_event_id.as_deref()
    }

    /// The reconnection delay the server asked for, if any.
    pub(crate) fn retry(&self) -> Option<Duration> {
        self.retry
    }

    /// Carries a broken stream's last event id and retry over to its resumption.
    pub(crate) fn restore(&mut self, last_event_id: Option<String>, retry: Option<Duration>) {
        self.id_buffer.clone_from(&last_event_id);
        self.last_event_id = last_event_id;
        self.retry = retry;
    }

    /// Appends received bytes; take events with [`Self::next_event`].
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete event with data, if one is buffered. An event with no data (a
    /// comment, an id or a retry alone) updates the state and yields nothing.
    pub(crate) fn next_event(&mut self) -> Result<Option<SseEvent>, SseError> {
        loop {
            if self.at_start {
                if self.buf.len() < 3 && b"\xEF\xBB\xBF".starts_with(&self.buf) {
                    return Ok(None);
                }
                if self.buf.starts_with(b"\xEF\xBB\xBF") {
                    self.buf.advance(3);
                }
                self.at_start = false;
            }
            if self.after_cr && !self.buf.is_empty() {
                if self.buf[0] == b'\n' {
                    self.buf.advance(1);
                }
                self.after_cr = false;
            }
            let Some(end) = self.buf[self.scanned..]
                .iter()
                .position(|b| *b == b'\n' || *b == b'\r')
                .map(|p| p + self.scanned)
            else {
                self.scanned = self.buf.len();
                if self.buf.len() > self.max {
                    return Err(SseError::TooLarge(self.max));
                }
                return Ok(None);
            };
            let line = self.buf.split_to(end + 1);
            self.scanned = 0;
            self.after_cr = line[end] == b'\r';
            if let Some(event) = self.on_line(&line[..end])? {
                return Ok(Some(event));
            }
        }
    }

    fn on_line(&mut self, line: &[u8]) -> Result<Option<SseEvent>, SseError> {
        if line.is_empty() {
            return Ok(self.dispatch());
        }
        if line[0] == b':' {
            return Ok(None);
        }
        let (field, value) = match line.iter().position(|b| *b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &[][..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.extend_from_slice(b"\n");
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
                if self.data.len() > self.max {
                    return Err(SseError::TooLarge(self.max));
                }
            }
            b"event" => self.name = Some(String::from_utf8_lossy(value).into_owned()),
            b"id" if !value.contains(&0) => {
                self.id_buffer = Some(String::from_utf8_lossy(value).into_owned());
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                if let Some(ms) = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                {
                    self.retry = Some(Duration::from_millis(ms));
                }
            }
            _ => {}
        }
        Ok(None)
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        self.last_event_id.clone_from(&self.id_buffer);
        let name = self.name.take();
        if !self.has_data {
            return None;
        }
        self.has_data = false;
        let data = self.data.split().freeze();
        Some(SseEvent {
            name: name.unwrap_or_else(|| "message".to_owned()),
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &[u8] = b"\xEF\xBB\xBF: keep-alive\r\nid: 1\r\nretry: 2500\r\n\r\n\
event: message\nid: 2\ndata: {\"a\":1}\n\n\
data: line one\rdata:line two\r\r\
id: 3\ndata\n\n\
event: endpoint\ndata: /messages/?session_id=x\n\n";

    fn all(p: &mut SseParser) -> Vec<SseEvent> {
        let mut v = Vec::new();
        while let Some(e) = p.next_event().expect("within limits") {
            v.push(e);
        }
        v
    }

    fn expected() -> Vec<SseEvent> {
        let ev = |n: &str, d: &'static [u8]| SseEvent {
            name: n.into(),
            data: Bytes::from_static(d),
        };
        vec![
            ev("message", b"{\"a\":1}"),
            ev("message", b"line one\nline two"),
            ev("message", b""),
            ev("endpoint", b"/messages/?session_id=x"),
        ]
    }

    #[test]
    fn parses_whole_stream() {
        let mut p = SseParser::new(1024);
        p.push(STREAM);
        assert_eq!(all(&mut p), expected());
        assert_eq!(p.last_event_id(), Some("3"));
        assert_eq!(p.retry(), Some(Duration::from_millis(2500)));
    }

    #[test]
    fn every_chunk_boundary_gives_the_same_events() {
        for split in 0..=STREAM.len() {
            let mut p = SseParser::new(1024);
            p.push(&STREAM[..split]);
            let mut got = all(&mut p);
            p.push(&STREAM[split..]);
            got.extend(all(&mut p));
            assert_eq!(got, expected(), "split at {split}");
            assert_eq!(p.last_event_id(), Some("3"));
        }
        // One byte at a time.
        let mut p = SseParser::new(1024);
        let mut got = Vec::new();
        for b in STREAM {
            p.push(std::slice::from_ref(b));
            got.extend(all(&mut p));
        }
        assert_eq!(got, expected());
    }

    #[test]
    fn id_only_event_primes_resume_without_dispatch() {
        let mut p = SseParser::new(64);
        p.push(b"id: abc\ndata:\n\n");
        // `data:` with an empty value is an event with empty data.
        assert_eq!(all(&mut p).len(), 1);
        let mut p = SseParser::new(64);
        p.push(b"id: abc\n\n");
        assert!(all(&mut p).is_empty());
        assert_eq!(p.last_event_id(), Some("abc"));
        // An id with NUL is ignored; an id not yet dispatched does not count.
        p.push(b"id: a\0b\n\nid: later\n");
        assert!(all(&mut p).is_empty());
        assert_eq!(p.last_event_id(), Some("abc"));
    }

    #[test]
    fn limits_hold_for_lines_and_data() {
        let mut p = SseParser::new(8);
        p.push(b"data: 0123456789");
        assert_eq!(p.next_event(), Err(SseError::TooLarge(8)));
        let mut p = SseParser::new(8);
        p.push(b"data: 12345\ndata: 12345\n");
        assert_eq!(p.next_event(), Err(SseError::TooLarge(8)));
    }
}

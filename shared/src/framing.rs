//! Newline-delimited framing for MCP's stdio transport, with a hard cap on line length.
//!
//! A line longer than the cap is not buffered: its first bytes are kept (enough to recover a
//! JSON-RPC id for the error reply) and the rest is counted and dropped, so memory stays bounded
//! whatever a peer sends. This module knows nothing about JSON.

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How many leading bytes of an oversize line are kept for diagnostics and id recovery.
pub const OVERSIZE_HEAD: usize = 16 * 1024;

/// The smallest read the reader asks the OS for.
const MIN_READ: usize = 8 * 1024;

/// Buffer capacity kept between lines; a buffer grown past it for a long line is let go.
const KEEP_CAPACITY: usize = 64 * 1024;

/// One unit read from a newline-delimited stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete, non-blank line without its `\n` (or `\r\n`) terminator.
    Line(Bytes),
    /// A line longer than the limit. `head` holds its first bytes (at most [`OVERSIZE_HEAD`]),
    /// `len` its full length in bytes (without the `\n`).
    Oversize { head: Bytes, len: usize },
}

/// Reads `\n`-delimited lines from `R`, never holding more than about `max` bytes of one line.
#[derive(Debug)]
pub struct LineReader<R> {
    inner: R,
    buf: BytesMut,
    max: usize,
    /// Bytes of `buf` already searched for `\n`, so a long line is scanned once.
    scanned: usize,
    /// Set while the rest of an oversize line is being skipped.
    discarding: Option<(Bytes, usize)>,
    eof: bool,
    /// Most bytes of one line to skip before giving up on the stream (`None`: no bound).
    unterminated: Option<usize>,
}

/// A stream wrote more than its limit without a newline (see
/// [`LineReader::with_unterminated_limit`]); the reader gave up on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{len} bytes without a newline (the limit is {limit})")]
pub struct Unterminated {
    /// Bytes of the line so far.
    pub len: usize,
    /// The limit.
    pub limit: usize,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    /// A reader that reports lines longer than `max` bytes as [`Frame::Oversize`].
    pub fn new(inner: R, max: usize) -> Self {
        LineReader {
            inner,
            buf: BytesMut::with_capacity(MIN_READ),
            max: max.max(1),
            scanned: 0,
            discarding: None,
            eof: false,
            unterminated: None,
        }
    }

    /// Gives up on the stream once one line passes `limit` bytes without a newline:
    /// [`Self::next_frame`] then fails with [`Unterminated`] (as an `InvalidData` I/O error),
    /// instead of skipping forever a peer that never ends its line.
    pub fn with_unterminated_limit(mut self, limit: usize) -> Self {
        self.unterminated = Some(limit);
        self
    }

    /// The next frame, or `None` at end of stream. A last line without a terminator counts.
    pub async fn next_frame(&mut self) -> std::io::Result<Option<Frame>> {
        loop {
            if let Some(frame) = self.take_buffered() {
                match frame {
                    Some(frame) => return Ok(Some(frame)),
                    None => continue, // a blank line
                }
            }
            if let (Some(limit), Some((_, len))) = (self.unterminated, &self.discarding) {
                if *len > limit {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        Unterminated { len: *len, limit },
                    ));
                }
            }
            if self.eof {
                return Ok(self.finish());
            }
            let want = MIN_READ.max(self.buf.len().min(self.max));
            self.buf.reserve(want);
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                self.eof = true;
            }
        }
    }

    /// Splits one line off the buffer if a terminator is there. `Some(None)` is a blank line.
    fn take_buffered(&mut self) -> Option<Option<Frame>> {
        match memchr::memchr(b'\n', &self.buf[self.scanned..]) {
            Some(pos) => {
                let end = self.scanned + pos;
                let frame = complete(self.discarding.take(), &self.buf[..end], self.max);
                self.buf.advance(end + 1);
                self.scanned = 0;
                self.shrink_if_empty();
                Some(frame)
            }
            None => {
                self.scanned = self.buf.len();
                self.spill_if_oversize();
                None
            }
        }
    }

    /// A buffer grown for one long line goes back to its small size once it is empty, so a
    /// reader holds a long line's room only while it reads one.
    fn shrink_if_empty(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > KEEP_CAPACITY {
            self.buf = BytesMut::with_capacity(MIN_READ);
        }
    }

    /// Once a line without a terminator passes the cap, keep its head and drop the rest.
    fn spill_if_oversize(&mut self) {
        match &mut self.discarding {
            Some((head, len)) => {
                *len += self.buf.len();
                if head.len() < OVERSIZE_HEAD {
                    let more = (OVERSIZE_HEAD - head.len()).min(self.buf.len());
                    let mut grown = BytesMut::from(&head[..]);
                    grown.extend_from_slice(&self.buf[..more]);
                    *head = grown.freeze();
                }
                self.buf.clear();
                self.scanned = 0;
                self.shrink_if_empty();
            }
            None if self.buf.len() > self.max => {
                let keep = self.buf.len().min(OVERSIZE_HEAD);
                let head = Bytes::copy_from_slice(&self.buf[..keep]);
                self.discarding = Some((head, self.buf.len()));
                self.buf.clear();
                self.scanned = 0;
                self.shrink_if_empty();
            }
            None => {}
        }
    }

    fn finish(&mut self) -> Option<Frame> {
        if self.discarding.is_some() || !self.buf.is_empty() {
            let frame = complete(self.discarding.take(), &self.buf, self.max);
            self.buf.clear();
            self.scanned = 0;
            return frame;
        }
        None
    }
}

/// The frame for one line read whole (`line` without its `\n`), or for the end of an oversize
/// one being skipped. `None` for a blank line.
///
/// The line is copied into an allocation of its own: a slice of the read buffer would keep the
/// whole buffer alive (up to twice a long line, grown while reading it) for as long as the
/// message waits in a queue, and queues are bounded by the bytes their messages hold.
fn complete(discarding: Option<(Bytes, usize)>, line: &[u8], max: usize) -> Option<Frame> {
    if let Some((head, len)) = discarding {
        return Some(Frame::Oversize {
            head,
            len: len + line.len(),
        });
    }
    if line.len() > max {
        let keep = line.len().min(OVERSIZE_HEAD);
        return Some(Frame::Oversize {
            head: Bytes::copy_from_slice(&line[..keep]),
            len: line.len(),
        });
    }
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(|b| b.is_ascii_whitespace()) {
        return None;
    }
    Some(Frame::Line(Bytes::copy_from_slice(line)))
}

/// Writes one message followed by `\n`. The caller decides when to flush.
pub async fn write_line<W: AsyncWrite + Unpin>(out: &mut W, msg: &[u8]) -> std::io::Result<()> {
    out.write_all(msg).await?;
    out.write_all(b"\n").await
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn read_all(input: &[u8], max: usize) -> Vec<Frame> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let mut r = LineReader::new(input, max);
            let mut out = Vec::new();
            while let Some(f) = r.next_frame().await.expect("read") {
                out.push(f);
            }
            out
        })
    }

    #[test]
    fn a_line_that_never_ends_is_given_up_on_at_its_limit() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let mut input = b"{\"a\":1}\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 1 << 20));
        rt.block_on(async {
            let mut r = LineReader::new(&input[..], 1024).with_unterminated_limit(64 * 1024);
            assert!(matches!(r.next_frame().await, Ok(Some(Frame::Line(_)))));
            let err = r.next_frame().await.expect_err("gives up");
            let u = err
                .get_ref()
                .and_then(|e| e.downcast_ref::<Unterminated>())
                .expect("typed");
            assert!(u.len > 64 * 1024 && u.len < 128 * 1024, "{u:?}");
            // Without the limit the same input is one oversize line at EOF.
            let mut r = LineReader::new(&input[..], 1024);
            assert!(matches!(r.next_frame().await, Ok(Some(Frame::Line(_)))));
            assert!(matches!(
                r.next_frame().await,
                Ok(Some(Frame::Oversize { len, .. })) if len == 1 << 20
            ));
        });
    }

    #[test]
    fn splits_lines_and_skips_blank_ones() {
        let frames = read_all(b"{\"a\":1}\n\n\r\n{\"b\":2}\r\n{\"c\":3}", 100);
        assert_eq!(
            frames,
            vec![
                Frame::Line(Bytes::from_static(b"{\"a\":1}")),
                Frame::Line(Bytes::from_static(b"{\"b\":2}")),
                Frame::Line(Bytes::from_static(b"{\"c\":3}")),
            ]
        );
    }

    #[test]
    fn oversize_line_is_reported_and_stream_continues() {
        let mut input = vec![b'x'; 50_000];
        input.extend_from_slice(b"\nok\n");
        let frames = read_all(&input, 1000);
        assert_eq!(frames.len(), 2);
        match &frames[0] {
            Frame::Oversize { head, len } => {
                assert_eq!(*len, 50_000);
                assert_eq!(head.len(), OVERSIZE_HEAD);
            }
            other => panic!("expected oversize, got {other:?}"),
        }
        assert_eq!(frames[1], Frame::Line(Bytes::from_static(b"ok")));
    }

    #[test]
    fn line_of_exactly_max_is_accepted() {
        let mut input = vec![b'y'; 64];
        input.push(b'\n');
        let frames = read_all(&input, 64);
        assert_eq!(frames, vec![Frame::Line(Bytes::from(vec![b'y'; 64]))]);
    }

    proptest! {
        /// Whatever the chunking and content, the lines that fit come out unchanged and in order,
        /// and each oversize line is reported once with its true length.
        #[test]
        fn never_desynchronizes(lines in proptest::collection::vec(
            proptest::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..300), 0..20),
            max in 1usize..200)
        {
            let mut input = Vec::new();
            for l in &lines { input.extend_from_slice(l); input.push(b'\n'); }
            let frames = read_all(&input, max);
            let mut expected = Vec::new();
            for l in &lines {
                let raw = l.len();
                let mut l = l.clone();
                if raw > max {
                    expected.push(raw);
                    continue;
                }
                if l.last() == Some(&b'\r') { l.pop(); }
                if !l.iter().all(|b| b.is_ascii_whitespace()) {
                    expected.push(usize::MAX - l.len());
                }
            }
            let got: Vec<usize> = frames.iter().map(|f| match f {
                Frame::Line(b) => { prop_assert!(b.len() <= max); Ok(usize::MAX - b.len()) }
                Frame::Oversize { len, .. } => Ok(*len),
            }).collect::<Result<_, TestCaseError>>()?;
            prop_assert_eq!(got, expected);
        }
    }
}

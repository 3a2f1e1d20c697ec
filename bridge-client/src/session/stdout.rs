//! stdout to the IDE: whole lines taken from a session core, gathered into one buffer and
//! written with one `write` at a time (cancel-safe), so a driver's loop never waits on the IDE
//! while it has other work. Which lines, and when, is the core's business.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// How long the last output may take to reach stdout before exiting.
const OUTPUT_WAIT: Duration = Duration::from_millis(500);

/// Bytes gathered for one write to stdout.
const STDOUT_BATCH: usize = 64 * 1024;

/// A session core's queue of lines for the IDE.
pub(crate) trait Output {
    /// The next message for stdout (without its newline).
    fn poll_output(&mut self) -> Option<Bytes>;
    /// `n` bytes reached stdout.
    fn on_output_written(&mut self, n: usize, now: Instant);
}

/// stdout: one buffer of whole lines taken from the core, written with one `write` at a time
/// (cancel-safe), so the loop never waits on the IDE while it has other work.
pub(crate) struct Stdout<W> {
    w: W,
    /// Whole lines taken from the core, not yet written.
    pub(crate) buf: BytesMut,
    /// Why stdout failed, once it has.
    pub(crate) error: Option<std::io::Error>,
}

impl<W: AsyncWrite + Unpin> Stdout<W> {
    pub(crate) fn new(w: W) -> Stdout<W> {
        Stdout {
            w,
            buf: BytesMut::new(),
            error: None,
        }
    }

    /// Takes whole messages from the core, up to [`STDOUT_BATCH`] bytes.
    pub(crate) fn fill(&mut self, core: &mut impl Output) {
        if self.error.is_some() {
            return;
        }
        while self.buf.len() < STDOUT_BATCH {
            let Some(msg) = core.poll_output() else {
                break;
            };
            self.buf.reserve(msg.len() + 1);
            self.buf.put_slice(&msg);
            self.buf.put_u8(b'\n');
        }
    }

    pub(crate) fn has_data(&self) -> bool {
        !self.buf.is_empty()
    }

    /// One write: it wrote `n` bytes, or nothing.
    pub(crate) async fn write_some(&mut self) -> std::io::Result<usize> {
        match self.w.write(&self.buf).await {
            Ok(0) => Err(std::io::ErrorKind::WriteZero.into()),
            other => other,
        }
    }

    pub(crate) fn fail(&mut self, e: std::io::Error) {
        self.buf.clear();
        self.error = Some(e);
    }

    /// Writes everything the core still has for stdout, within [`OUTPUT_WAIT`].
    pub(crate) async fn flush_all(&mut self, core: &mut impl Output) {
        let _ = tokio::time::timeout(OUTPUT_WAIT, async {
            loop {
                self.fill(core);
                if !self.has_data() {
                    break;
                }
                match self.write_some().await {
                    Ok(n) => {
                        self.buf.advance(n);
                        core.on_output_written(n, Instant::now());
                    }
                    Err(e) => return self.fail(e),
                }
            }
            if let Err(e) = self.w.flush().await {
                self.fail(e);
            }
        })
        .await;
    }
}

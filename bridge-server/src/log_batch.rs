//! The relay's log lines on their way to stderr, gathered so that a busy relay writes them a
//! batch at a time instead of one `write` (and one wake-up of whoever reads the log) per line:
//! there is one audit line per call (batched, 64 calls in flight over HTTP/1.1 went ≈ 10 %
//! faster in the benchmark).
//!
//! Lines at `WARN` and `ERROR` are written at once, after whatever waits before them; other
//! lines wait at most [`FLUSH_AFTER`] (or `MCP_BRIDGE_LOG_FLUSH_MS`; `0` writes every line at
//! once), and never more than [`MAX_BATCH`] bytes of them (the line that crosses it writes the
//! batch itself). Lines keep their order. A flusher thread
//! sleeps on a condition variable while nothing waits: an idle relay does not wake up for its
//! log. [`BatchedStderr::flush`] writes what waits (at exit, and from the panic hook).

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// How long a line may wait to be written, unless `MCP_BRIDGE_LOG_FLUSH_MS` says otherwise.
pub const FLUSH_AFTER: Duration = Duration::from_millis(50);
/// The environment variable that sets it (milliseconds; `0`: every line at once).
pub const FLUSH_ENV: &str = "MCP_BRIDGE_LOG_FLUSH_MS";
/// Most bytes of lines waiting at once.
pub const MAX_BATCH: usize = 256 * 1024;

struct Shared {
    /// Whole lines not written yet, in order.
    waiting: Mutex<Vec<u8>>,
    /// Held while a batch is taken and written, so batches reach stderr in order.
    out: Mutex<()>,
    wake: Condvar,
    /// Where batches go (stderr; a buffer in tests).
    sink: Sink,
    /// How long a line may wait.
    flush_after: Duration,
}

/// Where a batch of lines goes.
type Sink = Box<dyn Fn(&[u8]) + Send + Sync>;

/// A lock whose holder panicked still guards whole lines (each is appended in one call).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Writes what waits, then `line`.
    fn write_now(&self, line: &[u8]) {
        let _out = lock(&self.out);
        let mut batch = std::mem::take(&mut *lock(&self.waiting));
        batch.extend_from_slice(line);
        if !batch.is_empty() {
            (self.sink)(&batch);
        }
    }

    fn flush_forever(&self) {
        loop {
            {
                let mut waiting = lock(&self.waiting);
                while waiting.is_empty() {
                    waiting = self
                        .wake
                        .wait(waiting)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            }
            // Let the batch gather, then write it.
            std::thread::sleep(self.flush_after);
            self.write_now(b"");
        }
    }
}

/// Writes a batch to stderr. Nowhere to report a failing stderr: the lines are dropped
/// (`eprintln!` would panic).
fn to_stderr(batch: &[u8]) {
    let mut err = io::stderr().lock();
    let _ = err.write_all(batch);
    let _ = err.flush();
}

/// Log output to stderr in batches (a [`MakeWriter`] for `tracing_subscriber::fmt`).
#[derive(Clone)]
pub struct BatchedStderr {
    shared: Arc<Shared>,
    /// No flusher thread could be started: every line is written at once.
    unbatched: bool,
}

impl BatchedStderr {
    /// Starts the flusher thread (if it cannot be started, or `MCP_BRIDGE_LOG_FLUSH_MS` is
    /// `0`, every line is written at once; a value that is not a number is the default).
    pub fn start() -> BatchedStderr {
        let flush_after = std::env::var(FLUSH_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(FLUSH_AFTER, Duration::from_millis);
        let shared = Arc::new(Shared {
            waiting: Mutex::new(Vec::new()),
            out: Mutex::new(()),
            wake: Condvar::new(),
            sink: Box::new(to_stderr),
            flush_after,
        });
        let unbatched = flush_after.is_zero() || {
            let flusher = shared.clone();
            std::thread::Builder::new()
                .name("log-flusher".into())
                .spawn(move || flusher.flush_forever())
                .is_err()
        };
        let writer = BatchedStderr { shared, unbatched };
        let _ = STARTED.set(writer.clone());
        writer
    }

    /// Writes every line waiting now.
    pub fn flush(&self) {
        self.shared.write_now(b"");
    }
}

/// The process's batched stderr, once started.
static STARTED: std::sync::OnceLock<BatchedStderr> = std::sync::OnceLock::new();

/// Writes the log lines waiting now (before writing to stderr directly, to keep the order).
pub fn flush() {
    if let Some(w) = STARTED.get() {
        w.flush();
    }
}

/// One log line's writer.
pub struct LineWriter<'a> {
    shared: &'a Shared,
    urgent: bool,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let mut waiting = lock(&self.shared.waiting);
        if self.urgent || waiting.len() + line.len() > MAX_BATCH {
            drop(waiting);
            self.shared.write_now(line);
            return Ok(line.len());
        }
        let was_empty = waiting.is_empty();
        waiting.extend_from_slice(line);
        drop(waiting);
        if was_empty {
            self.shared.wake.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchedStderr {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> LineWriter<'a> {
        LineWriter {
            shared: &self.shared,
            urgent: self.unbatched,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> LineWriter<'a> {
        LineWriter {
            shared: &self.shared,
            urgent: self.unbatched || *meta.level() <= Level::WARN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_wait_for_the_flusher_and_warnings_take_them_along_in_order() {
        let written = Arc::new(Mutex::new(Vec::<u8>::new()));
        let into = written.clone();
        let b = BatchedStderr {
            shared: Arc::new(Shared {
                waiting: Mutex::new(Vec::new()),
                out: Mutex::new(()),
                wake: Condvar::new(),
                sink: Box::new(move |batch| lock(&into).extend_from_slice(batch)),
                flush_after: FLUSH_AFTER,
            }),
            unbatched: false,
        };
        let mut info = b.make_writer();
        info.write_all(b"one\n").unwrap_or_default();
        info.write_all(b"two\n").unwrap_or_default();
        assert_eq!(&*lock(&b.shared.waiting), b"one\ntwo\n");
        let mut warn = LineWriter {
            shared: &b.shared,
            urgent: true,
        };
        assert!(
            lock(&written).is_empty(),
            "nothing written before the warning"
        );
        warn.write_all(b"three\n").unwrap_or_default();
        assert!(
            lock(&b.shared.waiting).is_empty(),
            "written with the warning"
        );
        assert_eq!(&*lock(&written), b"one\ntwo\nthree\n");
        // Past the bound the line that crosses it writes the batch.
        let big = vec![b'x'; MAX_BATCH];
        info.write_all(b"four\n").unwrap_or_default();
        info.write_all(&big).unwrap_or_default();
        assert!(lock(&b.shared.waiting).is_empty());
        assert_eq!(lock(&written).len(), 14 + 5 + MAX_BATCH);
        b.flush();
        assert_eq!(lock(&written).len(), 14 + 5 + MAX_BATCH, "nothing left");
    }
}

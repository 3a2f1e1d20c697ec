//! The waits the session driver's `select!` is made of: each resolves when its source has
//! something (and never when the source is gone), so the loop needs no special cases.

use tokio::io::AsyncWriteExt;
use tokio::process::{ChildStdin, ChildStdout};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::warn;

use shared::framing::{Frame, LineReader};

use super::super::carrier::Carrier;
use super::super::Attach;
use shared::carrier::Io;

/// The next connection handed over to resume this session; never resolves for a session no
/// connection can resume.
pub(super) async fn next_attach(rx: Option<&mut mpsc::Receiver<Attach>>) -> Option<Attach> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The carrier's next event; never resolves without a connection.
pub(super) async fn client_io(c: Option<&mut Carrier>, recv: bool, send: bool) -> Io {
    match c {
        Some(c) => c.io(recv, send).await,
        None => std::future::pending().await,
    }
}

/// One write to the tool's stdin (cancel-safe: it either wrote `n` bytes or nothing).
pub(super) async fn write_some(
    stdin: Option<&mut ChildStdin>,
    buf: &[u8],
) -> std::io::Result<usize> {
    match stdin {
        Some(s) => match s.write(buf).await {
            Ok(0) => Err(std::io::ErrorKind::WriteZero.into()),
            other => other,
        },
        None => std::future::pending().await,
    }
}

/// What the tool's stdout gave.
pub(super) enum Stdout {
    Frame(Frame),
    /// Its end (EOF, or a read error).
    End,
    /// A line longer than the tool's `max_unterminated` and still going.
    Runaway,
}

/// The tool's next stdout line. Never resolves once stdout is gone.
pub(super) async fn next_line(stdout: Option<&mut LineReader<ChildStdout>>) -> Stdout {
    match stdout {
        Some(r) => match r.next_frame().await {
            Ok(Some(f)) => Stdout::Frame(f),
            Ok(None) => Stdout::End,
            Err(e)
                if e.get_ref()
                    .is_some_and(|e| e.is::<shared::framing::Unterminated>()) =>
            {
                warn!("the tool {e}; ending it");
                Stdout::Runaway
            }
            Err(e) => {
                warn!("reading the tool's stdout failed: {e}");
                Stdout::End
            }
        },
        None => std::future::pending().await,
    }
}

pub(super) async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

//! The client's driver: the one task that owns stdin, stdout and the connection to the relay —
//! the [`WsCarrier`] of an open connection, and the attempt to open one as a future polled by
//! the same loop, so stdin is read and answered while bridge-client reconnects. It feeds what
//! happens to the [`Core`] and does what the core says; it decides nothing. No channels and no
//! other tasks.

use crate::ide_input::{next_line, sleep_until};
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Buf;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tracing::warn;

use shared::carrier::{Io, WsCarrier};
use shared::endpoint::Transmit;
use shared::framing::LineReader;
use shared::tunnel::{self, Control};

use super::attempt::{self, Attempt};
use super::core::{Core, CoreConfig};
use super::stdout::{Output, Stdout};
use super::Welcome;
use crate::connect::Ws;
use crate::transport::BoxIo;
use crate::{ClientError, Options};

/// How long the relay may take to take our last messages, and then to confirm our close.
const CLOSE_WAIT: Duration = Duration::from_millis(500);

/// Runs the client until stdin ends, `stop` resolves, or the first connection fails.
pub(crate) async fn run<R, W, S>(
    opts: Options,
    input: R,
    output: W,
    stop: S,
) -> Result<(), ClientError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    S: Future<Output = ()>,
{
    let auth = attempt::authorizer(&opts);
    let opts = Arc::new(opts);
    let mut core = Core::new(
        CoreConfig {
            url: opts.url.clone(),
            max_message: opts.max_message_size,
            backoff: opts.backoff,
            seed: seed(),
        },
        Instant::now(),
    );
    let mut stdin = Some(LineReader::new(input, opts.max_message_size));
    let mut stdout = Stdout::new(output);
    let mut carrier: Option<WsCarrier<BoxIo>> = None;
    let mut attempt: Option<Attempt> = None;
    let mut stop = pin!(stop);
    let mut stopped = false;

    loop {
        let now = Instant::now();
        if attempt.is_none() {
            attempt = core
                .poll_connect(now)
                .map(|req| attempt::open(opts.clone(), auth.clone(), req));
        }
        if carrier.is_some() && !core.is_connected() {
            carrier = None;
        }
        stdout.fill(&mut core);
        if core.is_done(now) {
            break;
        }
        let deadline = [
            core.poll_timeout(now),
            carrier.as_ref().map(WsCarrier::deadline),
        ]
        .into_iter()
        .flatten()
        .min();
        let want_stdin = stdin.is_some() && core.wants_stdin();
        let want_relay = core.wants_relay();
        let want_send = core.wants_transmit(now);
        tokio::select! {
            () = &mut stop, if !stopped => {
                stopped = true;
                core.on_stop(Instant::now());
            }
            r = attempt_done(attempt.as_mut()) => {
                attempt = None;
                let now = Instant::now();
                match r {
                    Ok((ws, welcome)) => {
                        core.on_connected(welcome, now);
                        if core.is_connected() {
                            carrier = Some(WsCarrier::new(ws, opts.heartbeat));
                        }
                    }
                    Err(e) => core.on_connect_failed(e, now),
                }
            }
            n = stdout.write_some(), if stdout.has_data() => match n {
                Ok(n) => {
                    stdout.buf.advance(n);
                    core.on_output_written(n, Instant::now());
                }
                Err(e) => {
                    warn!("writing to stdout failed: {e}");
                    stdout.fail(e);
                    core.on_output_failed();
                }
            },
            io = relay_io(carrier.as_mut(), want_relay, want_send) => {
                let now = Instant::now();
                match io {
                    Io::Ready => {
                        if let (Some(c), Some(t)) = (carrier.as_mut(), core.poll_transmit(now)) {
                            if let Err(why) = c.send(t) {
                                core.on_connection_lost(&why, now);
                            }
                        }
                    }
                    Io::Message(raw) => core.on_relay_message(raw, now),
                    Io::Closed(why) => core.on_connection_lost(&why, now),
                    Io::Fatal(why) => core.on_relay_fatal(&why, now),
                }
            }
            frame = next_line(stdin.as_mut()), if want_stdin => match frame {
                Ok(Some(frame)) => core.on_stdin(frame),
                Ok(None) => {
                    stdin = None;
                    core.on_stdin_eof(Instant::now());
                }
                Err(e) => {
                    warn!("reading stdin failed: {e}");
                    stdin = None;
                    core.on_stdin_eof(Instant::now());
                }
            },
            () = sleep_until(deadline) => {
                let now = Instant::now();
                core.on_timeout(now);
                if let Some(c) = carrier.as_mut() {
                    if let Err(why) = c.on_timer(now) {
                        core.on_connection_lost(&why, now);
                    }
                }
            }
        }
    }

    drop(attempt);
    let exit = core.finish();
    if let (true, Some(c)) = (exit.tell_relay, carrier.take()) {
        close(c, &mut core).await;
    }
    stdout.flush_all(&mut core).await;
    match (exit.result, stdout.error) {
        (Err(e), _) => Err(e),
        (Ok(()), Some(e)) => Err(ClientError::Stdout(e)),
        (Ok(()), None) => Ok(()),
    }
}

/// A random seed for the core's jitter.
fn seed() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}

/// Sends what the relay has not been sent yet, then `end` and a close frame (1000, `client
/// done`), each within [`CLOSE_WAIT`].
async fn close(mut c: WsCarrier<BoxIo>, core: &mut Core) {
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while core.wants_transmit(Instant::now()) {
            let Io::Ready = c.io(false, true).await else {
                return;
            };
            if let Some(t) = core.poll_transmit(Instant::now()) {
                if c.send(t).is_err() {
                    return;
                }
            }
        }
    })
    .await;
    let end = Transmit::Binary(tunnel::encode_control(&Control::End {
        reason: "client done".to_owned(),
    }));
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: Utf8Bytes::from_static("client done"),
    };
    c.close(vec![end], Some(frame), CLOSE_WAIT).await;
}

/// The attempt's outcome; never resolves without one.
async fn attempt_done(a: Option<&mut Attempt>) -> Result<(Ws, Welcome), ClientError> {
    match a {
        Some(a) => a.await,
        None => std::future::pending().await,
    }
}

/// The connection's next event; never resolves without a connection.
async fn relay_io(c: Option<&mut WsCarrier<BoxIo>>, recv: bool, send: bool) -> Io {
    match c {
        Some(c) => c.io(recv, send).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;

//! The HTTP upstream's driver: the one task that owns stdin, stdout and the exchanges in
//! flight (each a stream of [`HttpIo`] events polled by the same loop, so stdin is read and
//! answered while requests are out). It feeds what happens to the [`HttpCore`] and does what
//! the core says; it decides nothing. hyper's pool runs its connections on tasks of its own.

use crate::ide_input::{next_line, sleep_until};
use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Buf;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tracing::{debug, warn};

use shared::framing::LineReader;

use super::client::{Exchange, HttpClient};
use super::core::{HttpConfig, HttpCore};
use super::{AuthChallenge, HttpIo, UpstreamEvent};
use crate::oauth::Authorizer;
use crate::session::stdout::{Output, Stdout};
use crate::{ClientError, Options};

/// How long the DELETE that ends the session may take.
const DELETE_WAIT: Duration = Duration::from_millis(500);

/// A refresh or sign-in under way: `on_unauthorized`, its error made text (never a token).
type Signing = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Runs the HTTP upstream until stdin ends or `stop` resolves.
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
    let url: http::Uri = opts.url.parse().map_err(|_| ClientError::BadUrl {
        url: opts.url.clone(),
        reason: "not a URL".into(),
    })?;
    let auth = match &opts.oauth {
        Some(o) => match Authorizer::new(&opts.url, o.clone()) {
            Ok(a) => Some(Arc::new(a)),
            Err(e) => {
                warn!("{e}; a server that asks for sign-in will be answered with an error");
                None
            }
        },
        None => None,
    };
    let auth_wait = auth.as_ref().map(|a| a.ide_wait());
    let opts = Arc::new(opts);
    let client = HttpClient::new(opts.clone(), auth.clone());
    let mut core = HttpCore::new(HttpConfig {
        url,
        max_message: opts.max_message_size,
        auth_wait,
    });
    let mut signing: Option<Signing> = None;
    let mut stdin = Some(LineReader::new(input, opts.max_message_size));
    let mut stdout = Stdout::new(output);
    let mut exchanges: HashMap<u64, Exchange> = HashMap::new();
    let mut stop = pin!(stop);
    let mut stopped = false;
    let mut cursor = 0;

    loop {
        let now = Instant::now();
        while let Some(out) = core.poll_request(now) {
            let ex = out.ex;
            exchanges.insert(ex, client.start(out));
        }
        while let Some(ex) = core.poll_dropped() {
            exchanges.remove(&ex);
        }
        while let Some(event) = core.poll_event() {
            match event {
                // The core holds the refused requests until `on_auth_done`.
                UpstreamEvent::AuthRequired(c) => match &auth {
                    Some(a) if signing.is_none() => signing = Some(sign_in(a.clone(), c)),
                    Some(_) => {}
                    // No authorizer: the core has answered with a sign-in hint.
                    None => warn!(
                        url = %c.url,
                        "sign-in needed: run `bridge-client login {}`",
                        c.url
                    ),
                },
            }
        }
        if !core.auth_waiting() {
            // Done, or the core's wait ran out: a sign-in nobody waits for is dropped.
            signing = None;
        }
        stdout.fill(&mut core);
        if core.is_done(now) {
            break;
        }
        let want_stdin = stdin.is_some() && core.wants_stdin();
        let want_upstream = core.wants_upstream() && !exchanges.is_empty();
        tokio::select! {
            () = &mut stop, if !stopped => {
                stopped = true;
                core.on_stdin_eof(Instant::now());
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
            (ex, io) = next_io(&mut exchanges, &mut cursor), if want_upstream => {
                if matches!(io, HttpIo::End | HttpIo::Error(_)) {
                    exchanges.remove(&ex);
                }
                core.on_http(ex, io, Instant::now());
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
            r = poll_signing(&mut signing), if signing.is_some() => {
                signing = None;
                core.on_auth_done(r, Instant::now());
            }
            () = sleep_until(core.poll_timeout()) => core.on_timeout(Instant::now()),
        }
    }

    drop(signing);
    exchanges.clear();
    if let Some(delete) = core.finish() {
        let mut ex = client.start(delete);
        let _ = tokio::time::timeout(DELETE_WAIT, async {
            while let Some(io) = ex.next().await {
                if matches!(io, HttpIo::Head { .. } | HttpIo::Error(_)) {
                    break;
                }
            }
        })
        .await;
    }
    stdout.flush_all(&mut core).await;
    match stdout.error {
        Some(e) => Err(ClientError::Stdout(e)),
        None => Ok(()),
    }
}

/// The next event of any exchange; pending while there is none. An exchange whose stream is
/// exhausted reports its end once. Fair: each call starts where the last one found an event
/// (`cursor`), so a stream that always has data cannot starve the others.
async fn next_io(exchanges: &mut HashMap<u64, Exchange>, cursor: &mut usize) -> (u64, HttpIo) {
    poll_fn(|cx| {
        let n = exchanges.len();
        let start = if n == 0 { 0 } else { *cursor % n };
        // Two passes over the same order: from `start` to the end, then the ones before it.
        for pass in [start..n, 0..start] {
            let skip = pass.start;
            let take = pass.len();
            for (i, (ex, s)) in exchanges.iter_mut().enumerate().skip(skip).take(take) {
                let io = match s.poll_next_unpin(cx) {
                    Poll::Ready(Some(io)) => io,
                    Poll::Ready(None) => HttpIo::End,
                    Poll::Pending => continue,
                };
                *cursor = i + 1;
                return Poll::Ready((*ex, io));
            }
        }
        Poll::Pending
    })
    .await
}

/// Runs the authorizer after a refusal: tokens another process stored, a refresh, or one
/// sign-in (the authorizer bounds and serializes them).
fn sign_in(auth: Arc<Authorizer>, c: AuthChallenge) -> Signing {
    Box::pin(async move {
        let www = c.www_authenticate.unwrap_or_default();
        match auth.on_unauthorized(&www).await {
            Ok(_) => {
                debug!(
                    "signed in to {} (or refreshed); sending the held requests again",
                    c.url
                );
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    })
}

/// The sign-in's result; pending while there is none.
async fn poll_signing(s: &mut Option<Signing>) -> Result<(), String> {
    match s {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

//! The relay session's driver: the one task that owns a session's client connection (its
//! carrier) and its tool's pipes and process, feeds what happens on them to the [`Core`], and
//! writes what the core says to write. No channels on the message path; the only other task
//! a session has copies the tool's stderr into the log.
//!
//! It decides nothing about messages: that is the core's job. It ends the tool in the MCP
//! order (close stdin, wait; SIGTERM; SIGKILL), reaps it, and only then frees the session's
//! slot in the registry.

use futures_util::FutureExt;
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::process::ChildStdin;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tracing::{debug, info, warn, Instrument};

use shared::carrier::{Io, WsCarrier};
use shared::endpoint::{Framing, Transmit};
use shared::framing::LineReader;
use shared::tunnel::{self, Control};

use super::core::{Core, CoreConfig};
use super::end::EndReason;
use super::info::State;
use super::record::{log_stderr, Recorder};
use super::{Attach, Carrier, Params};
use crate::child::{self, ToolProcess};
use crate::metrics::{CarrierLabels, EndLabels, ExitLabels, ToolLabel};

/// The relay's WebSocket connections.
pub(crate) type Socket = TokioIo<Upgraded>;

/// How long to wait for queued frames and the close frame to reach a departing client.
mod waits;
use waits::{client_io, next_attach, next_line, sleep_until, write_some, Stdout};

const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Bytes gathered for one write to the tool's stdin.
const STDIN_BATCH: usize = 64 * 1024;

/// Most client messages already arrived that are taken at once after one (see the loop).
const BURST: usize = 63;

/// How long a tool may read none of its input, with its queue full, before further requests
/// are answered at once (`-32013`) instead of waiting for it.
const SHED_AFTER: Duration = Duration::from_secs(1);

/// Runs a session to its end. Owns the tool process and always reaps it.
pub(crate) async fn run(
    p: Params,
    mut tool: ToolProcess,
    first: Carrier,
    mut attach_rx: Option<mpsc::Receiver<Attach>>,
) {
    let started = Instant::now();
    if let Some(stderr) = tool.stderr.take() {
        tokio::spawn(log_stderr(stderr).in_current_span());
    }
    let mut stdin: Option<ChildStdin> = tool.stdin.take();
    let mut stdout = tool.stdout.take().map(|o| {
        let limit = usize::try_from(p.tool.limits.max_unterminated).unwrap_or(usize::MAX);
        LineReader::new(o, p.tool.max_message_size).with_unterminated_limit(limit)
    });
    let mut stdin_buf = BytesMut::new();
    let mut exited = false;

    let tool_label = ToolLabel {
        tool: p.tool.name.clone(),
    };
    p.metrics.sessions_total.get_or_create(&tool_label).inc();
    p.metrics.sessions_active.get_or_create(&tool_label).inc();
    let carrier_label = CarrierLabels {
        tool: p.tool.name.clone(),
        carrier: first.label(),
    };
    p.metrics
        .carrier_sessions
        .get_or_create(&carrier_label)
        .inc();
    p.metrics
        .carrier_sessions_active
        .get_or_create(&carrier_label)
        .inc();
    let mut rec = Recorder::new(&p);

    let mut core = Core::new(
        CoreConfig {
            id: p.id.clone(),
            tool: p.tool.name.clone(),
            framing: p.framing,
            max_message: p.tool.max_message_size,
            resume_window: p.limits.resume_window,
            resume_buffer_messages: p.limits.resume_buffer_messages,
            resume_buffer_bytes: p.limits.resume_buffer_bytes,
            idle_timeout: p.limits.idle_timeout,
            stall_timeout: p.limits.heartbeat.timeout,
            shed_after: SHED_AFTER,
            access: p.access.clone(),
        },
        Instant::now(),
    );
    let mut carrier: Option<Carrier> = Some(first);
    let mut drained = false;
    let mut shown = State::Attached;

    while !core.check_done() {
        // What the admin API shows: one relaxed store when it changes.
        let state = if drained {
            State::Draining
        } else if carrier.is_some() && core.is_attached() {
            State::Attached
        } else {
            State::Detached
        };
        if state != shown {
            shown = state;
            p.info.set_state(state);
        }
        let now = Instant::now();
        let mut deadline = next_deadline(&core, carrier.as_ref());
        if deadline.is_some_and(|d| d <= now) {
            // A busy session's select may not reach its timer branch (it comes last): the
            // timers fire here too.
            fire_timers(&mut core, &mut carrier, now);
            deadline = next_deadline(&core, carrier.as_ref());
        }
        let want_client = core.wants_client();
        let want_send = core.wants_client_transmit(now);
        tokio::select! {
            biased;
            () = p.shutdown.force.cancelled() => core.on_force(),
            () = p.shutdown.drain.cancelled(), if !drained => {
                drained = true;
                core.on_drain();
            }
            () = p.info.end_requested() => core.on_end_request(p.info.end_request()),
            attach = next_attach(attach_rx.as_mut()) => {
                let Some(attach) = attach else {
                    attach_rx = None;
                    continue;
                };
                if carrier.take().is_some() {
                    debug!("a new connection replaces the current one");
                }
                match core.on_attach(attach.last_seq, Instant::now()) {
                    Ok(()) => carrier = Some(Carrier::Ws(attach.carrier)),
                    Err(why) => {
                        let end = Transmit::Binary(tunnel::encode_control(&Control::End { reason: why.clone() }));
                        let frame = close_frame(tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Policy, &why);
                        tokio::spawn(attach.carrier.close(vec![end], Some(frame), CLOSE_WAIT).in_current_span());
                    }
                }
            }
            status = tool.child.wait(), if !exited => {
                exited = true;
                let (how, clean) = match &status {
                    Ok(s) => (tool.describe_exit(s), s.success()),
                    Err(e) => (format!("could not be waited for ({e})"), false),
                };
                // Helpers it started (in its process group) go with it, and with them any
                // holder of its stdout.
                child::kill_group(tool.pgid, nix::sys::signal::Signal::SIGKILL);
                core.on_tool_exit(how, clean, Instant::now());
            }
            n = write_some(stdin.as_mut(), &stdin_buf), if !stdin_buf.is_empty() => match n {
                Ok(n) => {
                    stdin_buf.advance(n);
                    if stdin_buf.is_empty() && stdin_buf.capacity() > 2 * STDIN_BATCH {
                        // Grown for one large message: let it go.
                        stdin_buf = BytesMut::new();
                    }
                    core.on_tool_wrote(n, Instant::now());
                }
                Err(e) => {
                    debug!("writing to the tool's stdin failed: {e}");
                    stdin = None;
                    stdin_buf.clear();
                    core.on_tool_stdin_closed();
                }
            },
            io = client_io(carrier.as_mut(), want_client, want_send) => match io {
                Io::Ready => {
                    if let (Some(c), Some(t)) = (carrier.as_mut(), core.poll_client_transmit(Instant::now())) {
                        if let Err(why) = c.send(t) {
                            carrier = None;
                            core.on_client_gone(&why, Instant::now());
                        }
                    }
                }
                Io::Message(raw) => {
                    core.on_client_message(raw, Instant::now());
                    // Take what has already arrived too, so a burst reaches the tool in one
                    // write instead of one write (and one wake-up of the tool) per message.
                    for _ in 0..BURST {
                        let Some(c) = carrier.as_mut().filter(|_| core.wants_client()) else {
                            break;
                        };
                        match c.io(true, false).now_or_never() {
                            Some(Io::Message(raw)) => core.on_client_message(raw, Instant::now()),
                            Some(Io::Closed(why)) => {
                                carrier = None;
                                core.on_client_gone(&why, Instant::now());
                                break;
                            }
                            Some(Io::Fatal(why)) => {
                                carrier = None;
                                warn!("{why}; ending the session");
                                core.on_client_fatal(&why);
                                break;
                            }
                            Some(Io::Ready) | None => break,
                        }
                    }
                }
                Io::Closed(why) => {
                    carrier = None;
                    core.on_client_gone(&why, Instant::now());
                }
                Io::Fatal(why) => {
                    carrier = None;
                    warn!("{why}; ending the session");
                    core.on_client_fatal(&why);
                }
            },
            frame = next_line(stdout.as_mut()), if core.wants_tool() => match frame {
                Stdout::Frame(frame) => core.on_tool_frame(frame, Instant::now()),
                Stdout::Runaway => {
                    // The tool broke its limit: it ends now, and its end says why.
                    tool.kill_for(crate::confine::KillReason::Unterminated);
                    stdout = None;
                    core.on_tool_stdout_closed(Instant::now());
                }
                Stdout::End => {
                    stdout = None;
                    core.on_tool_stdout_closed(Instant::now());
                }
            },
            () = sleep_until(deadline) => fire_timers(&mut core, &mut carrier, Instant::now()),
        }
        if stdin.is_some() && stdin_buf.len() < STDIN_BATCH {
            while let Some(msg) = core.poll_tool_transmit() {
                stdin_buf.reserve(msg.len() + 1);
                stdin_buf.put_slice(&msg);
                stdin_buf.put_u8(b'\n');
                if stdin_buf.len() >= STDIN_BATCH {
                    break;
                }
            }
        } else if stdin.is_none() && core.tool_is_gone() {
            while core.poll_tool_transmit().is_some() {}
        }
        while let Some(e) = core.poll_event() {
            rec.record(e);
        }
    }

    // Answer what is still in flight, tell the client (if it is here), end the tool.
    let reason = core.finish();
    p.info.set_state(State::Ending);
    while let Some(e) = core.poll_event() {
        rec.record(e);
    }
    p.registry.ending(&p.id, &reason.to_string());
    if let Some(rx) = attach_rx.as_mut() {
        rx.close();
    }
    // Connections handed over after the end was decided are told why.
    while let Some(late) = attach_rx.as_mut().and_then(|rx| rx.try_recv().ok()) {
        let end = Transmit::Binary(tunnel::encode_control(&Control::End {
            reason: reason.to_string(),
        }));
        tokio::spawn(
            late.carrier
                .close(vec![end], None, CLOSE_WAIT)
                .in_current_span(),
        );
    }
    // Close the tool's stdin first: a tool that follows the MCP stdio shutdown order exits by
    // itself on EOF.
    drop(stdin);
    match carrier {
        Some(Carrier::Ws(c)) => flush_and_close(c, &mut core, p.framing, &reason).await,
        Some(Carrier::Http(mut c)) => {
            // The answers to calls still in flight go to their streams; then every stream ends.
            let now = Instant::now();
            while c.has_room() {
                match core.poll_client_transmit(now) {
                    Some(t) => {
                        let _ = c.send(t);
                    }
                    None => break,
                }
            }
            c.end_heads();
        }
        Some(Carrier::Modern(mut c)) => {
            let now = Instant::now();
            c.finish(std::iter::from_fn(|| core.poll_client_transmit(now)));
        }
        None => {}
    }
    let mut how = "ended";
    if !exited {
        match child::terminate(&mut tool.child, tool.pgid, p.limits.kill_grace).await {
            Ok(status) => {
                debug!("tool {}", tool.describe_exit(&status));
                if status.success() {
                    how = "exited";
                }
            }
            Err(e) => warn!("could not reap the tool: {e}"),
        }
        p.metrics
            .tool_exits
            .get_or_create(&ExitLabels {
                tool: p.tool.name.clone(),
                how: "ended",
            })
            .inc();
    }
    // Only now, with the tool reaped, is the slot free.
    p.registry.release(&p.id);
    p.metrics.sessions_active.get_or_create(&tool_label).dec();
    p.metrics
        .carrier_sessions_active
        .get_or_create(&carrier_label)
        .dec();
    p.metrics
        .session_duration
        .get_or_create(&tool_label)
        .observe(started.elapsed().as_secs_f64());
    p.metrics
        .session_ends
        .get_or_create(&EndLabels {
            tool: p.tool.name.clone(),
            source: reason.source().label(),
            reason: reason.label(),
        })
        .inc();
    info!(
        target: "audit",
        event = "session_ended",
        user = %p.user,
        reason = ?reason.to_string(),
        source = ?reason.source(),
        end = reason.label(),
        tool_end = how,
        duration_ms = started.elapsed().as_millis() as u64,
        "session ended"
    );
}

/// When the core's or the carrier's timers are next due.
fn next_deadline(core: &Core, carrier: Option<&Carrier>) -> Option<Instant> {
    [core.poll_timeout(), carrier.map(Carrier::deadline)]
        .into_iter()
        .flatten()
        .min()
}

/// The core's and the carrier's timers (heartbeats, an away client, answers to begin).
fn fire_timers(core: &mut Core, carrier: &mut Option<Carrier>, now: Instant) {
    core.on_timeout(now);
    if let Some(c) = carrier.as_mut() {
        if let Err(why) = c.on_timer(now) {
            *carrier = None;
            core.on_client_gone(&why, now);
        }
    }
}

/// Sends what the client has not been sent yet (answers, errors), then the end notice and a
/// close frame, within [`CLOSE_WAIT`]. A client that ended the session itself, or has already
/// closed the connection, is sent nothing but the answer to its close.
async fn flush_and_close(
    mut c: WsCarrier<Socket>,
    core: &mut Core,
    framing: Framing,
    reason: &EndReason,
) {
    let frame = close_frame(reason.close_code(), &reason.to_string());
    if matches!(reason, EndReason::ClientEnded(_)) {
        // It said `end` and closes next.
        return c.await_close(Some(frame), CLOSE_WAIT).await;
    }
    if c.peer_done().await {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while core.wants_client_transmit(Instant::now()) {
            match c.io(false, true).await {
                Io::Ready => {
                    if let Some(t) = core.poll_client_transmit(Instant::now()) {
                        if c.send(t).is_err() {
                            return;
                        }
                    }
                }
                _ => return,
            }
        }
    })
    .await;
    let mut last = Vec::new();
    if framing == Framing::V1 {
        last.push(Transmit::Binary(tunnel::encode_control(&Control::End {
            reason: reason.to_string(),
        })));
    }
    c.close(last, Some(frame), CLOSE_WAIT).await;
}

fn close_frame(
    code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode,
    reason: &str,
) -> CloseFrame {
    CloseFrame {
        code,
        reason: Utf8Bytes::from(truncate_reason(reason)),
    }
}

/// Close reasons are limited to 123 bytes by RFC 6455.
fn truncate_reason(reason: &str) -> String {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

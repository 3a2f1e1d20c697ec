//! What a client sends that ends up in the relay's log, and a resume at an impossible point:
//! huge method names, text that tries to forge log lines, `mcp-bridge-last-seq` past the end.
//! Not the log of tools (their stderr).

use std::io::{Read, Write};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures_util::SinkExt;
use mcp_bridge_tests::ws::{self, Upgrade, V1Frame};
use mcp_bridge_tests::{fixture_tool, http_get, mib, Relay};
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use super::{baseline, demo_relay, flood, growth, past_safety_cap, GROWTH_BOUND, MIB};

/// Bytes the relay has logged so far.
fn log_len(relay: &Relay) -> usize {
    relay.log.text().len()
}

/// Makes sure everything the relay logged before now has reached `relay.log`: asks for an
/// unknown tool with a unique name and waits for that request's log line.
fn log_barrier(relay: &Relay, tag: &str) -> Result<()> {
    let name = format!("barrier-{tag}-{}", std::process::id());
    let (status, _) = http_get(relay.addr, &format!("/mcp/{name}"))?;
    assert_eq!(status, 404);
    relay.log.wait_for(&name, Duration::from_secs(5))
}

/// A7. docs/security.md, "What is logged": the audit event `call` names "the method and tool,
/// not the arguments"; the relay must not let a client's method name blow up its log or its
/// memory. (The limits: 4 MiB per message.)
///
/// 20 requests, each with a method name of ~4 MiB, to a tool that reads them and never answers;
/// then the client leaves (the session ends, failing the 20 calls).
///
/// Bound: the relay writes ≤ 1 MiB of log for the whole session; relay peak RSS ≤ baseline +
/// 64 MiB.
#[test]
fn a7_huge_method_names_do_not_blow_up_the_log_or_memory() -> Result<()> {
    const LOG_BOUND: usize = 1024 * 1024;
    let relay = Relay::start(&fixture_tool("mute", &["--silent"], ""))?;
    let base = baseline(&relay, "mute")?;
    log_barrier(&relay, "before")?;
    let logged_before = log_len(&relay);
    let url = relay.url("mute");
    let method = "m".repeat(4 * MIB as usize - 128);
    let rt = ws::runtime();
    let sent = rt.block_on(async {
        let mut ws = ws::connect_plain(&url).await?;
        let sent = flood(
            &mut ws,
            Duration::from_secs(6),
            |n| {
                (n < 20).then(|| {
                    Message::text(format!(
                        r#"{{"jsonrpc":"2.0","id":{},"method":"{method}"}}"#,
                        n + 1
                    ))
                })
            },
            || past_safety_cap(&relay, base),
        )
        .await;
        // Leave: the plain session ends, with the 20 calls unanswered.
        let _ = tokio::time::timeout(Duration::from_secs(5), ws.close(None)).await;
        anyhow::Ok(sent)
    })?;
    relay.wait_idle("mute", Duration::from_secs(5))?;
    log_barrier(&relay, "after")?;
    let logged = log_len(&relay) - logged_before;
    let grown = growth(&relay, base);
    println!(
        "{sent} requests with 4 MiB method names: relay logged {:.2} MiB (bound {:.0} MiB); \
         relay peak RSS grew {:.1} MiB (bound {:.0} MiB)",
        mib(logged as u64),
        mib(LOG_BOUND as u64),
        mib(grown),
        mib(GROWTH_BOUND)
    );
    assert!(
        sent.sent == 20 || sent.cut.is_some(),
        "only {sent} of the 20 requests could be sent in 6 s"
    );
    assert!(
        logged <= LOG_BOUND && grown <= GROWTH_BOUND,
        "20 requests with 4 MiB method names made the relay log {:.2} MiB (bound {:.0} MiB) and \
         grow {:.1} MiB (bound {:.0} MiB)",
        mib(logged as u64),
        mib(LOG_BOUND as u64),
        mib(grown),
        mib(GROWTH_BOUND)
    );
    Ok(())
}

/// A fake log line as the human log format writes them, with a date no real line has.
const FORGED: &str = "1999-01-01T00:00:00.000000Z  WARN forged:";

/// A8. docs/security.md, limitation 4 says log lines "can be forged by an authenticated client"
/// through the audit event's method and a client's session-end reason; these three inputs must
/// not do it: a v1 close frame's reason, a v1 control message's `type`, and an `Origin` header
/// (logged on the audit event `refused`).
///
/// Bound: no line of the relay's log starts with the injected fake log line's prefix.
#[test]
fn a8_client_text_cannot_forge_relay_log_lines() -> Result<()> {
    let relay = demo_relay("")?;
    let url = relay.url("demo");
    let rt = ws::runtime();
    let mut seen = Vec::new();
    rt.block_on(async {
        // A close frame's reason (at most 123 bytes).
        let (mut a, _) = ws::connect_v1(&url).await?;
        a.send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: format!("bye\n{FORGED} close reason").into(),
        })))
        .await?;
        let got = ws::next_frame(&mut a, Duration::from_secs(5)).await;
        seen.push(format!("close reason: relay answered {got:?}"));
        // A control message with an unknown `type` (a protocol error: the relay drops us).
        let (mut b, _) = ws::connect_v1(&url).await?;
        let bad = json!({"type": format!("x\n{FORGED} control type")}).to_string();
        b.send(ws::control(&bad)).await?;
        let got = ws::next_frame(&mut b, Duration::from_secs(2)).await;
        seen.push(format!("control type: relay answered {got:?}"));
        anyhow::Ok(())
    })?;
    // An Origin header with a line break in it: LF, CR, and an obsolete line folding.
    for (name, value) in [
        ("LF", format!("https://evil.example\n{FORGED} origin LF")),
        ("CR", format!("https://evil.example\r{FORGED} origin CR")),
        (
            "CRLF fold",
            format!("https://evil.example\r\n {FORGED} origin fold"),
        ),
    ] {
        let mut s = std::net::TcpStream::connect(relay.addr)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            s,
            "GET /mcp/demo HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: {value}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )?;
        let mut resp = Vec::new();
        let _ = s.read_to_end(&mut resp);
        let status = String::from_utf8_lossy(&resp)
            .lines()
            .next()
            .unwrap_or("")
            .to_owned();
        seen.push(format!("Origin with {name}: relay answered {status:?}"));
    }
    log_barrier(&relay, "a8")?;
    let log = relay.log.text();
    let forged: Vec<&str> = log.lines().filter(|l| l.starts_with(FORGED)).collect();
    println!("{}", seen.join("\n"));
    println!("forged lines in the relay's log: {forged:#?}");
    assert!(
        forged.is_empty(),
        "client input produced {} line(s) in the relay's log that start like a real log line:\n\
         {}\n(what was sent: {})",
        forged.len(),
        forged.join("\n"),
        seen.join("; ")
    );
    Ok(())
}

/// A9. docs/protocol.md, resume: "A client whose `mcp-bridge-last-seq` is beyond what the relay
/// ever sent gets `end {"reason": "cannot resume: …"}` and a close (1000) on that connection;
/// the session itself stays on the relay, waiting, until its resume window passes." (and the
/// lifecycle table: live → detached on a resume with an impossible `mcp-bridge-last-seq`).
///
/// Bound: after a resume with `mcp-bridge-last-seq: 18446744073709551615`, a correct resume
/// (within 5 s) gets `welcome {resumed: true}` and a request on it is answered.
#[test]
fn a9_an_impossible_resume_point_does_not_end_the_session() -> Result<()> {
    let relay = demo_relay("")?;
    let url = relay.url("demo");
    let rt = ws::runtime();
    rt.block_on(async {
        let t = Duration::from_secs(5);
        let (mut ws1, welcome) = ws::connect_v1(&url).await?;
        let session = welcome["session"]
            .as_str()
            .context("session id")?
            .to_owned();
        ws1.send(ws::data(
            1,
            0,
            br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
        ))
        .await?;
        let (seq, answer) = ws::recv_answer(&mut ws1, &json!(1), t).await?;
        assert_eq!(answer["result"], json!({}), "{answer}");
        drop(ws1);

        let bad = ws::connect(
            &url,
            Some("mcp-bridge.v1"),
            &[
                ("mcp-bridge-session", session.as_str()),
                ("mcp-bridge-last-seq", "18446744073709551615"),
            ],
        )
        .await?;
        let bad_outcome = match bad {
            Upgrade::Refused(status, body) => format!("refused {status}: {body}"),
            Upgrade::Open(mut ws) => {
                let mut frames = Vec::new();
                while let Ok(Some(f)) = ws::next_frame(&mut ws, t).await {
                    let last = matches!(f, V1Frame::Close(_));
                    frames.push(format!("{f:?}"));
                    if last {
                        break;
                    }
                }
                format!("101, then {frames:?}")
            }
        };
        println!("resume at last-seq 2^64-1: {bad_outcome}");

        let last_seq = seq.to_string();
        let good = ws::connect(
            &url,
            Some("mcp-bridge.v1"),
            &[
                ("mcp-bridge-session", session.as_str()),
                ("mcp-bridge-last-seq", last_seq.as_str()),
            ],
        )
        .await?;
        let mut ws2 = match good {
            Upgrade::Open(ws) => *ws,
            Upgrade::Refused(status, body) => bail!(
                "a correct resume (last-seq {seq}) after the impossible one was refused: HTTP \
                 {status}: {} (the impossible one: {bad_outcome})",
                body.trim()
            ),
        };
        let welcome = match ws::next_frame(&mut ws2, t).await? {
            Some(V1Frame::Control(c)) => c,
            other => bail!(
                "a correct resume after the impossible one got {other:?} instead of welcome \
                 (the impossible one: {bad_outcome})"
            ),
        };
        assert_eq!(
            (welcome["type"].as_str(), welcome["resumed"].as_bool()),
            (Some("welcome"), Some(true)),
            "a correct resume after the impossible one got {welcome} (the impossible one: \
             {bad_outcome})"
        );
        ws2.send(ws::data(
            2,
            seq,
            br#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#,
        ))
        .await?;
        let (_, answer) = ws::recv_answer(&mut ws2, &json!(2), t).await?;
        assert_eq!(answer["result"], json!({}), "{answer}");
        println!("correct resume after it: {welcome}; ping answered");
        anyhow::Ok(())
    })
}

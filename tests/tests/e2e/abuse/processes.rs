//! Tool processes under abuse: connect/reset churn against the per-user session limit, and a
//! tool that exits while its own child holds its stdout. Counts and reaps processes; memory is
//! measured elsewhere.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use mcp_bridge_tests::ws::{self, Upgrade};
use mcp_bridge_tests::{children_of, fixture_tool, signal, wait_until, Ide, Relay, TempDir};
use serde_json::json;

use super::outcome;

/// A5. docs/security.md: "Session limits … `max_sessions_per_user` (429) — checked before a
/// process is spawned", and the checklist: "Each session is a process; a user may hold
/// `max_sessions_per_user` of them."
///
/// max_sessions_per_user = 8, kill grace 1 s, and a tool that ignores SIGTERM and EOF on stdin
/// for 4 s (so it is slow to exit); 4 clients connect (plain) and drop the connection at once,
/// in a loop, for 3 s.
///
/// Bound: the relay never has more than 8 live (non-zombie) tool processes, sampled every 5 ms.
#[test]
fn a5_session_limits_bound_tool_processes_under_connect_reset_churn() -> Result<()> {
    const LIMIT: usize = 8;
    let config = format!(
        "listen = \"127.0.0.1:0\"\n[limits]\nkill_grace_ms = 1000\nmax_sessions_per_user = \
         {LIMIT}\n\n{}",
        fixture_tool("stubborn", &["--linger", "4"], "")
    );
    let relay = Relay::start_config(&config, &[])?;
    let pid = relay.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let max_live = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (stop, max_live) = (stop.clone(), max_live.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(6);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let live = children_of(pid).iter().filter(|c| c.1 != 'Z').count();
                max_live.fetch_max(live, Ordering::Relaxed);
                if live > 3 * LIMIT {
                    // Proven; do not pile up more processes on a shared machine.
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let url = relay.url("stubborn");
    let rt = ws::runtime();
    let (opened, refused) = rt.block_on(async {
        let until = tokio::time::Instant::now() + Duration::from_secs(3);
        let churn = || async {
            let (mut opened, mut refused) = (0u32, 0u32);
            while tokio::time::Instant::now() < until
                && max_live.load(Ordering::Relaxed) <= 3 * LIMIT
            {
                match ws::connect(&url, Some("mcp"), &[]).await? {
                    Upgrade::Open(ws) => {
                        opened += 1;
                        drop(ws);
                    }
                    Upgrade::Refused(429, _) => {
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    Upgrade::Refused(status, body) => bail!("refused {status}: {body}"),
                }
            }
            anyhow::Ok((opened, refused))
        };
        let (a, b, c, d) = tokio::join!(churn(), churn(), churn(), churn());
        let all = [a?, b?, c?, d?];
        anyhow::Ok((
            all.iter().map(|x| x.0).sum::<u32>(),
            all.iter().map(|x| x.1).sum::<u32>(),
        ))
    })?;
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let max = max_live.load(Ordering::Relaxed);
    println!(
        "connect/reset churn for 3 s: {opened} sessions opened, {refused} refused with 429; at \
         most {max} live tool processes (limit {LIMIT})"
    );
    relay.wait_no_children(Duration::from_secs(10))?;
    assert!(
        max <= LIMIT,
        "the relay had {max} live tool processes at once with max_sessions_per_user = {LIMIT} \
         ({opened} sessions opened, {refused} refused in 3 s)"
    );
    Ok(())
}

/// A6. docs/protocol.md, session lifecycle: when the tool exits, the relay "answers every
/// client request in flight with `-32010`"; docs/security.md, promise 14: tool processes are
/// "always reaped".
///
/// A tool that, on its first request, starts `sleep 20` in the background (which inherits its
/// stdout and keeps it open) and exits with status 3 without answering.
///
/// Bound: the request is answered with -32010 within 3 s of being sent, and the relay has no
/// zombie child 2 s later.
#[test]
fn a6_a_tool_exiting_while_its_child_holds_stdout_is_answered_and_reaped() -> Result<()> {
    let dir = TempDir::new();
    let pidfile = dir.path().join("background.pid");
    let relay = Relay::start_with(
        "shutdown_grace_ms = 1000",
        &fixture_tool(
            "forker",
            &["--fork-and-exit", pidfile.to_str().unwrap()],
            "",
        ),
        None,
    )?;
    let mut ide = Ide::connect(&relay.url("forker"), &[])?;
    let sent = Instant::now();
    ide.send(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}))?;
    let answer = ide.recv_until(Duration::from_secs(3), |m| m["id"] == json!(1));
    let took = sent.elapsed();
    let zombies_gone = wait_until(Duration::from_secs(2), || {
        !relay.children().iter().any(|c| c.1 == 'Z')
    });
    let children = relay.children();
    // The background `sleep` is this test's doing: end it (by its pid, checked to be `sleep`).
    if let Ok(bg) = std::fs::read_to_string(&pidfile) {
        let bg = bg.trim();
        let cmd = std::fs::read(format!("/proc/{bg}/cmdline")).unwrap_or_default();
        if cmd.starts_with(b"sleep") {
            signal(bg.parse()?, "KILL");
        }
    }
    println!(
        "tool exited with its child holding stdout: answered: {} after {took:?}; relay \
         children then {children:?}",
        outcome(&answer)
    );
    let answer = answer.map_err(|e| {
        e.context(format!(
            "the request was not answered within 3 s of the tool's exit ({took:?}); relay \
             children: {children:?}"
        ))
    })?;
    assert_eq!(
        answer["error"]["code"],
        json!(-32010),
        "answered after {took:?} with {answer}"
    );
    assert!(
        zombies_gone.is_ok(),
        "the exited tool is left a zombie: relay children {children:?}"
    );
    Ok(())
}

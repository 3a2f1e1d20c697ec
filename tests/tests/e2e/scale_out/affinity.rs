//! Session affinity through nginx: clients spread over both nodes, and a client whose
//! connection is cut comes back to the node holding its session and resumes it there.

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{Context, Result};
use mcp_bridge_tests::proxy::FaultProxy;
use mcp_bridge_tests::{demo_tool, wait_until, Ide};
use serde_json::json;

use super::nginx::Nginx;
use super::{
    assert_echo, connect_and_locate, echo, end_clients, sessions, sessions_started, text_of,
    two_relays, T,
};

/// 20 bridge-clients at once through nginx: sessions land on both nodes, and every client gets
/// its own answers. nginx's access log agrees with the relays about who went where.
#[test]
fn clients_spread_over_both_nodes_through_nginx() -> Result<()> {
    const N: usize = 20;
    let (r1, r2) = two_relays("", &demo_tool("demo", ""))?;
    let nginx = Nginx::start(&[r1.addr, r2.addr])?;
    let started = Instant::now();

    let mut ides: Vec<Ide> = (0..N)
        .map(|_| Ide::connect(&nginx.url("demo"), &[]))
        .collect::<Result<_>>()?;
    for ide in &mut ides {
        ide.initialize()?;
    }
    // Interleave: every client sends, then every client reads, so the calls overlap.
    for (i, ide) in ides.iter_mut().enumerate() {
        ide.send(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": format!("client {i} says hello")}}}))?;
    }
    for (i, ide) in ides.iter_mut().enumerate() {
        let resp = ide.recv_until(T, |m| m["id"] == 1)?;
        assert_echo(&resp, &format!("client {i} says hello"));
        let resp = echo(ide, 2, &format!("client {i} again"))?;
        assert_echo(&resp, &format!("client {i} again"));
    }
    let (on1, on2) = (sessions(&r1), sessions(&r2));
    println!("20 clients through nginx: {on1} sessions on node 1, {on2} on node 2");
    assert_eq!(on1 + on2, N, "every client has exactly one session");
    assert!(
        on1 > 0 && on2 > 0,
        "the affinity hash put every session on one node: {on1} / {on2}"
    );
    assert_eq!((sessions_started(&r1), sessions_started(&r2)), (on1, on2));

    end_clients(&mut ides)?;
    r1.wait_no_children(T)?;
    r2.wait_no_children(T)?;
    // nginx logs each WebSocket when it closes: 20 new sessions, split as the relays saw them.
    let lines = nginx.wait_websocket_lines(N)?;
    let to = |addr: SocketAddr| {
        lines
            .iter()
            .filter(|l| l.contains(&format!("upstream={addr} ")))
            .count()
    };
    assert_eq!((to(r1.addr), to(r2.addr)), (on1, on2), "{lines:#?}");
    assert!(lines.iter().all(|l| l.contains("kind=new")), "{lines:#?}");
    println!("took {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// A client whose TCP connection is cut (between it and nginx) reconnects through nginx, is
/// hashed to the same node, and resumes its session there: a call in flight completes, the
/// tool process is the same, and the other node never sees the client.
#[test]
fn a_cut_connection_resumes_on_the_same_node_through_nginx() -> Result<()> {
    let (r1, r2) = two_relays("", &demo_tool("demo", ""))?;
    let nginx = Nginx::start(&[r1.addr, r2.addr])?;
    let cutter = FaultProxy::start(nginx.addr)?;
    let relays = [&r1, &r2];
    let (mut ide, home) = connect_and_locate(&cutter.url("demo"), &relays)?;
    let other = 1 - home;
    let tool_pid = relays[home].children()[0].0;
    assert_echo(&echo(&mut ide, 1, "before")?, "before");

    for round in 1..=3u64 {
        // A call in flight across the cut: 20 steps of 50 ms.
        let id = 100 + round;
        ide.send(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "slow", "arguments": {"steps": 20, "delay_ms": 50},
                       "_meta": {"progressToken": format!("p{round}")}}}))?;
        ide.recv_until(T, |m| m["method"] == "notifications/progress")?;
        assert!(cutter.cut_all() >= 1, "nothing to cut");
        wait_until(T, || {
            ide.stderr.text().matches("resumed the session").count() as u64 >= round
        })
        .with_context(|| format!("no resume after cut {round}:\n{}", ide.stderr.text()))?;
        let resp = ide.recv_until(T, |m| m["id"] == id)?;
        assert_eq!(text_of(&resp), "done after 20 steps", "{resp}");
        let text = format!("after cut {round}");
        assert_echo(&echo(&mut ide, round, &text)?, &text);
    }
    let stderr = ide.stderr.text();
    assert!(
        !stderr.contains("opened a new session"),
        "the session was replaced instead of resumed:\n{stderr}"
    );
    assert_eq!(
        relays[home]
            .children()
            .iter()
            .map(|c| c.0)
            .collect::<Vec<_>>(),
        vec![tool_pid],
        "the same tool process serves the session"
    );
    assert_eq!(sessions_started(relays[home]), 1);
    assert_eq!(
        (sessions_started(relays[other]), sessions(relays[other])),
        (0, 0),
        "the other node saw the client"
    );
    ide.close_stdin();
    assert!(ide.wait(T)?.success());
    r1.wait_no_children(T)?;
    r2.wait_no_children(T)?;
    // nginx agrees: the first connection and three resumes, all to the same node.
    let lines = nginx.wait_websocket_lines(4)?;
    let home_addr = relays[home].addr;
    assert!(
        lines
            .iter()
            .all(|l| l.contains(&format!("upstream={home_addr} "))),
        "{lines:#?}"
    );
    assert_eq!(
        lines.iter().filter(|l| l.contains("kind=resume")).count(),
        3,
        "{lines:#?}"
    );
    Ok(())
}

//! Losing a node: killed, its clients open new sessions on the other node (the Rust IDE
//! harness, and the Python SDK as a real MCP client); drained, calls in flight finish and its
//! clients move without a single error.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mcp_bridge_tests::{
    alive, bin, demo_tool, run_driver, run_driver_interactive, wait_until, Peers,
};
use serde_json::{json, Value};

use super::nginx::Nginx;
use super::{
    assert_echo, clients_on_every_node, echo, end_clients, sessions, sessions_started, text_of,
    two_relays, T,
};

/// A node dies (SIGKILL): its clients' calls in flight are answered with -32011, the clients
/// open new sessions through nginx on the other node, and their next calls work. Clients of
/// the surviving node notice nothing.
#[test]
fn a_lost_node_moves_its_clients_to_the_other_node() -> Result<()> {
    let (r1, r2) = two_relays("", &demo_tool("demo", ""))?;
    let nginx = Nginx::start(&[r1.addr, r2.addr])?;
    let mut clients = clients_on_every_node(&nginx.url("demo"), &[&r1, &r2], 2, 40)?;
    let victim_count = clients.iter().filter(|c| c.1 == 0).count();
    println!(
        "{} clients: {victim_count} on node 1 (killed), {} on node 2",
        clients.len(),
        clients.len() - victim_count
    );

    // Every client of node 1 has a call in flight at the tool when the node dies.
    for (i, (ide, node)) in clients.iter_mut().enumerate() {
        if *node == 0 {
            ide.send(&json!({"jsonrpc": "2.0", "id": 10, "method": "tools/call",
                "params": {"name": "slow", "arguments": {"steps": 400, "delay_ms": 50},
                           "_meta": {"progressToken": format!("c{i}")}}}))?;
            ide.recv_until(T, |m| m["method"] == "notifications/progress")?;
        }
    }
    let survivors_before = sessions(&r2);
    let orphans = r1.kill()?;
    let started = Instant::now();

    for (i, (ide, node)) in clients.iter_mut().enumerate() {
        if *node == 0 {
            let resp = ide.recv_until(T, |m| m["id"] == 10)?;
            assert_eq!(resp["error"]["code"], -32011, "{resp}");
        }
        let text = format!("client {i} after the node died");
        assert_echo(&echo(ide, 11, &text)?, &text);
    }
    println!(
        "all clients answered on node 2 {:.2} s after node 1 died",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(sessions(&r2), clients.len());
    assert_eq!(sessions(&r2), survivors_before + victim_count);
    for (ide, node) in &clients {
        let stderr = ide.stderr.text();
        if *node == 0 {
            assert!(stderr.contains("opened a new session"), "{stderr}");
        } else {
            assert!(
                !stderr.contains("resumed") && !stderr.contains("new session"),
                "a client of the surviving node was disturbed:\n{stderr}"
            );
        }
    }
    end_clients(clients.iter_mut().map(|c| &mut c.0))?;
    r2.wait_no_children(T)?;
    wait_until(T, || orphans.iter().all(|&p| !alive(p)))?;
    Ok(())
}

/// A rolling upgrade, one node: SIGTERM drains it. A call in flight there finishes; its idle
/// clients move through nginx to the other node (nginx skips the draining node's 503) without
/// any error reaching the IDE; the node exits 0 once its last call is done.
#[test]
fn a_draining_node_hands_its_clients_over_without_errors() -> Result<()> {
    let (r1, r2) = two_relays("shutdown_grace_ms = 10000", &demo_tool("demo", ""))?;
    let nginx = Nginx::start(&[r1.addr, r2.addr])?;
    let mut clients = clients_on_every_node(&nginx.url("demo"), &[&r1, &r2], 2, 40)?;
    let total = clients.len();
    println!(
        "{total} clients: {} on node 1 (drained), {} on node 2",
        clients.iter().filter(|c| c.1 == 0).count(),
        clients.iter().filter(|c| c.1 == 1).count()
    );
    let busy = clients.iter().position(|c| c.1 == 0).unwrap();
    clients[busy]
        .0
        .send(&json!({"jsonrpc": "2.0", "id": 10, "method": "tools/call",
            "params": {"name": "slow", "arguments": {"steps": 40, "delay_ms": 50},
                       "_meta": {"progressToken": "busy"}}}))?;
    clients[busy]
        .0
        .recv_until(T, |m| m["method"] == "notifications/progress")?;

    r1.terminate();
    // Each client of node 1 is told (`drain`) before it sends anything more.
    for (ide, node) in &clients {
        if *node == 0 {
            ide.stderr.wait_for("draining", T)?;
        }
    }
    for (i, (ide, _)) in clients.iter_mut().enumerate() {
        if i != busy {
            let text = format!("client {i} during the drain");
            assert_echo(&echo(ide, 11, &text)?, &text);
        }
    }
    let resp = clients[busy].0.recv_until(T, |m| m["id"] == 10)?;
    assert_eq!(
        text_of(&resp),
        "done after 40 steps",
        "the call in flight was not let finish: {resp}"
    );
    let status = r1.wait_exit(T)?;
    assert!(status.success(), "drained node exited with {status}");
    for (i, (ide, _)) in clients.iter_mut().enumerate() {
        let text = format!("client {i} after the drain");
        assert_echo(&echo(ide, 12, &text)?, &text);
    }
    assert_eq!(sessions(&r2), total, "every session is on node 2 now");
    end_clients(clients.iter_mut().map(|c| &mut c.0))?;
    r2.wait_no_children(T)?;
    // While node 1 still drained its last call it answered new sessions with 503, and nginx
    // sent them on to node 2 (proxy_next_upstream http_503): "503, 101" in the access log.
    // One WebSocket per client, plus the new session of each client that moved.
    let moved = clients.iter().filter(|c| c.1 == 0).count();
    let lines = nginx.wait_websocket_lines(total + moved)?;
    assert!(
        lines.iter().any(|l| l.contains("upstream_status=503, 101")),
        "no new session was passed on from the draining node to the other:\n{lines:#?}"
    );
    Ok(())
}

/// The Python SDK as the IDE, through bridge-client and nginx: the demo scenario over two
/// nodes, then server-everything's session survives losing its node (killed while a call is
/// in flight) by moving to the other node.
#[test]
fn python_sdk_through_nginx_survives_losing_its_node() -> Result<()> {
    let peers = Peers::require();
    let config = [demo_tool("demo", ""), peers.everything_table()].join("\n");
    let (r1, r2) = two_relays("", &config)?;
    let nginx = Nginx::start(&[r1.addr, r2.addr])?;

    let mut cmd = Command::new(&peers.python);
    cmd.arg(peers.script("py_client.py"))
        .args(["--scenario", "demo", "--timeout", "30", "--"])
        .arg(bin("bridge-client"))
        .arg(nginx.url("demo"));
    let summary = run_driver(&mut cmd, Duration::from_secs(45))?;
    assert!(
        summary["checks"].as_array().is_some_and(|c| c.len() >= 8),
        "{summary}"
    );
    r1.wait_no_children(T)?;
    r2.wait_no_children(T)?;

    let started_before = [sessions_started(&r1), sessions_started(&r2)];
    let mut relays = [Some(r1), Some(r2)];
    let mut killed = None;
    let mut cmd = Command::new(&peers.python);
    cmd.arg(peers.script("py_client.py"))
        .args([
            "--scenario",
            "restart-everything",
            "--timeout",
            "40",
            "--go-timeout",
            "20",
            "--inflight-timeout",
            "15",
            "--call-timeout",
            "15",
            "--",
        ])
        .arg(bin("bridge-client"))
        .arg(nginx.url("everything"));
    let summary = run_driver_interactive(&mut cmd, Duration::from_secs(55), || {
        // The node that holds the session (server-everything runs there) dies.
        let i = relays
            .iter()
            .position(|r| r.as_ref().is_some_and(|r| sessions(r) > 0))
            .context("no relay holds the session")?;
        let relay = relays[i].take().unwrap();
        relay.kill()?;
        killed = Some(i);
        Ok(())
    })?;
    let killed = killed.context("the driver never said ready")?;
    let survivor = relays[1 - killed].as_ref().unwrap();
    let checks: Vec<&str> = summary["checks"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for want in [
        "inflight_failed",
        "echo_after_restart",
        "get_sum_after_restart",
        "list_after_restart",
    ] {
        assert!(checks.contains(&want), "check {want} missing: {summary}");
    }
    assert_eq!(summary["inflight_error_code"], -32011, "{summary}");
    assert_eq!(
        sessions_started(survivor) - started_before[1 - killed],
        1,
        "the survivor should have started exactly the re-established session:\n{}",
        survivor.log.text()
    );
    survivor.wait_no_children(T)?;
    println!(
        "node {} killed; retries after the move: {}",
        killed + 1,
        summary["retries_after_restart"]
    );
    Ok(())
}

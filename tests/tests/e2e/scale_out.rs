//! Scale-out behind a real load balancer: nginx (the Debian package, installed by `.ci/run`)
//! runs `deploy/nginx/nginx.conf` on loopback in front of two relay nodes. The config is the
//! committed file, with only its `# @render` lines (addresses and paths) filled in.
//!
//! - clients spread over both nodes, each talking to its own session;
//! - a client whose connection is cut comes back, through nginx, to the node holding its
//!   session and resumes it;
//! - when a node dies, its clients open new sessions on the other node and keep working (the
//!   Rust IDE harness, and the Python SDK as a real MCP client);
//! - when a node drains (SIGTERM, as in a rolling upgrade), calls in flight finish and its
//!   clients move to the other node without a single error;
//! - the deploy examples' relay configs pass `bridge-server check-config`.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use mcp_bridge_tests::proxy::FaultProxy;
use mcp_bridge_tests::{
    alive, bin, children_of, demo_tool, http_get, repo_root, run_driver, run_driver_interactive,
    signal, tool_table, wait_child, wait_until, Ide, Peers, Relay, TempDir,
};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(15);

/// The committed load-balancer config that these tests run.
const NGINX_CONF: &str = "deploy/nginx/nginx.conf";

/// How to get nginx; named in the failure when it is missing.
const NGINX_SETUP: &str =
    "`.ci/run` installs it; by hand: `apt-get install nginx` (Debian/Ubuntu), \
     or set NGINX=/path/to/nginx";

// ---------------------------------------------------------------------------------------------
// nginx harness

/// The nginx binary: `$NGINX`, else `nginx` on PATH, else /usr/sbin/nginx. Fails the test
/// (never skips it) when there is none.
fn nginx_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("NGINX") {
        let p = PathBuf::from(p);
        assert!(
            p.exists(),
            "NGINX={} does not exist; {NGINX_SETUP}",
            p.display()
        );
        return p;
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("nginx"))
                .find(|p| p.is_file())
        })
        .unwrap_or_default();
    let found = on_path.or_else(|| {
        [
            "/usr/sbin/nginx",
            "/usr/local/sbin/nginx",
            "/usr/local/nginx/sbin/nginx",
        ]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
    });
    match found {
        Some(p) => p,
        None => panic!(
            "nginx is not installed, and these tests run the committed {NGINX_CONF} in a real \
             nginx: {NGINX_SETUP}"
        ),
    }
}

/// Fills in the `# @render` lines of the committed config: the relay nodes (in order), the
/// listen address, and every file path inside `dir`. Every other line is kept as it is.
fn render_nginx_conf(
    template: &str,
    dir: &Path,
    listen: SocketAddr,
    nodes: &[SocketAddr],
) -> Result<String> {
    let mut out = String::new();
    let mut next_node = 0;
    for line in template.lines() {
        let marked = line.split_once("# @render");
        let Some((code, _comment)) = marked.filter(|_| !line.trim_start().starts_with('#')) else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let code = code.trim_end();
        let indent = &code[..code.len() - code.trim_start().len()];
        let tokens: Vec<&str> = code.split_whitespace().collect();
        ensure!(tokens.len() >= 2, "marked line has no value: {line:?}");
        let directive = tokens[0];
        let path = |name: &str| dir.join(name).display().to_string();
        let value = match directive {
            "pid" => path("nginx.pid"),
            "error_log" => "stderr".to_owned(),
            "access_log" => path("access.log"),
            "client_body_temp_path" => path("body"),
            "proxy_temp_path" => path("proxy"),
            "fastcgi_temp_path" => path("fastcgi"),
            "uwsgi_temp_path" => path("uwsgi"),
            "scgi_temp_path" => path("scgi"),
            "listen" => listen.to_string(),
            "server" => {
                let node = nodes.get(next_node).with_context(|| {
                    format!("{NGINX_CONF} lists more relay nodes than the test started")
                })?;
                next_node += 1;
                node.to_string()
            }
            other => bail!("{NGINX_CONF}: the test does not know how to render `{other}`"),
        };
        // Keep the rest of the directive (a log format, server parameters, the level).
        let mut rest: Vec<String> = tokens[2..].iter().map(|s| (*s).to_owned()).collect();
        let mut value = value;
        if tokens[1].ends_with(';') {
            value.push(';');
        }
        if directive == "error_log" {
            // Down to "notice": nginx's start-up lines too (next-upstream decisions are "warn",
            // failed connections "error"); shown when a test fails.
            rest = vec!["notice;".to_owned()];
        }
        let mut rendered = format!("{indent}{directive} {value}");
        for r in rest {
            rendered.push(' ');
            rendered.push_str(&r);
        }
        out.push_str(&rendered);
        out.push('\n');
    }
    ensure!(
        next_node == nodes.len(),
        "{NGINX_CONF} lists {next_node} relay node(s); the test started {}",
        nodes.len()
    );
    Ok(out)
}

/// Collected output of a stream, read by a thread.
#[derive(Clone, Default)]
struct Collected(Arc<Mutex<String>>);

impl Collected {
    fn from(stream: impl Read + Send + 'static, tag: &'static str) -> Collected {
        let c = Collected::default();
        let c2 = c.clone();
        thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("MCP_BRIDGE_TEST_ECHO").is_some() {
                    eprintln!("[{tag}] {line}");
                }
                let mut text = c2.0.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        c
    }

    fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }
}

/// A real nginx on a free loopback port, running the committed config in front of `nodes`.
/// Stopped (and its workers reaped) on drop.
struct Nginx {
    child: Option<Child>,
    addr: SocketAddr,
    stderr: Collected,
    dir: TempDir,
}

impl Nginx {
    fn start(nodes: &[SocketAddr]) -> Result<Nginx> {
        let exe = nginx_binary();
        let template = std::fs::read_to_string(repo_root().join(NGINX_CONF))
            .with_context(|| format!("reading {NGINX_CONF}"))?;
        let mut last_err = None;
        // A free port is found by binding port 0 and closing it; another process may take it
        // before nginx binds it, so try a few times.
        for _ in 0..3 {
            match Nginx::try_start(&exe, &template, nodes) {
                Ok(n) => return Ok(n),
                Err(e) if format!("{e:#}").contains("Address already in use") => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap())
    }

    fn try_start(exe: &Path, template: &str, nodes: &[SocketAddr]) -> Result<Nginx> {
        let dir = TempDir::new();
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, render_nginx_conf(template, dir.path(), addr, nodes)?)?;
        let prefix = format!("{}/", dir.path().display());
        let args = |cmd: &mut Command| {
            cmd.arg("-p").arg(&prefix).arg("-c").arg(&conf).args([
                "-e",
                "stderr",
                "-g",
                "daemon off;",
            ]);
        };
        // `nginx -t` first: a config error is reported as such, with nginx's own words.
        let mut check = Command::new(exe);
        args(&mut check);
        let out = check
            .arg("-t")
            .output()
            .with_context(|| format!("running {} -t", exe.display()))?;
        ensure!(
            out.status.success(),
            "nginx -t rejected the rendered {NGINX_CONF} ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let mut cmd = Command::new(exe);
        args(&mut cmd);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let stderr = Collected::from(child.stderr.take().context("stderr")?, "nginx");
        let mut nginx = Nginx {
            child: Some(child),
            addr,
            stderr,
            dir,
        };
        // Ready when /healthz answers through nginx (from one of the relays).
        let deadline = Instant::now() + T;
        loop {
            if let Some(status) = nginx.child.as_mut().unwrap().try_wait()? {
                nginx.child = None;
                bail!("nginx exited at start ({status}):\n{}", nginx.stderr.text());
            }
            if matches!(http_get(addr, "/healthz"), Ok((200, _))) {
                return Ok(nginx);
            }
            if Instant::now() >= deadline {
                bail!(
                    "nginx did not answer /healthz within {T:?}:\n{}",
                    nginx.stderr.text()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn url(&self, tool: &str) -> String {
        format!("ws://{}/mcp/{tool}", self.addr)
    }

    /// The access log: one line per finished request (a WebSocket is logged when it closes).
    fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// Access-log lines of WebSocket sessions (status 101).
    fn websocket_lines(&self) -> Vec<String> {
        self.access_log()
            .lines()
            .filter(|l| l.contains("\"GET /mcp/") && l.contains(" 101 "))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let workers: Vec<u32> = children_of(child.id()).iter().map(|c| c.0).collect();
        // TERM: fast shutdown (closes the WebSockets, workers exit, then the master).
        signal(child.id(), "TERM");
        if wait_child(&mut child, Duration::from_secs(5)).is_err() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for w in workers {
            if alive(w) {
                signal(w, "KILL");
            }
        }
        if std::thread::panicking() {
            eprintln!("nginx stderr:\n{}", self.stderr.text());
            eprintln!("nginx access log:\n{}", self.access_log());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// helpers

/// Tool processes of a relay (its children that are not zombies): one per session.
fn sessions(relay: &Relay) -> usize {
    relay.children().iter().filter(|c| c.1 != 'Z').count()
}

/// How many sessions a relay has started (from its log).
fn sessions_started(relay: &Relay) -> usize {
    relay.log.text().matches("session started").count()
}

fn text_of(resp: &Value) -> &str {
    resp.pointer("/result/content/0/text")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn echo(ide: &mut Ide, id: u64, text: &str) -> Result<Value> {
    ide.request(
        json!(id),
        "tools/call",
        json!({"name": "echo", "arguments": {"text": text}}),
    )
}

/// Asserts an echo answer is exactly `text` (not an error, not another client's text).
fn assert_echo(resp: &Value, text: &str) {
    assert!(resp.get("error").is_none(), "error answer: {resp}");
    assert_eq!(text_of(resp), text, "{resp}");
}

/// A client through `url`, initialized; returns it and the index of the relay its session
/// landed on (seen as the relay whose tool-process count grew).
fn connect_and_locate(url: &str, relays: &[&Relay]) -> Result<(Ide, usize)> {
    let before: Vec<usize> = relays.iter().map(|r| sessions(r)).collect();
    let mut ide = Ide::connect(url, &[])?;
    ide.initialize()?;
    // The tool process is started before the upgrade completes, so it is there by now.
    let mut grew = None;
    wait_until(T, || {
        let now: Vec<usize> = relays.iter().map(|r| sessions(r)).collect();
        grew = (0..relays.len()).find(|&i| now[i] > before[i]);
        grew.is_some()
    })
    .context("no relay got the new session")?;
    Ok((ide, grew.unwrap()))
}

/// Opens clients one at a time until every relay holds at least `each` of their sessions (at
/// most `max` clients). Returns each client with the index of its relay.
fn clients_on_every_node(
    url: &str,
    relays: &[&Relay],
    each: usize,
    max: usize,
) -> Result<Vec<(Ide, usize)>> {
    let mut out: Vec<(Ide, usize)> = Vec::new();
    while (0..relays.len()).any(|i| out.iter().filter(|c| c.1 == i).count() < each) {
        ensure!(
            out.len() < max,
            "{max} clients did not give every node {each} session(s): the hash put {:?}",
            (0..relays.len())
                .map(|i| out.iter().filter(|c| c.1 == i).count())
                .collect::<Vec<_>>()
        );
        out.push(connect_and_locate(url, relays)?);
    }
    Ok(out)
}

fn two_relays(limits: &str, body: &str) -> Result<(Relay, Relay)> {
    Ok((
        Relay::start_with(limits, body, None)?,
        Relay::start_with(limits, body, None)?,
    ))
}

// ---------------------------------------------------------------------------------------------
// tests

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

    for ide in &mut ides {
        ide.close_stdin();
    }
    for ide in &mut ides {
        assert!(ide.wait(T)?.success(), "{}", ide.stderr.text());
    }
    r1.wait_no_children(T)?;
    r2.wait_no_children(T)?;
    // nginx logs each WebSocket when it closes: 20 new sessions, split as the relays saw them.
    wait_until(T, || nginx.websocket_lines().len() >= N)
        .with_context(|| format!("access log:\n{}", nginx.access_log()))?;
    let lines = nginx.websocket_lines();
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
    wait_until(T, || nginx.websocket_lines().len() >= 4)
        .with_context(|| format!("access log:\n{}", nginx.access_log()))?;
    let lines = nginx.websocket_lines();
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
    for (ide, _) in &mut clients {
        ide.close_stdin();
    }
    for (ide, _) in &mut clients {
        assert!(ide.wait(T)?.success());
    }
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
    for (ide, _) in &mut clients {
        ide.close_stdin();
    }
    for (ide, _) in &mut clients {
        assert!(ide.wait(T)?.success());
    }
    r2.wait_no_children(T)?;
    // While node 1 still drained its last call it answered new sessions with 503, and nginx
    // sent them on to node 2 (proxy_next_upstream http_503): "503, 101" in the access log.
    // One WebSocket per client, plus the new session of each client that moved.
    let moved = clients.iter().filter(|c| c.1 == 0).count();
    wait_until(T, || nginx.websocket_lines().len() >= total + moved)
        .with_context(|| format!("access log:\n{}", nginx.access_log()))?;
    let lines = nginx.websocket_lines();
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
    let config = [
        demo_tool("demo", ""),
        tool_table("everything", &peers.server_everything(), &["stdio"], ""),
    ]
    .join("\n");
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

/// The relay configs shipped in deploy/ are valid (the sample, and the one in the Kubernetes
/// ConfigMap), the systemd unit passes `systemd-analyze verify`, and the nginx config renders
/// with every marked line understood.
#[test]
fn deploy_examples_pass_check_config() -> Result<()> {
    let root = repo_root();
    let dir = TempDir::new();
    let k8s = std::fs::read_to_string(root.join("deploy/kubernetes/configmap.yaml"))?;
    let k8s_toml = yaml_block(&k8s, "relay.toml:").context("relay.toml in the ConfigMap")?;
    let k8s_file = dir.path().join("k8s-relay.toml");
    std::fs::write(&k8s_file, k8s_toml)?;
    for file in [root.join("deploy/relay.example.toml"), k8s_file] {
        let out = Command::new(bin("bridge-server"))
            .arg("check-config")
            .arg(&file)
            .output()?;
        assert!(
            out.status.success(),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The systemd unit, where systemd's own checker is installed (the CI image has it; it is
    // a check of the file, not of a running systemd). ExecStart must name an existing program.
    let unit = std::fs::read_to_string(root.join("deploy/systemd/mcp-bridge.service"))?;
    let analyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    if let Some(analyze) = analyze {
        let unit_file = dir.path().join("mcp-bridge.service");
        let server = bin("bridge-server").display().to_string();
        std::fs::write(
            &unit_file,
            unit.replace("/usr/local/bin/bridge-server", &server),
        )?;
        let out = Command::new(analyze)
            .arg("verify")
            .arg(&unit_file)
            .output()?;
        assert!(
            out.status.success(),
            "systemd-analyze verify deploy/systemd/mcp-bridge.service: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        println!(
            "systemd-analyze is not installed: deploy/systemd/mcp-bridge.service not verified"
        );
    }

    let template = std::fs::read_to_string(root.join(NGINX_CONF))?;
    let a = SocketAddr::from(([127, 0, 0, 1], 1));
    let rendered = render_nginx_conf(&template, dir.path(), a, &[a, a])?;
    assert!(rendered.contains("hash $mcp_bridge_affinity consistent;"));
    assert!(!rendered.contains("10.0.0."), "{rendered}");
    Ok(())
}

/// The text of a YAML literal block (`key: |`), dedented.
fn yaml_block(yaml: &str, key: &str) -> Option<String> {
    let mut lines = yaml
        .lines()
        .skip_while(|l| !l.trim_start().starts_with(key));
    let head = lines.next()?;
    let key_indent = head.len() - head.trim_start().len();
    let body: Vec<&str> = lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > key_indent)
        .collect();
    let indent = body
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()?;
    Some(
        body.iter()
            .map(|l| l.get(indent..).unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

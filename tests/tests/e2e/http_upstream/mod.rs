//! bridge-client's Streamable HTTP upstream (`bridge-client http://…`) against real MCP
//! servers on loopback: the Python SDK's MCPServer over streamable HTTP and server-everything in
//! `streamableHttp` mode, with the Python SDK client as the IDE; and the faults the shim must
//! ride out (a restarted server, an unreachable one; SSE streams cut mid-call in `resume`), and
//! the legacy HTTP+SSE transport in `legacy`; another bridge (supergateway, stateful) as the
//! server in `supergateway`.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use mcp_bridge_tests::{bin, reap, run_driver, wait_until, Ide, Log, Peers};
use serde_json::{json, Value};

mod legacy;
mod mismatch;
mod resume;
mod supergateway;

const DRIVER_LIMIT: Duration = Duration::from_secs(90);
const READY: Duration = Duration::from_secs(20);

/// A test MCP server process (killed and reaped on drop).
struct Server {
    child: Child,
    port: u16,
    stderr: Log,
}

impl Server {
    /// tests/peers/py_http_server.py with `transport` on `port` (0: the OS picks).
    fn python(peers: &Peers, transport: &str, port: u16) -> Result<Server> {
        Server::script(
            peers,
            "py_http_server.py",
            &["--transport", transport],
            port,
        )
    }

    /// A server script in tests/peers that prints `{"port": N}` once it listens.
    fn script(peers: &Peers, script: &'static str, args: &[&str], port: u16) -> Result<Server> {
        let mut child = Command::new(&peers.python)
            .arg(peers.script(script))
            .args(args)
            .args(["--port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {script}"))?;
        let stderr = Log::default();
        stderr.drain_from(child.stderr.take().context("stderr")?, script);
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
        let v: Value = serde_json::from_str(line.trim())
            .with_context(|| format!("server said {line:?}; stderr: {}", stderr.text()))?;
        let port = v["port"].as_u64().context("no port")? as u16;
        wait_listening(port)?;
        Ok(Server {
            child,
            port,
            stderr,
        })
    }

    /// server-everything in streamableHttp mode.
    fn everything(peers: &Peers) -> Result<Server> {
        let port = free_port()?;
        let mut child = Command::new(peers.server_everything())
            .arg("streamableHttp")
            .env("PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting server-everything")?;
        let stderr = Log::default();
        stderr.drain_from(child.stderr.take().context("stderr")?, "everything");
        wait_listening(port)?;
        Ok(Server {
            child,
            port,
            stderr,
        })
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    fn stop(mut self) -> Result<()> {
        let _ = self.child.kill();
        reap(&mut self.child, Duration::from_secs(5))?;
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = reap(&mut self.child, Duration::from_secs(5));
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_listening(port: u16) -> Result<()> {
    wait_until(READY, || TcpStream::connect(("127.0.0.1", port)).is_ok())
        .with_context(|| format!("nothing listening on port {port}"))
}

fn bridge(url: &str) -> Result<Ide> {
    Ide::connect(
        url,
        &["--no-keyring", "--token-env", "MCP_BRIDGE_TEST_NO_TOKEN"],
    )
}

fn call(ide: &mut Ide, id: i64, tool: &str, args: Value) -> Result<Value> {
    ide.request(
        json!(id),
        "tools/call",
        json!({"name": tool, "arguments": args}),
    )
}

fn text_of(resp: &Value) -> Result<&str> {
    match resp["result"]["content"][0]["text"].as_str() {
        Some(t) => Ok(t),
        None => bail!("not a tool result: {resp}"),
    }
}

#[test]
fn python_sdk_client_with_server_everything_over_streamable_http() -> Result<()> {
    let peers = Peers::require();
    let server = Server::everything(&peers)?;
    let mut cmd = Command::new(&peers.python);
    cmd.arg(peers.script("py_client.py"))
        .args([
            "--scenario",
            "everything",
            "--mode",
            "legacy",
            "--no-list-changed",
            "--",
        ])
        .arg(bin("bridge-client"))
        .args(["--no-keyring", &server.url()]);
    let summary = run_driver(&mut cmd, DRIVER_LIMIT)
        .with_context(|| format!("server stderr: {}", server.stderr.text()))?;
    let checks: Vec<&str> = summary["checks"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for wanted in [
        "echo",
        "progress",
        "cancel",
        "sampling",
        "elicitation",
        "roots",
        "ping",
    ] {
        assert!(checks.contains(&wanted), "{wanted} missing: {summary}");
    }
    Ok(())
}

#[test]
fn python_sdk_server_tools_and_a_notification() -> Result<()> {
    let peers = Peers::require();
    let server = Server::python(&peers, "streamable-http", 0)?;
    let mut ide = bridge(&server.url())?;
    let init = ide.initialize()?;
    assert!(init["result"]["protocolVersion"].is_string(), "{init}");
    assert_eq!(
        text_of(&call(&mut ide, 1, "add", json!({"a": 2, "b": 40}))?)?,
        "42"
    );
    ide.send(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "shout", "arguments": {"text": "hi"}}}))?;
    let log = ide.recv(Duration::from_secs(20))?;
    assert_eq!(log["method"], "notifications/message", "{log}");
    let resp = ide.recv(Duration::from_secs(20))?;
    assert_eq!(resp["id"], 2);
    assert_eq!(text_of(&resp)?, "HI");
    // Many calls at once, each answered once.
    for id in 10..30 {
        ide.send(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "add", "arguments": {"a": id, "b": 1}}}))?;
    }
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 20 {
        let r = ide.recv(Duration::from_secs(20))?;
        let id = r["id"].as_i64().context("id")?;
        assert_eq!(text_of(&r)?, (id + 1).to_string());
        assert!(seen.insert(id), "answered twice: {id}");
    }
    ide.close_stdin();
    assert!(ide.wait(Duration::from_secs(3))?.success());
    Ok(())
}

#[test]
fn server_restart_opens_a_new_session_and_replays_the_handshake() -> Result<()> {
    let peers = Peers::require();
    let server = Server::python(&peers, "streamable-http", 0)?;
    let port = server.port;
    let mut ide = bridge(&server.url())?;
    ide.initialize()?;
    assert_eq!(
        text_of(&call(&mut ide, 1, "add", json!({"a": 1, "b": 1}))?)?,
        "2"
    );
    server.stop()?;
    let server = Server::python(&peers, "streamable-http", port)?;
    // The old session is unknown to the new process: 404 → new session → the call succeeds.
    let resp = call(&mut ide, 2, "add", json!({"a": 2, "b": 2}))?;
    assert_eq!(text_of(&resp)?, "4", "{resp}");
    assert!(
        ide.stderr.text().contains("lost the session"),
        "{}",
        ide.stderr.text()
    );
    drop(server);
    Ok(())
}

#[test]
fn unreachable_server_answers_with_32011_and_recovers() -> Result<()> {
    let peers = Peers::require();
    let server = Server::python(&peers, "streamable-http", 0)?;
    let port = server.port;
    let mut ide = bridge(&server.url())?;
    ide.initialize()?;
    server.stop()?;
    let resp = call(&mut ide, 1, "add", json!({"a": 1, "b": 1}))?;
    assert_eq!(resp["error"]["code"], -32011, "{resp}");
    let resp = call(&mut ide, 2, "add", json!({"a": 1, "b": 1}))?;
    assert_eq!(resp["error"]["code"], -32011, "still down: {resp}");
    let _server = Server::python(&peers, "streamable-http", port)?;
    let resp = call(&mut ide, 3, "add", json!({"a": 3, "b": 3}))?;
    assert_eq!(text_of(&resp)?, "6", "{resp}");
    Ok(())
}

//! Another bridge as the server: supergateway 4.0.0 in stateful Streamable HTTP mode with
//! server-everything (stdio) behind it — a process per `Mcp-Session-Id` — and the Python SDK
//! client (stdio) → bridge-client → supergateway: tools, progress, cancel, and the server's own
//! requests (sampling, elicitation, roots) carried on the SSE streams and answered by POST; and
//! bridge-client's `DELETE` at the end of a session ending that session's process.

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use mcp_bridge_tests::{assert_checks, bin, children_of, run_driver, wait_until, Log, Peers};

use super::{bridge, free_port, wait_listening, Server, DRIVER_LIMIT};

impl Server {
    /// supergateway `--stateful --outputTransport streamableHttp` over server-everything.
    fn supergateway(peers: &Peers) -> Result<Server> {
        let gateway = peers.node_modules.join(".bin/supergateway");
        ensure!(
            gateway.exists(),
            "supergateway is missing: run scripts/install-peers.sh"
        );
        let port = free_port()?;
        let everything = format!("{} stdio", peers.server_everything().display());
        let mut child = Command::new(gateway)
            .args([
                "--stdio",
                &everything,
                "--outputTransport",
                "streamableHttp",
            ])
            .args(["--stateful", "--logLevel", "none", "--port"])
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting supergateway")?;
        let stderr = Log::default();
        stderr.drain_from(child.stderr.take().context("stderr")?, "supergateway");
        wait_listening(port)?;
        Ok(Server {
            child,
            port,
            stderr,
        })
    }

    /// The processes supergateway runs for its sessions.
    fn sessions(&self) -> usize {
        children_of(self.child.id()).len()
    }
}

#[test]
fn python_sdk_client_through_bridge_client_to_supergateway_stateful_http() -> Result<()> {
    let peers = Peers::require();
    let server = Server::supergateway(&peers)?;
    let mut cmd = Command::new(&peers.python);
    cmd.arg(peers.script("py_client.py"))
        .args(["--scenario", "everything", "--mode", "legacy", "--"])
        .arg(bin("bridge-client"))
        .args(["--no-keyring", &server.url()]);
    let summary = run_driver(&mut cmd, DRIVER_LIMIT)
        .with_context(|| format!("supergateway stderr: {}", server.stderr.text()))?;
    assert_checks(
        &summary,
        &[
            "tools_list_changed",
            "roots_request_at_startup",
            "echo",
            "get_sum",
            "progress",
            "resources",
            "prompts",
            "cancel",
            "after_cancel",
            "sampling",
            "elicitation",
            "roots",
            "ping",
        ],
    );
    // The driver closed bridge-client's stdin; its DELETE ended the session's process.
    wait_until(Duration::from_secs(10), || server.sessions() == 0)
        .context("supergateway still runs a process for the ended session")?;
    Ok(())
}

#[test]
fn a_session_ended_by_the_ide_ends_its_supergateway_process() -> Result<()> {
    let peers = Peers::require();
    let server = Server::supergateway(&peers)?;
    let mut ide = bridge(&server.url())?;
    let init = ide.initialize()?;
    ensure!(
        init["result"]["serverInfo"]["name"] == "mcp-servers/everything",
        "{init}"
    );
    wait_until(Duration::from_secs(10), || server.sessions() == 1)
        .context("no process for the session")?;
    ide.close_stdin();
    ensure!(ide.wait(Duration::from_secs(5))?.success());
    wait_until(Duration::from_secs(10), || server.sessions() == 0).with_context(|| {
        format!(
            "the session's process outlived bridge-client; its stderr: {}",
            ide.stderr.text()
        )
    })?;
    Ok(())
}

//! The legacy HTTP+SSE transport (2024-11-05): the Python SDK's SSE server (tests/peers/
//! py_http_server.py `--transport sse`, `mcp` 2.3.0) refuses the Streamable HTTP POST with
//! 405, bridge-client falls back to GET + `endpoint` + POSTs, and the Python SDK client over
//! stdio (`legacy` and `auto` modes) sees an ordinary server; a restarted server is a lost
//! session, recovered with the handshake replayed.

use std::process::Command;

use anyhow::{Context, Result};
use mcp_bridge_tests::{bin, run_driver, Peers};
use serde_json::{json, Value};

use super::{bridge, call, text_of, Server, DRIVER_LIMIT};

fn sse_url(server: &Server) -> String {
    format!("http://127.0.0.1:{}/sse", server.port)
}

fn python_client(peers: &Peers, mode: &str, url: &str) -> Result<Value> {
    let mut cmd = Command::new(&peers.python);
    cmd.arg(peers.script("py_tools_client.py"))
        .args(["--mode", mode, "--"])
        .arg(bin("bridge-client"))
        .args(["--no-keyring", url]);
    run_driver(&mut cmd, DRIVER_LIMIT)
}

#[test]
fn python_sdk_client_through_bridge_client_to_a_legacy_sse_server() -> Result<()> {
    let peers = Peers::require();
    let server = Server::python(&peers, "sse", 0)?;
    for mode in ["legacy", "auto"] {
        let summary = python_client(&peers, mode, &sse_url(&server))
            .with_context(|| format!("mode {mode}; server stderr: {}", server.stderr.text()))?;
        assert_eq!(summary["ok"], true, "{summary}");
        assert!(summary["protocol_version"].is_string(), "{mode}: {summary}");
    }
    Ok(())
}

#[test]
fn legacy_server_restart_is_a_new_session_with_the_handshake_replayed() -> Result<()> {
    let peers = Peers::require();
    let server = Server::python(&peers, "sse", 0)?;
    let port = server.port;
    let mut ide = bridge(&sse_url(&server))?;
    ide.initialize()?;
    assert_eq!(
        text_of(&call(&mut ide, 1, "add", json!({"a": 1, "b": 2}))?)?,
        "3"
    );
    assert!(
        ide.stderr.text().contains("HTTP+SSE"),
        "{}",
        ide.stderr.text()
    );
    server.stop()?;
    // The stream is lost; with no server the next call fails at once, and the one after the
    // restart works on a new session.
    let resp = call(&mut ide, 2, "add", json!({"a": 2, "b": 2}))?;
    assert_eq!(resp["error"]["code"], -32011, "{resp}");
    let _server = Server::python(&peers, "sse", port)?;
    let resp = call(&mut ide, 3, "add", json!({"a": 3, "b": 3}))?;
    assert_eq!(text_of(&resp)?, "6", "{resp}");
    ide.close_stdin();
    assert!(ide.wait(std::time::Duration::from_secs(3))?.success());
    Ok(())
}

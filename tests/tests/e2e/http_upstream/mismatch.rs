//! 2026-07-28 requests over Streamable HTTP to the Python SDK's server (`mcp` 2.3.0), which
//! checks a `tools/call`'s `Mcp-Param-*` headers against the tool's schema of the moment: a
//! tool annotated with `x-mcp-header` after the IDE listed the tools makes the server refuse
//! the call with `-32020` (HeaderMismatch); bridge-client lists the tools again, as the spec
//! asks of a client, and sends the call once more with the header — the IDE sees only the
//! result.

use std::time::Duration;

use anyhow::{ensure, Result};
use mcp_bridge_tests::Peers;
use serde_json::{json, Value};

use super::{bridge, text_of, Server};

fn meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "mcp-bridge-tests", "version": "0"},
        "io.modelcontextprotocol/clientCapabilities": {}
    })
}

#[test]
fn a_header_mismatch_relists_the_tools_and_the_call_succeeds() -> Result<()> {
    let peers = Peers::require();
    let server = Server::python(&peers, "streamable-http", 0)?;
    let mut ide = bridge(&server.url())?;
    let list = ide.request(json!(1), "tools/list", json!({"_meta": meta()}))?;
    let tools = list["result"]["tools"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let region = tools.iter().find(|t| t["name"] == "region");
    ensure!(
        region.is_some_and(|t| !t.to_string().contains("x-mcp-header")),
        "{list}"
    );
    let armed = ide.request(
        json!(2),
        "tools/call",
        json!({"name": "annotate_region", "arguments": {}, "_meta": meta()}),
    )?;
    ensure!(text_of(&armed)? == "annotated", "{armed}");
    // bridge-client still knows the old schema: no Mcp-Param-Region on this call.
    ide.send(
        &json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
        "name": "region", "arguments": {"region": "eu-west"}, "_meta": meta()}}),
    )?;
    let r = ide.recv(Duration::from_secs(20))?;
    ensure!(r["id"] == 3, "the IDE saw another message first: {r}");
    ensure!(
        text_of(&r)? == "ran in eu-west",
        "{r}; stderr: {}",
        ide.stderr.text()
    );
    let log = ide.stderr.text();
    ensure!(log.contains("header mismatch (-32020)"), "{log}");
    // Later calls carry the header at once.
    let r = ide.request(
        json!(4),
        "tools/call",
        json!({"name": "region", "arguments": {"region": "ap"}, "_meta": meta()}),
    )?;
    ensure!(text_of(&r)? == "ran in ap", "{r}");
    ensure!(
        ide.stderr.text().matches("header mismatch").count() == 1,
        "{}",
        ide.stderr.text()
    );
    Ok(())
}

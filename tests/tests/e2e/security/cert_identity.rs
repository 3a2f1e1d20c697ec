//! Client certificates as an identity (`mode = "mtls"`): a certificate verified against the
//! client CA is mapped by its subject CN or a SAN to a user with grants and groups — no bearer
//! token at all; the tool learns the user; an unmapped certificate and an ungranted tool are
//! refused before a tool starts.

use anyhow::{ensure, Result};
use mcp_bridge_tests::pki::Pki;
use mcp_bridge_tests::{demo_tool, fixture_tool, relay_config, Ide, Relay};
use serde_json::{json, Value};

use super::{client, echo_works, refused, T};

fn env_of(ide: &mut Ide, name: &str) -> Result<String> {
    let r = ide.request(
        json!(5),
        "tools/call",
        json!({"name": "env", "arguments": {"name": name}}),
    )?;
    Ok(r.pointer("/result/content/0/text")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned())
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn client_certificates_map_to_users_with_grants() -> Result<()> {
    let pki = Pki::new()?;
    let config = format!(
        r#"[tls]
cert = "{}"
key = "{}"
client_ca = "{}"

[auth]
mode = "mtls"

[[auth.cert]]
subject_cn = "alice"
user = "alice"
tools = ["time"]
groups = ["eng", "ops"]

[[auth.cert]]
san = "bob@example.com"
user = "bob"
tools = ["demo"]

{}
{}"#,
        pki.path("server.pem"),
        pki.path("server.key"),
        pki.path("ca.pem"),
        demo_tool("demo", ""),
        fixture_tool("time", &[], "")
    );
    let relay = Relay::start_config(&relay_config("", &config), &[])?;
    let url = |tool: &str| format!("wss://127.0.0.1:{}/mcp/{tool}", relay.addr.port());
    let ca = pki.path("ca.pem");
    let as_user = |who: &str| -> Vec<String> {
        vec![
            "--ca-file".into(),
            ca.clone(),
            "--client-cert".into(),
            pki.path(&format!("{who}.pem")),
            "--client-key".into(),
            pki.path(&format!("{who}.key")),
        ]
    };

    // alice, by her certificate's CN: the tool sees her name and groups; no token was sent.
    let alice = as_user("client");
    let mut ide = client(&url("time"), None, &args(&alice))?;
    ide.initialize()?;
    ensure!(env_of(&mut ide, "MCP_BRIDGE_USER")? == "alice");
    ensure!(env_of(&mut ide, "MCP_BRIDGE_GROUPS")? == "eng,ops");
    ide.close_stdin();
    ide.wait(T)?;

    // bob, by the email in his certificate's SAN.
    let bob = as_user("bob");
    let mut ide = client(&url("demo"), None, &args(&bob))?;
    echo_works(&mut ide)?;
    ide.close_stdin();
    ide.wait(T)?;

    // (The relay serves TLS only, so its metrics are not scraped here; its log and process
    // table tell instead.)
    mcp_bridge_tests::wait_until(T, || relay.children().is_empty())?;
    // bob may not use `time`; eve's certificate is valid but maps to no one.
    let err = refused(&url("time"), None, &args(&bob))?;
    ensure!(
        err.contains("HTTP 403") && err.contains("not granted tool `time`"),
        "{err}"
    );
    println!("rejected as expected: a certificate user asking for a tool not granted -> {err}");
    let err = refused(&url("demo"), None, &args(&as_user("eve")))?;
    ensure!(
        err.contains("HTTP 403") && err.contains("not mapped to a user"),
        "{err}"
    );
    println!("rejected as expected: a valid certificate mapped to no user -> {err}");
    ensure!(
        relay.children().is_empty(),
        "a refused certificate started a tool"
    );
    relay.log.wait_for("unknown_certificate", T)?;
    relay.log.wait_for("not_granted", T)?;
    Ok(())
}

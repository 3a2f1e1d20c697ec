//! `Mcp-Param-*` headers of session-less calls: the relay learns the fixture's `region` tool
//! (its `region` argument marked `x-mcp-header: Region`) from its own `tools/list` and from
//! the answer it passes on unchanged, then checks each `tools/call`'s header against the body — matching
//! (plain or base64) is answered; missing, different, or sent for an absent argument is 400
//! with JSON-RPC -32020 naming the header; an undeclared one is ignored. The Python SDK in
//! `auto` mode sends the header itself and is answered.

use std::process::Command;

use anyhow::Result;
use mcp_bridge_tests::{assert_checks, fixture_tool, run_driver, Peers, Relay};
use serde_json::Value;

use super::super::{http_url, DRIVER_LIMIT};
use super::{answer, body, post, text_of, tool_call, MODERN};

fn region_call(id: u32, args: &str) -> String {
    body(
        &id.to_string(),
        "tools/call",
        &format!(r#""name":"region","arguments":{args}"#),
        MODERN,
    )
}

#[test]
fn mcp_param_headers_are_checked_against_the_body() -> Result<()> {
    let relay = Relay::start(&fixture_tool("fx", &["--modern"], ""))?;
    let call = |id: u32, args: &str, extra: &[(&str, &str)]| {
        post(
            relay.addr,
            "fx",
            &region_call(id, args),
            "tools/call",
            Some("region"),
            extra,
        )
    };
    // The relay lists the tools itself before the process takes a first call: even a client
    // that never listed them is checked.
    let early = call(1, r#"{"region":"us-west1","query":"q"}"#, &[])?;
    assert_eq!(early.status, 400, "{early:?}");
    assert_eq!(answer(&early)?["error"]["code"], -32020);

    let list = post(
        relay.addr,
        "fx",
        &body("2", "tools/list", "", MODERN),
        "tools/list",
        None,
        &[],
    )?;
    assert_eq!(list.status, 200, "{list:?}");
    let v = answer(&list)?;
    assert_eq!(
        v["result"]["tools"][0]["inputSchema"]["properties"]["region"]["x-mcp-header"], "Region",
        "the answer passes unchanged: {v}"
    );

    // Matching headers, plain and base64 (the value has a non-ASCII part and edge spaces).
    let ok = call(
        3,
        r#"{"region":"us-west1","query":"q"}"#,
        &[("Mcp-Param-Region", "us-west1")],
    )?;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(text_of(&answer(&ok)?), "us-west1|q");
    let ok = call(
        4,
        r#"{"region":" Hello, 世界 ","query":"q"}"#,
        &[("mcp-param-region", "=?base64?IEhlbGxvLCDkuJbnlYwg?=")],
    )?;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(text_of(&answer(&ok)?), " Hello, 世界 |q");
    // No argument, no header; an undeclared Mcp-Param-* header is not the relay's to judge.
    let ok = call(5, r#"{"query":"q"}"#, &[("Mcp-Param-Other", "x")])?;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(text_of(&answer(&ok)?), "-|q");

    for (id, args, extra, said) in [
        (
            6,
            r#"{"region":"us-west1","query":"q"}"#,
            vec![],
            "the Mcp-Param-Region header is missing, but the body's argument `region` is present",
        ),
        (
            7,
            r#"{"region":"us-west1","query":"q"}"#,
            vec![("Mcp-Param-Region", "eu-west1")],
            "the Mcp-Param-Region header value `eu-west1` does not match the body's argument `region` value `us-west1`",
        ),
        (
            8,
            r#"{"query":"q"}"#,
            vec![("Mcp-Param-Region", "us-west1")],
            "the Mcp-Param-Region header is present, but the body's argument `region` is absent",
        ),
        (
            9,
            r#"{"region":"us-west1","query":"q"}"#,
            vec![("Mcp-Param-Region", "=?base64?!!?=")],
            "the Mcp-Param-Region header is not valid `=?base64?…?=`",
        ),
    ] {
        let r = call(id, args, &extra)?;
        assert_eq!(r.status, 400, "{id}: {r:?}");
        assert!(
            r.header("content-type")
                .is_some_and(|c| c.starts_with("application/json")),
            "{r:?}"
        );
        let v: Value = serde_json::from_str(&r.body)?;
        assert_eq!(v["error"]["code"], -32020, "{v}");
        assert_eq!(v["id"], id, "{v}");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(message.starts_with("Header mismatch: "), "{message}");
        assert!(message.contains(said), "{id}: {message}");
    }
    // The refused calls never reached the tool: the next one is served as before.
    let ok = call(
        10,
        r#"{"region":"ap-south1","query":"q"}"#,
        &[("Mcp-Param-Region", "ap-south1")],
    )?;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(text_of(&answer(&ok)?), "ap-south1|q");
    Ok(())
}

#[test]
fn the_python_sdk_sends_mcp_param_headers_the_relay_accepts() -> Result<()> {
    let peers = Peers::require();
    let relay = Relay::start(&fixture_tool("fx", &["--modern"], ""))?;
    let mut cmd = Command::new(&peers.python);
    cmd.arg(peers.script("py_client.py"))
        .args(["--scenario", "params", "--url"])
        .arg(http_url(&relay, "fx"))
        .arg("--");
    let summary = run_driver(&mut cmd, DRIVER_LIMIT)?;
    assert_eq!(summary["mode"], "auto", "{summary}");
    assert_checks(
        &summary,
        &[
            "connect",
            "list_tools",
            "ascii_param",
            "encoded_param",
            "absent_param",
        ],
    );
    // The relay knew the annotation all along (a call without the header is refused), so the
    // SDK's calls above passed because it sent Mcp-Param-Region, matching.
    let r = tool_call(
        relay.addr,
        "fx",
        "1",
        "region",
        r#"{"region":"us-west1","query":"q"}"#,
    )?;
    assert_eq!(r.status, 400, "{r:?}");
    Ok(())
}

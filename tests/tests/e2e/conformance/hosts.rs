//! Real bridges and hosts reach a relay-hosted tool over Streamable HTTP with no shim of ours:
//! mcp-remote 0.15.1 (a stdio → HTTP bridge) with the Python SDK client in front of it, the MCP
//! Inspector CLI 2.12.0, and the connection checks of Claude Code 2.1.328 and Gemini CLI 0.61.0
//! (no API key: they connect and list, never call a model). Each runs with a scratch HOME,
//! bounded in time; an unknown tool's URL is the control that must fail.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use mcp_bridge_tests::{
    assert_checks, demo_tool, run_bounded, run_driver, Finished, Peers, Relay, TempDir,
};
use serde_json::Value;

use super::http_url;

/// One command of a host or bridge (they answer in about a second here).
const COMMAND_LIMIT: Duration = Duration::from_secs(60);
const DRIVER_LIMIT: Duration = Duration::from_secs(90);

fn node_bin(peers: &Peers, name: &str) -> PathBuf {
    let path = peers.node_modules.join(".bin").join(name);
    assert!(
        path.exists(),
        "peer {} is missing: run `{}` first",
        path.display(),
        mcp_bridge_tests::SETUP_COMMAND
    );
    path
}

/// Runs a host's command in `cwd` with `home` as its HOME, and wants it to succeed.
fn host(program: &Path, args: &[&str], home: &Path, cwd: &Path) -> Result<Finished> {
    let run = run_bounded(
        Command::new(program)
            .args(args)
            .current_dir(cwd)
            .env("HOME", home)
            // No update checks or telemetry: there is no network but loopback.
            .env("DISABLE_AUTOUPDATER", "1")
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
        COMMAND_LIMIT,
    )?;
    ensure!(run.status.success(), "{program:?} {args:?} failed: {run:?}");
    Ok(run)
}

/// The line of a host's server list that names `server`.
fn line_of<'a>(listing: &'a str, server: &str) -> Result<&'a str> {
    listing
        .lines()
        .find(|l| l.contains(&format!("{server}: ")))
        .with_context(|| format!("`{server}` not listed:\n{listing}"))
}

#[test]
fn mcp_remote_bridges_the_python_sdk_to_the_relay() -> Result<()> {
    let peers = Peers::require();
    let relay = Relay::start(&demo_tool("demo", ""))?;
    let home = TempDir::new(); // mcp-remote keeps its state in ~/.mcp-auth
    let mut cmd = Command::new(&peers.python);
    cmd.arg(peers.script("py_client.py"))
        .args(["--scenario", "demo", "--mode", "legacy", "--timeout", "60"])
        .arg("--")
        .arg(node_bin(&peers, "mcp-remote"))
        .arg(http_url(&relay, "demo"))
        .args(["--allow-http", "--transport", "http-only"])
        .env("HOME", home.path());
    let summary = run_driver(&mut cmd, DRIVER_LIMIT)?;
    assert_checks(
        &summary,
        &[
            "connect",
            "list_tools",
            "echo",
            "add",
            "slow_progress",
            "sample",
            "unknown_tool",
            "cancel",
            "after_cancel",
            "ping",
        ],
    );
    assert!(home.path().join(".mcp-auth").exists(), "scratch HOME used");
    Ok(())
}

#[test]
fn the_inspector_cli_lists_and_calls_tools() -> Result<()> {
    let peers = Peers::require();
    let relay = Relay::start(&demo_tool("demo", ""))?;
    let home = TempDir::new(); // the Inspector keeps a catalog in ~/.mcp-inspector
    let inspector = node_bin(&peers, "mcp-inspector");
    let url = http_url(&relay, "demo");
    let cli = |extra: &[&str]| -> Result<Value> {
        let mut args = vec!["--cli", url.as_str(), "--transport", "http"];
        args.extend_from_slice(extra);
        let run = host(&inspector, &args, home.path(), home.path())?;
        serde_json::from_str(&run.stdout).with_context(|| format!("not JSON: {run:?}"))
    };
    let list = cli(&["--method", "tools/list"])?;
    let names: Vec<&str> = list["tools"]
        .as_array()
        .context("tools")?
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    for want in ["echo", "add", "slow"] {
        assert!(names.contains(&want), "{want} missing from {list}");
    }
    let add = cli(&[
        "--method",
        "tools/call",
        "--tool-name",
        "add",
        "--tool-arg",
        "a=2",
        "--tool-arg",
        "b=3",
    ])?;
    assert_eq!(add["content"][0]["text"], "5", "{add}");
    assert_eq!(add["isError"], false, "{add}");
    let echo = cli(&[
        "--method",
        "tools/call",
        "--tool-name",
        "echo",
        "--tool-arg",
        "text=through the relay",
    ])?;
    assert_eq!(echo["content"][0]["text"], "through the relay", "{echo}");
    Ok(())
}

#[test]
fn claude_code_connects_over_http() -> Result<()> {
    let peers = Peers::require();
    let relay = Relay::start(&demo_tool("demo", ""))?;
    let home = TempDir::new();
    let project = home.path().join("project");
    std::fs::create_dir_all(&project)?;
    let claude = node_bin(&peers, "claude");
    for (name, tool) in [("relay", "demo"), ("control", "no-such-tool")] {
        let url = http_url(&relay, tool);
        host(
            &claude,
            &["mcp", "add", "-s", "local", "-t", "http", name, &url],
            home.path(),
            &project,
        )?;
    }
    let list = host(&claude, &["mcp", "list"], home.path(), &project)?;
    println!("claude mcp list:\n{}", list.stdout);
    assert!(
        line_of(&list.stdout, "relay")?.contains("✔ Connected"),
        "{list:?}"
    );
    assert!(
        line_of(&list.stdout, "control")?.contains("✘ Failed to connect"),
        "{list:?}"
    );
    Ok(())
}

#[test]
fn gemini_cli_connects_over_http() -> Result<()> {
    let peers = Peers::require();
    let relay = Relay::start(&demo_tool("demo", ""))?;
    let home = TempDir::new();
    let project = home.path().join("project");
    std::fs::create_dir_all(project.join(".gemini"))?;
    std::fs::create_dir_all(home.path().join(".gemini"))?;
    let settings = serde_json::json!({"mcpServers": {
        "relay": {"httpUrl": http_url(&relay, "demo")},
        "control": {"httpUrl": http_url(&relay, "no-such-tool")},
    }});
    std::fs::write(project.join(".gemini/settings.json"), settings.to_string())?;
    // Gemini CLI starts no MCP server in a folder it does not trust.
    let trusted = serde_json::json!({ project.display().to_string(): "TRUST_FOLDER" });
    std::fs::write(
        home.path().join(".gemini/trustedFolders.json"),
        trusted.to_string(),
    )?;
    let list = host(
        &node_bin(&peers, "gemini"),
        &["mcp", "list"],
        home.path(),
        &project,
    )?;
    let text = format!("{}{}", list.stdout, list.stderr);
    println!("gemini mcp list:\n{text}");
    assert!(
        line_of(&text, "relay")?.contains("Connected") && line_of(&text, "relay")?.starts_with('✓'),
        "{list:?}"
    );
    assert!(
        line_of(&text, "control")?.contains("Disconnected"),
        "{list:?}"
    );
    Ok(())
}

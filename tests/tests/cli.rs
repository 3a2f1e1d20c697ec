//! The command lines of both programs: exit statuses (README's "Exit status and logging"
//! tables), `-v` levels, `check-config` over several files, and the warning for a tool whose
//! command is not installed, at check time and at start-up, going away once it is installed.

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use mcp_bridge_tests::{bin, demo_tool, wait_child, Ide, Log, Relay, TempDir};
use serde_json::json;

const T: Duration = Duration::from_secs(15);

/// Runs a program to its end with a deadline; stdin is empty.
fn run(cmd: &mut Command) -> Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Small outputs: the pipes do not fill before the process ends.
    wait_child(&mut child, T)?;
    Ok(child.wait_with_output()?)
}

fn server(args: &[&str]) -> Result<Output> {
    run(Command::new(bin("bridge-server")).args(args))
}

fn client(args: &[&str]) -> Result<Output> {
    run(Command::new(bin("bridge-client"))
        .args(args)
        .env_remove("MCP_BRIDGE_TOKEN"))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts the exit status, showing stderr when it differs.
fn exits(out: &Output, code: i32, what: &str) {
    assert_eq!(out.status.code(), Some(code), "{what}: {}", stderr(out));
}

#[test]
fn relay_exit_statuses() -> Result<()> {
    let dir = TempDir::new();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, demo_tool("demo", ""))?;
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, format!("lisen = 1\n{}", demo_tool("demo", "")))?;
    let (good, bad) = (
        good.to_str().context("path")?,
        bad.to_str().context("path")?,
    );

    exits(&server(&["--bogus"])?, 2, "unknown option");
    exits(&server(&["check-config"])?, 2, "no file");
    exits(
        &server(&["--listen", "127.0.0.1:0", "check-config", good])?,
        2,
        "--listen with a subcommand",
    );
    let out = server(&["--config", good, "hash-token"])?;
    exits(&out, 2, "--config with hash-token");
    assert!(
        stderr(&out).contains("--config is for running the relay"),
        "{}",
        stderr(&out)
    );
    exits(&server(&["check-config", good])?, 0, "valid");
    exits(&server(&["check-config", bad])?, 64, "invalid");
    exits(
        &server(&["check-config", "/no/such/relay.toml"])?,
        64,
        "missing file",
    );
    exits(
        &server(&["--config", bad])?,
        64,
        "start with an invalid config",
    );
    // Another start-up error: the address is taken.
    let taken = TcpListener::bind("127.0.0.1:0")?;
    let addr = taken.local_addr()?.to_string();
    let out = server(&["--config", good, "--listen", &addr])?;
    exits(&out, 1, "address taken");
    assert!(
        stderr(&out).contains(&format!("cannot listen on {addr}")),
        "{}",
        stderr(&out)
    );
    // Tokens.
    let token = dir.path().join("t.token");
    let out = server(&["new-token", token.to_str().context("path")?])?;
    exits(&out, 0, "new-token");
    let first = std::fs::read_to_string(&token)?;
    let out = server(&["new-token", token.to_str().context("path")?])?;
    exits(&out, 1, "new-token over a file");
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "no hash printed on failure");
    assert_eq!(
        std::fs::read_to_string(&token)?,
        first,
        "the file is untouched"
    );
    exits(&server(&["hash-token"])?, 1, "hash-token without a token");
    // The usage line of check-config names one kind of file argument.
    let help = String::from_utf8(server(&["check-config", "--help"])?.stdout)?;
    assert!(
        help.contains("Usage: bridge-server check-config [OPTIONS] [FILE]..."),
        "{help}"
    );
    assert!(!help.contains("<FILE> <FILE>"), "{help}");
    Ok(())
}

#[test]
fn check_config_checks_every_file_it_is_given() -> Result<()> {
    let dir = TempDir::new();
    let a = dir.path().join("a.toml");
    std::fs::write(
        &a,
        format!("[limits]\nkill_grace = 1\n{}", demo_tool("demo", "")),
    )?;
    let b = dir.path().join("b.toml");
    std::fs::write(&b, demo_tool("demo", ""))?;
    let (a, b) = (a.to_str().context("path")?, b.to_str().context("path")?);
    for args in [
        vec!["check-config", "-c", a, b],
        vec!["check-config", a, "--config", b],
        vec!["--config", a, "check-config", b],
        vec!["check-config", a, b],
    ] {
        let out = server(&args)?;
        exits(&out, 64, &format!("{args:?}"));
        let text = stderr(&out);
        assert!(
            text.contains(&format!("{a}:2:1: `limits.kill_grace`"))
                && text.contains(&format!("{b}: ok (1 tool(s): demo)")),
            "{args:?}: {text}"
        );
    }
    let out = server(&["check-config", b, "-c", b])?;
    exits(&out, 0, "two valid files");
    Ok(())
}

#[test]
fn client_exit_statuses() -> Result<()> {
    let relay = Relay::start(&demo_tool("demo", ""))?;
    exits(&client(&[])?, 2, "no URL");
    exits(
        &client(&["--bogus", &relay.url("demo")])?,
        2,
        "unknown option",
    );
    // http:// means Streamable HTTP now; plain http to another machine needs a flag.
    let out = client(&["http://mcp.example.com/mcp"])?;
    exits(&out, 2, "http:// URL to another machine");
    assert!(
        stderr(&out).contains("give https://mcp.example.com/mcp"),
        "{}",
        stderr(&out)
    );
    exits(
        &client(&["-H", "nocolon", &relay.url("demo")])?,
        2,
        "bad header",
    );
    let out = client(&["--token-file", "/no/such/token", &relay.url("demo")])?;
    exits(&out, 2, "unreadable token file");
    exits(
        &client(&["login", "relay.example.com"])?,
        2,
        "login URL without a scheme",
    );
    exits(
        &client(&["logout", "ftp://relay.example.com"])?,
        2,
        "logout, wrong scheme",
    );
    // The first connection refused: 1, with the relay's reason.
    let out = client(&["--no-keyring", &relay.url("nope")])?;
    exits(&out, 1, "unknown tool");
    assert!(stderr(&out).contains("HTTP 404"), "{}", stderr(&out));
    // The IDE closes stdin: 0.
    let out = client(&["--no-keyring", &relay.url("demo")])?;
    exits(&out, 0, "stdin closed");
    Ok(())
}

/// The built-in relay, started directly with `args` and the default log level.
fn builtin_relay(args: &[&str]) -> Result<(std::process::Child, Log, String)> {
    let mut child = Command::new(bin("bridge-server"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let log = Log::default();
    log.drain_from(child.stderr.take().context("stderr")?, "relay");
    let marker = "connect with: bridge-client ";
    log.wait_for(marker, T)?;
    let url = log
        .text()
        .lines()
        .find_map(|l| l.split(marker).nth(1).map(str::to_owned))
        .context("url")?;
    Ok((child, log, url))
}

/// One IDE session through `bridge-client ARGS URL`; its stderr.
fn session(url: &str, args: &[&str]) -> Result<String> {
    let mut ide = Ide::spawn(
        Command::new(bin("bridge-client"))
            .args(args)
            .arg(url)
            .env_remove("RUST_LOG")
            .env_remove("MCP_BRIDGE_TOKEN"),
    )?;
    ide.initialize()?;
    ide.request(
        json!(1),
        "tools/call",
        json!({"name": "echo", "arguments": {"text": "x"}}),
    )?;
    ide.close_stdin();
    assert!(ide.wait(T)?.success());
    Ok(ide.stderr.text())
}

#[test]
fn dash_v_means_debug_on_both_programs() -> Result<()> {
    for (flag, relay_has, relay_lacks, client_has, client_lacks) in [
        (None, "INFO", "DEBUG", None, ["INFO", "DEBUG"]),
        (
            Some("-v"),
            "DEBUG",
            "TRACE",
            Some("DEBUG"),
            ["TRACE", "TRACE"],
        ),
    ] {
        let args: Vec<&str> = flag.into_iter().collect();
        let (mut relay, log, url) = builtin_relay(&args)?;
        let client_log = session(&url, &args)?;
        mcp_bridge_tests::signal(relay.id(), "TERM");
        wait_child(&mut relay, T)?;
        let relay_log = log.text();
        assert!(relay_log.contains(relay_has), "relay {flag:?}: {relay_log}");
        assert!(
            !relay_log.contains(relay_lacks),
            "relay {flag:?}: {relay_log}"
        );
        if let Some(level) = client_has {
            assert!(client_log.contains(level), "client {flag:?}: {client_log}");
        }
        for level in client_lacks {
            assert!(!client_log.contains(level), "client {flag:?}: {client_log}");
        }
    }
    Ok(())
}

#[test]
fn a_tool_not_installed_warns_at_check_and_start_and_works_once_installed() -> Result<()> {
    let dir = TempDir::new();
    let tools = dir.path().join("tools");
    std::fs::create_dir(&tools)?;
    // The PATH the relay (and so its tools) gets: a folder of tools, then the system's.
    let path = format!("{}:/usr/bin:/bin", tools.display());
    let config = concat!(
        "listen = \"127.0.0.1:0\"\n[limits]\nkill_grace_ms = 500\n\n",
        "[[tool]]\nname = \"time\"\ncommand = \"mcp-bridge-test-time\"\n"
    );
    let file = dir.path().join("relay.toml");
    std::fs::write(&file, config)?;
    let warning = format!(
        "relay.toml:7:11: warning: `tool[0].command`: tool `time`: `mcp-bridge-test-time` was \
         not found in the relay's PATH ({path})"
    );
    let out = run(Command::new(bin("bridge-server"))
        .arg("check-config")
        .arg(&file)
        .env("PATH", &path))?;
    exits(&out, 0, "a warning is not an error");
    let text = stderr(&out);
    assert!(text.contains(&warning), "{text}");
    assert!(
        text.contains("ok (1 tool(s): time); 1 warning(s)"),
        "{text}"
    );

    let relay = Relay::start_full(config, &[("PATH", &path)], &[])?;
    let log = relay.log.text();
    assert!(
        log.contains("WARN")
            && log.contains("`mcp-bridge-test-time` was not found in the relay's PATH"),
        "{log}"
    );
    let mut ide = Ide::connect(&relay.url("time"), &["--no-keyring"])?;
    assert_eq!(ide.wait(T)?.code(), Some(1));
    assert!(
        ide.stderr.text().contains("HTTP 502"),
        "{}",
        ide.stderr.text()
    );

    // Installed while the relay runs: the next session starts it.
    let program = tools.join("mcp-bridge-test-time");
    let mut f = std::fs::File::create(&program)?;
    writeln!(
        f,
        "#!/bin/sh\nexec '{}' demo-tool",
        bin("bridge-server").display()
    )?;
    drop(f);
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755))?;
    let mut ide = Ide::connect(&relay.url("time"), &["--no-keyring"])?;
    ide.initialize()?;
    ide.close_stdin();
    assert!(ide.wait(T)?.success(), "{}", ide.stderr.text());
    // And check-config is quiet about it now.
    let out = run(Command::new(bin("bridge-server"))
        .arg("check-config")
        .arg(&file)
        .env("PATH", &path))?;
    assert_eq!(
        stderr(&out).trim(),
        format!("{}: ok (1 tool(s): time)", file.display())
    );
    Ok(())
}

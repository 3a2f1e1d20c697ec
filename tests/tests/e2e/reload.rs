//! Config that changes without a restart: the relay reads its file again when it changes (and
//! on SIGHUP). A tool added is reachable; tokens added and removed under load lose no call; a
//! removed token's live session is ended with the reason; a broken file is refused with
//! `check-config`'s words and the old config stays; a renewed certificate is served to new
//! connections; a changed `listen` is named as needing a restart.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use mcp_bridge_tests::pki::Pki;
use mcp_bridge_tests::{bin, demo_tool, relay_config, signal, token_auth, wait_until, Ide, Relay};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(15);

fn config(tokens: &[(&str, &str, &[&str])], tools: &[&str]) -> Result<String> {
    let auth = token_auth(tokens)?;
    let tools: Vec<String> = tools.iter().map(|t| demo_tool(t, "")).collect();
    Ok(relay_config("", &format!("{auth}\n{}", tools.join("\n"))))
}

fn reloads(relay: &Relay, result: &str) -> f64 {
    relay
        .sample(&format!(
            "mcp_bridge_config_reloads_total{{result=\"{result}\"}}"
        ))
        .unwrap_or(0.0)
}

/// The tools with an `mcp_bridge_tool_max_sessions` series, sorted.
fn tool_limits(relay: &Relay) -> Result<Vec<String>> {
    let mut tools: Vec<String> = relay
        .metrics()?
        .keys()
        .filter_map(|k| k.strip_prefix("mcp_bridge_tool_max_sessions{tool=\""))
        .filter_map(|k| k.strip_suffix("\"}"))
        .map(str::to_owned)
        .collect();
    tools.sort();
    Ok(tools)
}

/// Rewrites the relay's config and waits until it has been read (`result` counted once more).
fn rewrite(relay: &Relay, text: &str, result: &str) -> Result<()> {
    let before = reloads(relay, result);
    std::fs::write(relay.config_path(), text)?;
    wait_until(T, || reloads(relay, result) > before)
        .with_context(|| format!("no `{result}` reload within {T:?}:\n{}", relay.log.text()))
}

fn client(relay: &Relay, tool: &str, token: &str) -> Result<Ide> {
    let mut cmd = Command::new(bin("bridge-client"));
    cmd.arg(relay.url(tool))
        .arg("--no-keyring")
        .env("MCP_BRIDGE_TOKEN", token);
    let mut ide = Ide::spawn(&mut cmd)?;
    let r = ide.initialize()?;
    ensure!(
        r.get("result").is_some(),
        "initialize through the relay: {r}"
    );
    Ok(ide)
}

fn echo(ide: &mut Ide, id: u64, text: &str) -> Result<Value> {
    ide.request(
        json!(id),
        "tools/call",
        json!({"name": "echo", "arguments": {"text": text}}),
    )
}

fn assert_echo(answer: &Value, text: &str) {
    assert_eq!(
        answer
            .pointer("/result/content/0/text")
            .and_then(Value::as_str),
        Some(text),
        "{answer}"
    );
}

#[test]
fn a_tool_and_tokens_change_under_load_and_no_call_is_lost() -> Result<()> {
    let alice = ("alice", "alice-token-1", &["demo"][..]);
    let relay = Relay::start_config(&config(&[alice], &["demo"])?, &[])?;
    let mut ide = client(&relay, "demo", "alice-token-1")?;

    // 1,000 calls over the live session while the config changes five times: carol's token
    // comes and goes, and a tool is added, then removed.
    let variants = [
        config(&[alice, ("carol", "carol-token", &["demo"])], &["demo"])?,
        config(&[alice], &["demo", "extra"])?,
        config(
            &[alice, ("carol", "carol-token", &["*"])],
            &["demo", "extra"],
        )?,
        config(&[alice], &["demo"])?,
        config(&[alice, ("dave", "dave-token", &["demo"])], &["demo"])?,
    ];
    // Calls go on in a thread (at least 1,000, and until the last reload is in force) while
    // each variant is written and read.
    let done = AtomicBool::new(false);
    let calls = std::thread::scope(|s| -> Result<u64> {
        let caller = s.spawn(|| -> Result<u64> {
            let mut k = 0u64;
            while k < 1_000 || !done.load(Ordering::Relaxed) {
                let text = format!("call-{k}");
                let answer = echo(&mut ide, 10 + k, &text)?;
                ensure!(
                    answer
                        .pointer("/result/content/0/text")
                        .and_then(Value::as_str)
                        == Some(text.as_str()),
                    "call {k}: {answer}"
                );
                k += 1;
            }
            Ok(k)
        });
        let written = variants.iter().try_for_each(|v| rewrite(&relay, v, "ok"));
        done.store(true, Ordering::Relaxed);
        let calls = caller
            .join()
            .map_err(|_| anyhow::anyhow!("the caller panicked"))??;
        written?;
        Ok(calls)
    })?;
    assert!(reloads(&relay, "ok") >= 5.0);
    // The per-tool limit follows the tools in force: a removed tool's series is gone.
    assert_eq!(tool_limits(&relay)?, ["demo"]);

    // A tool added by a reload is reachable at once, by a token added with it.
    rewrite(
        &relay,
        &config(
            &[alice, ("carol", "carol-token", &["extra"])],
            &["demo", "extra"],
        )?,
        "ok",
    )?;
    assert_eq!(tool_limits(&relay)?, ["demo", "extra"]);
    let mut carol = client(&relay, "extra", "carol-token")?;
    assert_echo(&echo(&mut carol, 1, "new tool")?, "new tool");
    // The session that lived through all of it still works, on its first tool process.
    assert_echo(&echo(&mut ide, 5_000, "still here")?, "still here");
    let log = relay.log.text();
    assert!(log.contains("config reloaded"), "{log}");
    assert!(!log.contains("carol-token"), "a token in the log:\n{log}");
    println!(
        "{calls} calls over one session through {} reloads: every one answered",
        reloads(&relay, "ok")
    );
    ide.close_stdin();
    carol.close_stdin();
    ide.wait(T)?;
    carol.wait(T)?;
    Ok(())
}

#[test]
fn a_removed_token_ends_its_session_and_a_broken_file_changes_nothing() -> Result<()> {
    let alice = ("alice", "alice-token-1", &["demo"][..]);
    let bob = ("bob", "bob-token-2", &["demo"][..]);
    let relay = Relay::start_config(&config(&[alice, bob], &["demo"])?, &[])?;
    let mut a = client(&relay, "demo", "alice-token-1")?;
    let mut b = client(&relay, "demo", "bob-token-2")?;
    assert_echo(&echo(&mut b, 1, "bob here")?, "bob here");

    // A broken file: refused with check-config's words; the old config stays in force.
    let broken = config(&[alice, bob], &["demo"])?.replace("command", "comand");
    rewrite(&relay, &broken, "error")?;
    let log = relay.log.text();
    assert!(
        log.contains("config reload refused") && log.contains("did you mean `command`"),
        "{log}"
    );
    assert_echo(&echo(&mut b, 2, "still")?, "still");
    let mut b2 = client(&relay, "demo", "bob-token-2")?;
    assert_echo(&echo(&mut b2, 1, "new session")?, "new session");
    b2.close_stdin();
    b2.wait(T)?;

    // Bob's token removed: his live session ends now, with the reason; alice's goes on.
    let tools_before = relay.children().len();
    rewrite(&relay, &config(&[alice], &["demo"])?, "ok")?;
    let answer = echo(&mut b, 3, "gone?")?;
    let error = answer["error"]["message"].as_str().unwrap_or_default();
    ensure!(
        answer.get("error").is_some(),
        "bob's call after the revocation: {answer}"
    );
    // bridge-client says why the session ended, and its next attempt is refused (401).
    let stderr = b.stderr.text();
    assert!(
        stderr.contains("the relay's config no longer lets these credentials use this tool"),
        "{stderr}"
    );
    assert!(error.contains("401"), "bob's call: {answer}");
    assert_echo(&echo(&mut a, 2, "alice goes on")?, "alice goes on");
    wait_until(T, || relay.children().len() < tools_before)
        .context("bob's tool process is ended")?;
    let log = relay.log.text();
    assert!(
        log.contains("event=\"revoked\"") && log.contains("user=bob"),
        "{log}"
    );
    // And he cannot come back.
    let mut again = Command::new(bin("bridge-client"));
    again
        .arg(relay.url("demo"))
        .arg("--no-keyring")
        .env("MCP_BRIDGE_TOKEN", "bob-token-2");
    let mut again = Ide::spawn(&mut again)?;
    let status = again.wait(T)?;
    assert!(!status.success(), "bob's token is refused after the reload");
    a.close_stdin();
    a.wait(T)?;
    b.close_stdin();
    let _ = b.wait(T);
    Ok(())
}

#[test]
fn a_renewed_certificate_is_served_to_new_connections() -> Result<()> {
    let old = Pki::new()?;
    let new = Pki::new()?;
    // The relay's certificate files live in their own folder, renewed in place.
    let dir = mcp_bridge_tests::TempDir::new();
    let cert = dir.path().join("relay.pem");
    let key = dir.path().join("relay.key");
    std::fs::copy(old.path("server.pem"), &cert)?;
    std::fs::copy(old.path("server.key"), &key)?;
    let tls = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let text = relay_config("", &format!("{tls}\n{}", demo_tool("demo", "")));
    let relay = Relay::start_config(&text, &[])?;
    let wss = format!("wss://127.0.0.1:{}/mcp/demo", relay.addr.port());
    let connect = |ca: &str| -> Result<bool> {
        let mut cmd = Command::new(bin("bridge-client"));
        cmd.arg(&wss).args(["--no-keyring", "--ca-file", ca]);
        let mut ide = Ide::spawn(&mut cmd)?;
        // bridge-client answers the IDE either way: with the server's result, or an error.
        let ok = ide.initialize().is_ok_and(|r| r.get("result").is_some());
        ide.close_stdin();
        let _ = ide.wait(T);
        Ok(ok)
    };
    assert!(connect(&old.path("ca.pem"))?, "the first certificate");
    let mut held = Command::new(bin("bridge-client"));
    held.arg(&wss)
        .args(["--no-keyring", "--ca-file", &old.path("ca.pem")]);
    let mut held = Ide::spawn(&mut held)?;
    held.initialize()?;

    // Renewed: key first, then the certificate (as certbot's deploy hooks do), no SIGHUP.
    let start = std::time::Instant::now();
    std::fs::copy(new.path("server.key"), &key)?;
    std::fs::copy(new.path("server.pem"), &cert)?;
    wait_until(T, || {
        relay.log.text().contains("config reloaded")
            && connect(&new.path("ca.pem")).unwrap_or(false)
    })
    .with_context(|| {
        format!(
            "the renewed certificate is not served:\n{}",
            relay.log.text()
        )
    })?;
    println!(
        "renewed certificate served {:?} after the files changed",
        start.elapsed()
    );
    assert!(
        !connect(&old.path("ca.pem"))?,
        "the old certificate is gone"
    );
    // The connection made before the renewal goes on.
    assert_echo(&echo(&mut held, 2, "held")?, "held");
    held.close_stdin();
    held.wait(T)?;
    Ok(())
}

#[test]
fn sighup_reloads_and_a_listen_change_is_named_as_needing_a_restart() -> Result<()> {
    let alice = ("alice", "alice-token-1", &["demo"][..]);
    let relay = Relay::start_config(&config(&[alice], &["demo"])?, &[])?;
    let before = reloads(&relay, "ok");
    signal(relay.pid(), "HUP");
    wait_until(T, || reloads(&relay, "ok") > before).context("SIGHUP reloads")?;
    let moved = config(&[alice], &["demo"])?.replace("127.0.0.1:0", "127.0.0.1:1");
    rewrite(&relay, &moved, "ok")?;
    let log = relay.log.text();
    assert!(
        log.contains("changes listen too: that takes a restart"),
        "{log}"
    );
    // Still serving where it started.
    let mut ide = client(&relay, "demo", "alice-token-1")?;
    assert_echo(&echo(&mut ide, 1, "same place")?, "same place");
    ide.close_stdin();
    ide.wait(T)?;
    Ok(())
}

#[test]
fn with_on_revoke_next_call_a_revoked_session_ends_after_its_next_answer() -> Result<()> {
    let next_call = |c: String| {
        c.replace(
            "mode = \"tokens\"\n",
            "mode = \"tokens\"\non_revoke = \"next_call\"\n",
        )
    };
    let alice = ("alice", "alice-token-1", &["demo"][..]);
    let bob = ("bob", "bob-token-2", &["demo"][..]);
    let relay = Relay::start_config(&next_call(config(&[alice, bob], &["demo"])?), &[])?;
    let mut b = client(&relay, "demo", "bob-token-2")?;
    assert_echo(&echo(&mut b, 1, "before")?, "before");
    rewrite(&relay, &next_call(config(&[alice], &["demo"])?), "ok")?;
    let log = relay.log.text();
    assert!(
        log.contains("event=\"revoked\"") && log.contains("when=\"after_next_call\""),
        "{log}"
    );
    // The next call is still answered by the tool; then the session ends.
    assert_echo(&echo(&mut b, 2, "last one")?, "last one");
    let after = echo(&mut b, 3, "too late")?;
    assert!(after.get("error").is_some(), "{after}");
    wait_until(T, || relay.children().is_empty()).context("bob's tool ended")?;
    b.close_stdin();
    let _ = b.wait(T);
    Ok(())
}

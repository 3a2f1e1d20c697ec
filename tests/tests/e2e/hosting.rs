//! Hosting tools for many users (issue 13): per-user values and secrets, per-user folders with
//! the real server-filesystem, the bubblewrap sandbox, and resource limits that contain a
//! runaway tool while other users' sessions keep answering. Real relay, real bridge-client,
//! real child processes, real cgroups and bwrap on this machine.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use mcp_bridge_tests::{
    bin, demo_tool, fixture, relay_config, token_auth, tool_table, Ide, Peers, Relay, TempDir,
};

const T: Duration = Duration::from_secs(20);

const TOKENS: &[(&str, &str)] = &[
    ("alice", "alice-token-5d1e"),
    ("bob", "bob-token-0c77"),
    ("carol", "carol-token-a9f2"),
];

fn token(user: &str) -> &'static str {
    TOKENS
        .iter()
        .find(|(u, _)| *u == user)
        .map(|(_, t)| *t)
        .unwrap_or_default()
}

/// A relay with a token for each of alice, bob and carol (every tool granted) and `tools`.
fn relay(limits: &str, tools: &str) -> Result<Relay> {
    let all: &[&str] = &["*"];
    let tokens: Vec<(&str, &str, &[&str])> = TOKENS.iter().map(|(u, t)| (*u, *t, all)).collect();
    let auth = token_auth(&tokens)?;
    Relay::start_config(&relay_config(limits, &format!("{auth}\n{tools}")), &[])
}

/// bridge-client for `user`, initialized.
fn session(relay: &Relay, tool: &str, user: &str) -> Result<Ide> {
    let mut cmd = Command::new(bin("bridge-client"));
    cmd.arg(relay.url(tool))
        .arg("--no-keyring")
        .env("MCP_BRIDGE_TOKEN", token(user));
    let mut ide = Ide::spawn(&mut cmd)?;
    ide.initialize()?;
    Ok(ide)
}

fn call(ide: &mut Ide, id: u64, name: &str, args: Value) -> Result<Value> {
    ide.request(
        json!(id),
        "tools/call",
        json!({"name": name, "arguments": args}),
    )
}

fn text_of(r: &Value) -> String {
    r.pointer("/result/content/0/text")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// The fixture tool run by Debian's python3 (inside a sandbox only the system is visible).
fn fixture_table(name: &str, extra: &str) -> String {
    let script = fixture("mcp_tool.py").display().to_string();
    tool_table(name, Path::new("/usr/bin/python3"), &[&script], extra)
}

fn fixtures_dir() -> String {
    fixture("mcp_tool.py")
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

#[test]
fn per_user_values_secrets_and_folders_reach_only_their_user() -> Result<()> {
    let dir = TempDir::new();
    let users = dir.path().join("users");
    let secrets = dir.path().join("secrets");
    for (user, secret) in [("alice", "s3cret-alice-41"), ("bob", "s3cret-bob-97")] {
        std::fs::create_dir_all(secrets.join(user))?;
        std::fs::write(secrets.join(user).join("token"), format!("{secret}\n"))?;
    }
    let extra = format!(
        "cwd = \"{}/{{user}}\"\ncreate_cwd = true\nenv = {{ WHO = \"{{user}}@{{tool}}\" }}\n\
         env_files = {{ SECRET_TOKEN = \"{}/{{user}}/token\" }}\n",
        users.display(),
        secrets.display()
    );
    let relay = relay("", &fixture_table("fx", &extra))?;
    for (user, secret) in [("alice", "s3cret-alice-41"), ("bob", "s3cret-bob-97")] {
        let mut ide = session(&relay, "fx", user)?;
        let who = text_of(&call(&mut ide, 1, "env", json!({"name": "WHO"}))?);
        assert_eq!(who, format!("{user}@fx"));
        let got = text_of(&call(&mut ide, 2, "env", json!({"name": "SECRET_TOKEN"}))?);
        assert_eq!(
            got, secret,
            "{user} gets their own secret, without the newline"
        );
        let cwd = text_of(&call(&mut ide, 3, "cwd", json!({}))?);
        assert_eq!(Path::new(&cwd), users.join(user));
        let mode = std::fs::metadata(users.join(user))?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{user}'s folder is theirs alone");
        ide.close_stdin();
        ide.wait(T)?;
    }
    // carol has a token but no secret file: refused before any tool starts, with the reason.
    let mut cmd = Command::new(bin("bridge-client"));
    cmd.arg(relay.url("fx"))
        .arg("--no-keyring")
        .env("MCP_BRIDGE_TOKEN", token("carol"));
    let mut carol = Ide::spawn(&mut cmd)?;
    carol.send(&json!({"jsonrpc": "2.0", "id": 9, "method": "initialize", "params": {}}))?;
    let refusal = carol.recv(T)?;
    let message = refusal
        .pointer("/error/message")
        .and_then(Value::as_str)
        .unwrap_or_default();
    assert!(
        message.contains("SECRET_TOKEN") && message.contains("carol"),
        "the refusal names what is missing: {refusal}"
    );
    assert!(
        !users.join("carol").exists(),
        "nothing was set up for carol"
    );
    let log = relay.log.text();
    for secret in ["s3cret-alice-41", "s3cret-bob-97"] {
        assert!(!log.contains(secret), "a secret reached the relay's log");
    }
    Ok(())
}

/// server-filesystem for each user, limited to their own folder by its arguments.
#[test]
fn server_filesystem_keeps_alice_out_of_bobs_folder() -> Result<()> {
    let peers = Peers::require();
    let server = filesystem_server(&peers)?;
    let dir = TempDir::new();
    let users = dir.path().join("users");
    let mine = format!("{}/{{user}}", users.display());
    let extra = format!("cwd = {mine:?}\ncreate_cwd = true\n");
    let node = Path::new("/usr/bin/node");
    let relay = relay("", &tool_table("files", node, &[&server, &mine], &extra))?;
    check_isolation(&relay, &users, false)
}

/// The same inside the sandbox, where the tool is even allowed the whole users folder: only
/// its own user's folder is there.
#[test]
fn in_the_sandbox_other_users_folders_do_not_exist() -> Result<()> {
    let peers = Peers::require();
    let server = filesystem_server(&peers)?;
    let dir = TempDir::new();
    let users = dir.path().join("users");
    std::fs::create_dir_all(&users)?;
    let all = users.display().to_string();
    let extra = format!(
        "cwd = \"{all}/{{user}}\"\ncreate_cwd = true\n[tool.sandbox]\nread_only = [{:?}]\n",
        peers.node_modules.display().to_string()
    );
    let node = Path::new("/usr/bin/node");
    let relay = relay("", &tool_table("files", node, &[&server, &all], &extra))?;
    check_isolation(&relay, &users, true)
}

fn filesystem_server(peers: &Peers) -> Result<String> {
    let js = peers
        .node_modules
        .join("@modelcontextprotocol/server-filesystem/dist/index.js");
    anyhow::ensure!(
        js.exists(),
        "server-filesystem is missing: run scripts/install-peers.sh"
    );
    Ok(js.display().to_string())
}

fn check_isolation(relay: &Relay, users: &Path, sandboxed: bool) -> Result<()> {
    let alice_file = users.join("alice/notes.txt");
    let mut alice = session(relay, "files", "alice")?;
    let w = call(
        &mut alice,
        1,
        "write_file",
        json!({"path": alice_file, "content": "alice's private notes"}),
    )?;
    anyhow::ensure!(w.pointer("/result/isError") != Some(&json!(true)), "{w}");
    let r = call(&mut alice, 2, "read_text_file", json!({"path": alice_file}))?;
    assert_eq!(text_of(&r), "alice's private notes");
    let mut bob = session(relay, "files", "bob")?;
    let r = call(&mut bob, 1, "read_text_file", json!({"path": alice_file}))?;
    assert!(
        r.pointer("/result/isError") == Some(&json!(true)) || r.get("error").is_some(),
        "bob must not read alice's file: {r}"
    );
    assert!(!text_of(&r).contains("private notes"), "{r}");
    let l = call(&mut bob, 2, "list_directory", json!({"path": users}))?;
    let listing = text_of(&l);
    assert!(
        !listing.contains("alice"),
        "bob must not see alice's folder: {l}"
    );
    if sandboxed {
        // Allowed the whole users folder, the tool still sees only bob's.
        assert!(listing.contains("bob"), "bob sees his own folder: {l}");
    } else {
        assert!(
            l.pointer("/result/isError") == Some(&json!(true)) || l.get("error").is_some(),
            "outside his folder bob is refused: {l}"
        );
    }
    for mut ide in [alice, bob] {
        ide.close_stdin();
        ide.wait(T)?;
    }
    assert!(
        alice_file.exists(),
        "alice's file is on the host, in her folder"
    );
    Ok(())
}

#[test]
fn a_sandboxed_tool_has_no_network_unless_its_config_allows_it() -> Result<()> {
    let fx = fixtures_dir();
    let tools = format!(
        "{}\n{}",
        fixture_table("closed", &format!("[tool.sandbox]\nread_only = [{fx:?}]\n")),
        fixture_table(
            "open",
            &format!("[tool.sandbox]\nnetwork = true\nread_only = [{fx:?}]\n")
        )
    );
    let relay = relay("", &tools)?;
    let port = relay.addr.port();
    let mut closed = session(&relay, "closed", "alice")?;
    let r = text_of(&call(&mut closed, 1, "connect", json!({"port": port}))?);
    assert!(r.starts_with("error:"), "no network in the sandbox: {r}");
    let mut open = session(&relay, "open", "alice")?;
    let r = text_of(&call(&mut open, 1, "connect", json!({"port": port}))?);
    assert_eq!(r, "connected", "network = true keeps the host's network");
    // The system is read-only, /tmp private.
    let r = text_of(&call(
        &mut open,
        2,
        "read",
        json!({"path": "/etc/hostname"}),
    )?);
    assert!(!r.starts_with("error:"), "the system is readable: {r}");
    Ok(())
}

#[test]
fn a_relay_that_cannot_make_a_sandbox_does_not_start() -> Result<()> {
    let dir = TempDir::new();
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\n{}",
            demo_tool("demo", "[tool.sandbox]\n")
        ),
    )?;
    // No bwrap on this PATH.
    let mut relay = Command::new(bin("bridge-server"))
        .arg("--config")
        .arg(&config)
        .env("PATH", "/nonexistent")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let status = match mcp_bridge_tests::wait_child(&mut relay, T) {
        Ok(s) => s,
        Err(e) => {
            let _ = relay.kill();
            let _ = relay.wait();
            return Err(e.context("the relay started without its sandbox"));
        }
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut relay.stderr.take().context("stderr")?, &mut err)?;
    assert_eq!(status.code(), Some(64), "{status:?}: {err}");
    assert!(
        err.contains("demo") && err.contains("bubblewrap"),
        "the error names the tool and what to install: {err}"
    );
    Ok(())
}

/// A runaway tool of alice's is ended by its limit, its call answered with an error that names
/// the limit, while bob's calls to another tool keep answering. Prints the figures.
#[test]
fn runaway_tools_are_contained_and_other_users_keep_answering() -> Result<()> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mark = format!("{}-{nanos}", std::process::id());
    let limits = format!(
        "env = {{ HOSTING_MARK = {mark:?} }}\n[tool.limits]\nmemory = \"96MiB\"\nprocesses = 24\n\
         max_unterminated = \"8MiB\"\n"
    );
    let tools = format!(
        "{}\n{}",
        fixture_table("fx", &limits),
        demo_tool("demo", "")
    );
    let relay = relay("", &tools)?;
    let mut bob = session(&relay, "demo", "bob")?;
    let cases: [(&str, Value, &str); 3] = [
        ("hog", json!({}), "memory limit"),
        ("fork", json!({}), "process limit"),
        ("spew", json!({"bytes": 100 << 20}), "without a newline"),
    ];
    let mut id = 100;
    for (name, args, limit) in cases {
        let mut alice = session(&relay, "fx", "alice")?;
        let started = Instant::now();
        alice.send(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                           "params": {"name": name, "arguments": args}}))?;
        // Bob pings all along, measuring each round trip, until alice's call is answered.
        let mut worst = Duration::ZERO;
        let answer = loop {
            id += 1;
            let t = Instant::now();
            let pong = bob.request(json!(id), "ping", json!({}))?;
            anyhow::ensure!(pong.get("result").is_some(), "bob's ping failed: {pong}");
            worst = worst.max(t.elapsed());
            if let Ok(a) = alice.recv(Duration::from_millis(20)) {
                break a;
            }
            anyhow::ensure!(
                started.elapsed() < T,
                "{name}: alice's call was never answered"
            );
        };
        let contained = started.elapsed();
        let message = answer
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        eprintln!(
            "containment {name}: answered in {contained:?} ({message}); bob's worst ping {worst:?}"
        );
        assert!(
            message.contains(limit),
            "{name}: the error names the limit ({limit}): {answer}"
        );
        assert!(
            worst < Duration::from_secs(2),
            "{name}: bob waited {worst:?}"
        );
        // Nothing of alice's is left: the tool and whatever it started.
        alice.close_stdin();
        alice.wait(T)?;
        mcp_bridge_tests::wait_until(T, || relay.sessions_active("fx").is_ok_and(|n| n == 0.0))?;
    }
    let leftovers = marked_processes(&mark);
    assert!(leftovers.is_empty(), "processes left behind: {leftovers:?}");
    Ok(())
}

/// Live processes (anywhere) whose environment holds `HOSTING_MARK=<mark>`.
fn marked_processes(mark: &str) -> Vec<u32> {
    let needle = format!("HOSTING_MARK={mark}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rfind(')')
                        .map(|i| s[i + 1..].trim_start().starts_with('Z'))
                })
                .unwrap_or(true);
            !zombie && env.split(|b| *b == 0).any(|v| v == needle.as_bytes())
        })
        .collect()
}

//! The relay's config text as the tests write it: the common head (`listen`, `[limits]`), tool
//! tables, and token auth with hashes made by `bridge-server hash-token`. Not where the file
//! goes nor how the relay is started (relay.rs).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{ensure, Context, Result};

use crate::paths::{bin, fixture, python3};

/// A whole relay config on a free loopback port: `kill_grace_ms = 500` and `limits` in
/// `[limits]`, then `body` (tool tables, `[auth]`, `[tls]` …).
pub fn relay_config(limits: &str, body: &str) -> String {
    relay_config_on("127.0.0.1:0", limits, body)
}

/// [`relay_config`] listening on `listen`.
pub(crate) fn relay_config_on(listen: &str, limits: &str, body: &str) -> String {
    format!("listen = \"{listen}\"\n[limits]\nkill_grace_ms = 500\n{limits}\n\n{body}")
}

/// A TOML `[[tool]]` table.
pub fn tool_table(name: &str, command: &Path, args: &[&str], extra: &str) -> String {
    let args: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
    format!(
        "[[tool]]\nname = {name:?}\ncommand = {:?}\nargs = [{}]\n{extra}\n",
        command.display().to_string(),
        args.join(", ")
    )
}

/// The demo tool, as a `[[tool]]` table named `name`.
pub fn demo_tool(name: &str, extra: &str) -> String {
    tool_table(name, &bin("bridge-server"), &["demo-tool"], extra)
}

/// The fixture tool tests/fixtures/mcp_tool.py with `args`, as a `[[tool]]` table named `name`.
pub fn fixture_tool(name: &str, args: &[&str], extra: &str) -> String {
    let script = fixture("mcp_tool.py").display().to_string();
    let mut all = vec![script.as_str()];
    all.extend_from_slice(args);
    tool_table(name, &python3(), &all, extra)
}

/// A token as the config stores it (`sha256:…`), from `bridge-server hash-token`.
pub fn hash_token(token: &str) -> Result<String> {
    let mut child = Command::new(bin("bridge-server"))
        .arg("hash-token")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting bridge-server hash-token")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(token.as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(out.status.success(), "hash-token failed: {}", out.status);
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// An `[auth]` section in `tokens` mode: one `[[auth.token]]` table per (user, token, tools
/// granted), the token stored hashed.
pub fn token_auth(tokens: &[(&str, &str, &[&str])]) -> Result<String> {
    let mut out = String::from("[auth]\nmode = \"tokens\"\n");
    for (user, token, tools) in tokens {
        let tools: Vec<String> = tools.iter().map(|t| format!("{t:?}")).collect();
        out.push_str(&format!(
            "[[auth.token]]\nuser = {user:?}\nsha256 = \"{}\"\ntools = [{}]\n",
            hash_token(token)?,
            tools.join(", ")
        ));
    }
    Ok(out)
}

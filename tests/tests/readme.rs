//! README's walk-through, run from README itself: the fenced blocks after a
//! `<!-- readme-test: NAME -->` line are extracted and run in order, as a newcomer would, in an
//! empty folder with the built binaries on `PATH` (standing in for the `cargo install` block,
//! which is checked but not run: it would build a release and write to ~/.cargo/bin). The relay
//! gets a free loopback port: README's `127.0.0.1:8787` becomes `127.0.0.1:0` until the relay
//! has started, and the address it took after that. Every step has a deadline.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use mcp_bridge_tests::{bin, repo_root, signal, wait_child, Ide, Log, TempDir};
use serde_json::{json, Value};

/// README's address for the relay, replaced by a free port in the test.
const README_ADDR: &str = "127.0.0.1:8787";

/// The marked blocks, in README's order. Removing or reordering one fails the test.
const STEPS: &[&str] = &[
    "install",
    "new-token",
    "config",
    "relay",
    "login",
    "ide-config",
    "call",
    "logout",
];

/// How long one step may take.
const STEP: Duration = Duration::from_secs(30);

/// A fenced block of README.
struct Block {
    name: String,
    lang: String,
    text: String,
    line: usize,
}

/// Every block preceded by a `<!-- readme-test: NAME -->` line.
fn marked_blocks(readme: &str) -> Result<Vec<Block>> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(name) = lines[i]
            .trim()
            .strip_prefix("<!-- readme-test:")
            .and_then(|r| r.strip_suffix("-->"))
        else {
            i += 1;
            continue;
        };
        let line = i + 1;
        let fence = lines.get(i + 1).map(|l| l.trim()).unwrap_or("");
        let lang = fence.strip_prefix("```").with_context(|| {
            format!("README.md:{line}: the marker must be followed by a ``` block")
        })?;
        let end = (i + 2..lines.len())
            .find(|&j| lines[j].trim() == "```")
            .with_context(|| format!("README.md:{line}: the block never ends"))?;
        out.push(Block {
            name: name.trim().to_owned(),
            lang: lang.trim().to_owned(),
            text: lines[i + 2..end].join("\n") + "\n",
            line,
        });
        i = end + 1;
    }
    Ok(out)
}

/// The folder the test runs in, the PATH it gives, and the keyring origin to clean up.
struct Walk {
    dir: TempDir,
    path: String,
    addr: String,
    logged_in: Option<String>,
}

impl Walk {
    /// A command as README's reader runs it: in the folder, with the binaries on PATH, no token
    /// in the environment, default logging.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(self.dir.path())
            .env("PATH", &self.path)
            .env_remove("MCP_BRIDGE_TOKEN")
            .env_remove("RUST_LOG");
        cmd
    }

    /// Runs a shell block with bash (errors stop it); returns (stdout, stderr).
    fn sh(&self, block: &Block) -> Result<(String, String)> {
        let script = block.text.replace(README_ADDR, &self.addr);
        let out_file = self.dir.path().join(format!(".{}.out", block.name));
        let err_file = self.dir.path().join(format!(".{}.err", block.name));
        let mut child = self
            .command("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_file)?)
            .stderr(std::fs::File::create(&err_file)?)
            .spawn()?;
        let status = match wait_child(&mut child, STEP) {
            Ok(s) => s,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e).context(format!("README.md:{}: block `{}`", block.line, block.name));
            }
        };
        let (out, err) = (
            std::fs::read_to_string(&out_file)?,
            std::fs::read_to_string(&err_file)?,
        );
        ensure!(
            status.success(),
            "README.md:{}: block `{}` failed ({status}):\n{script}\nstdout:\n{out}\nstderr:\n{err}",
            block.line,
            block.name
        );
        Ok((out, err))
    }
}

impl Drop for Walk {
    fn drop(&mut self) {
        // A failed run must not leave its token in the user's keyring.
        if let Some(url) = self.logged_in.take() {
            let _ = self
                .command("bridge-client")
                .args(["logout", &url])
                .output();
        }
    }
}

/// The relay README's block starts, stopped when dropped.
struct Background(Child);

impl Drop for Background {
    fn drop(&mut self) {
        signal(self.0.id(), "TERM");
        if wait_child(&mut self.0, Duration::from_secs(10)).is_err() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The install block installs both programs the walk-through runs, from their crates.
fn check_install(block: &Block) -> Result<()> {
    let mut installed = BTreeSet::new();
    for line in block.text.lines() {
        let command = line.split('#').next().unwrap_or("").trim();
        if command.is_empty() {
            continue;
        }
        let Some(path) = command.strip_prefix("cargo install --locked --path ") else {
            bail!("README.md:{}: unexpected install line: {line}", block.line);
        };
        let manifest = std::fs::read_to_string(repo_root().join(path).join("Cargo.toml"))
            .with_context(|| {
                format!("README.md installs from `{path}`, which has no Cargo.toml")
            })?;
        ensure!(
            manifest.contains(&format!("name = \"{path}\"")),
            "README.md installs `{path}`, whose package is named otherwise"
        );
        installed.insert(path.to_owned());
    }
    let wanted: BTreeSet<String> = ["bridge-client", "bridge-server"].map(str::to_owned).into();
    ensure!(
        installed == wanted,
        "README.md's install block must install both programs; it installs {installed:?}"
    );
    Ok(())
}

#[test]
fn readme_walk_through_works_as_written() -> Result<()> {
    let readme = std::fs::read_to_string(repo_root().join("README.md"))?;
    let blocks = marked_blocks(&readme)?;
    let names: Vec<&str> = blocks.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, STEPS, "README.md's marked blocks changed");

    // Stand-in for `cargo install`: the binaries this test run built.
    let bin_dir: PathBuf = bin("bridge-server")
        .parent()
        .context("binary folder")?
        .to_owned();
    let path = std::env::join_paths(std::iter::once(bin_dir).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))?
    .into_string()
    .map_err(|_| anyhow::anyhow!("PATH is not UTF-8"))?;
    let mut walk = Walk {
        dir: TempDir::new(),
        path,
        addr: "127.0.0.1:0".to_owned(),
        logged_in: None,
    };
    let mut relay = None;
    let mut hash = String::new();
    for block in &blocks {
        println!("README.md:{}: {}", block.line, block.name);
        match block.name.as_str() {
            "install" => check_install(block)?,
            "new-token" => {
                let (out, _) = walk.sh(block)?;
                hash = out.trim().to_owned();
                ensure!(
                    hash.len() == 71
                        && hash.starts_with("sha256:")
                        && hash[7..].bytes().all(|b| b.is_ascii_hexdigit()),
                    "new-token printed {out:?}"
                );
                let file = walk.dir.path().join("alice.token");
                let mode = std::fs::metadata(&file)?.permissions().mode() & 0o777;
                ensure!(mode == 0o600, "alice.token has mode {mode:o}");
                let token = std::fs::read_to_string(&file)?;
                ensure!(
                    token.trim().len() >= 32,
                    "alice.token holds {} bytes",
                    token.len()
                );
                // Running it again must not overwrite the token.
                ensure!(walk.sh(block).is_err(), "new-token overwrote alice.token");
                ensure!(std::fs::read_to_string(&file)? == token);
            }
            "config" => {
                let (_, err) = walk.sh(block)?;
                ensure!(
                    err.trim() == "relay.toml: ok (1 tool(s): demo)",
                    "check-config said: {err}"
                );
                let config = std::fs::read_to_string(walk.dir.path().join("relay.toml"))?;
                ensure!(
                    config.contains(&hash),
                    "relay.toml lacks the hash:\n{config}"
                );
            }
            "relay" => {
                let started = start_relay(&walk, block)?;
                walk.addr = started.1;
                relay = Some(started.0);
            }
            "login" => {
                walk.logged_in = Some(format!("ws://{}", walk.addr));
                let (_, err) = walk.sh(block)?;
                ensure!(err.contains("stored"), "login said: {err}");
            }
            "ide-config" => ide_session(&walk, block)?,
            "call" => {
                let (out, _) = walk.sh(block)?;
                let lines: Vec<&str> = out.lines().collect();
                ensure!(lines.len() == 1, "stdout is not one JSON-RPC line: {out:?}");
                let answer: Value = serde_json::from_str(lines[0])?;
                ensure!(
                    answer["id"] == json!(1)
                        && answer.pointer("/result/content/0/text") == Some(&json!("hello")),
                    "{answer}"
                );
            }
            "logout" => {
                let (_, err) = walk.sh(block)?;
                ensure!(err.contains("removed"), "logout said: {err}");
                walk.logged_in = None;
                // Without the token, the relay refuses the client.
                let mut client = walk
                    .command("bridge-client")
                    .arg(format!("ws://{}/mcp/demo", walk.addr))
                    .stdin(Stdio::piped())
                    .stderr(Stdio::piped())
                    .stdout(Stdio::null())
                    .spawn()?;
                let status = wait_child(&mut client, STEP)?;
                let mut err = String::new();
                std::io::Read::read_to_string(
                    &mut client.stderr.take().context("stderr")?,
                    &mut err,
                )?;
                ensure!(
                    status.code() == Some(1) && err.contains("HTTP 401"),
                    "{status}: {err}"
                );
            }
            other => bail!("no step named {other}"),
        }
    }
    drop(relay);
    Ok(())
}

/// Starts the relay block in the background on a free port; waits for it to listen.
fn start_relay(walk: &Walk, block: &Block) -> Result<(Background, String)> {
    let commands: Vec<&str> = block
        .text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .collect();
    ensure!(
        commands.len() == 1,
        "README.md:{}: the relay block must be one command",
        block.line
    );
    let mut child = walk
        .command("bash")
        .args(["-c", &format!("exec {}", commands[0])])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let log = Log::default();
    log.drain_from(child.stderr.take().context("stderr")?, "readme-relay");
    let relay = Background(child);
    let marker = "bridge-server listening on ";
    log.wait_for(marker, STEP)?;
    let addr = log
        .text()
        .lines()
        .find_map(|l| l.split(marker).nth(1).map(str::to_owned))
        .and_then(|rest| rest.split_whitespace().next().map(str::to_owned))
        .context("the relay's address")?;
    Ok((relay, addr))
}

/// Runs README's IDE configuration as the IDE would: its command and args, a handshake, a call.
fn ide_session(walk: &Walk, block: &Block) -> Result<()> {
    ensure!(
        block.lang == "json",
        "README.md:{}: expected a json block",
        block.line
    );
    let config: Value = serde_json::from_str(&block.text.replace(README_ADDR, &walk.addr))?;
    let server = &config["mcpServers"]["demo"];
    let program = server["command"].as_str().context("command")?;
    let args: Vec<&str> = server["args"]
        .as_array()
        .context("args")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let mut ide = Ide::spawn(walk.command(program).args(&args))?;
    ide.initialize()?;
    let answer = ide.request(
        json!(7),
        "tools/call",
        json!({"name": "echo", "arguments": {"text": "from the IDE config"}}),
    )?;
    ensure!(
        answer.pointer("/result/content/0/text") == Some(&json!("from the IDE config")),
        "{answer}"
    );
    ide.close_stdin();
    let status = ide.wait(STEP)?;
    ensure!(status.success(), "{status}: {}", ide.stderr.text());
    Ok(())
}

#[test]
fn marked_blocks_are_found() -> Result<()> {
    let text = "x\n<!-- readme-test: a -->\n```sh\necho 1\necho 2\n```\n<!-- readme-test: b -->\n```json\n{}\n```\n";
    let blocks = marked_blocks(text)?;
    assert_eq!(blocks.len(), 2);
    assert_eq!(
        (blocks[0].name.as_str(), blocks[0].lang.as_str()),
        ("a", "sh")
    );
    assert_eq!(blocks[0].text, "echo 1\necho 2\n");
    assert_eq!(blocks[1].line, 7);
    assert!(marked_blocks("<!-- readme-test: a -->\ntext\n").is_err());
    Ok(())
}

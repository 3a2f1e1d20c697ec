//! The `[[tool]]` tables: the hosted tools. A tool whose command cannot be found, or whose
//! working directory is missing, is a warning, not an error: it may be installed after the
//! config is written, and until then only its own sessions are refused (HTTP 502).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use shared::DEFAULT_MAX_MESSAGE_SIZE;

use super::diag::Problems;
use super::hosting;
use super::read::Section;
use super::ToolConfig;

const KEYS: &[&str] = &[
    "name",
    "command",
    "args",
    "env",
    "cwd",
    "max_message_size",
    "max_sessions",
    "env_files",
    "create_cwd",
    "limits",
    "sandbox",
    "calls_per_second",
    "call_burst",
    "policy",
];

/// Every `[[tool]]`; at least one is required.
pub(super) fn tools(root: &Section<'_, '_>, base: &Path, p: &mut Problems<'_>) -> Vec<ToolConfig> {
    if !root.has("tool") {
        p.error(
            p.end(),
            "tool",
            "no tools are configured: add at least one [[tool]] table with `name` and `command`",
        );
        return Vec::new();
    }
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut out = Vec::new();
    for t in root.tables("tool", p) {
        // Type errors are tool()'s to report.
        if let Some((name, at)) = t.peek_string("name") {
            if let Some(first) = seen.get(name) {
                p.error(
                    at,
                    &t.key("name"),
                    format!("`{name}` is already the name of {first}: tool names must differ"),
                );
            } else {
                seen.insert(name.to_owned(), t.name().to_owned());
            }
        }
        if let Some(tool) = tool(&t, base, p) {
            out.push(tool);
        }
    }
    out
}

/// One `[[tool]]`, with warnings for a command or folder that is not there (yet).
fn tool(t: &Section<'_, '_>, base: &Path, p: &mut Problems<'_>) -> Option<ToolConfig> {
    t.only(KEYS, p);
    let name = t.string("name", p);
    let command = t.string("command", p);
    let args = t.strings("args", p);
    let env = t.string_map("env", p);
    let cwd = t.string("cwd", p).map(|(c, _)| PathBuf::from(c));
    let max_message_size = t.usize("max_message_size", p);
    let max_sessions = t.usize("max_sessions", p).map(|(n, _)| n);
    if !t.has("name") {
        t.missing("name", "the name in the URL path (/mcp/NAME)", p);
    }
    if !t.has("command") {
        t.missing(
            "command",
            "the program to run (a path, or a name looked up in PATH)",
            p,
        );
    }
    let name = name.and_then(|(name, at)| {
        if valid_tool_name(name) {
            Some(name)
        } else {
            p.error(
                at,
                &t.key("name"),
                format!(
                    "`{name}` cannot be used in a URL path: use 1-64 letters, digits, `-`, `_` or `.`"
                ),
            );
            None
        }
    });
    let command = command.and_then(|(command, at)| {
        if command.trim().is_empty() {
            p.error(
                at,
                &t.key("command"),
                "the command is empty: name the program to run",
            );
            None
        } else {
            Some(command)
        }
    });
    let max_message_size = match max_message_size {
        Some((n, at)) if n < 1024 => {
            p.error(
                at,
                &t.key("max_message_size"),
                format!("{n} bytes is too small: use at least 1024"),
            );
            None
        }
        Some((n, _)) => Some(n),
        None if t.has("max_message_size") => None,
        None => Some(DEFAULT_MAX_MESSAGE_SIZE),
    };
    let args = args.unwrap_or_default();
    let env = env.unwrap_or_default();
    hosting::check_templates(
        t,
        command,
        &args,
        &env,
        cwd.as_deref().and_then(Path::to_str),
        p,
    );
    let env_files = hosting::env_files(t, base, p);
    let create_cwd = hosting::create_cwd(t, p);
    let limits = hosting::limits(t, max_message_size.unwrap_or(DEFAULT_MAX_MESSAGE_SIZE), p);
    let sandbox = hosting::sandbox(t, p);
    let call_rate = hosting::call_rate(t, p);
    let policy = hosting::policy(t, p);
    let tool = ToolConfig {
        name: name?.to_owned(),
        command: command?.to_owned(),
        args,
        env,
        cwd,
        max_message_size: max_message_size?,
        max_sessions,
        env_files,
        create_cwd,
        limits,
        sandbox,
        call_rate,
        policy,
    };
    let refused = format!(
        "until then, every connection to /mcp/{} is refused with HTTP 502",
        tool.name
    );
    if let Some(cwd) = tool
        .cwd
        .as_ref()
        .filter(|c| !is_template(c) && !tool.create_cwd)
    {
        if !cwd.is_dir() {
            p.warn(
                t.span("cwd"),
                &t.key("cwd"),
                format!(
                    "tool `{}`: the working folder {} does not exist (or is not a folder): \
                     create it, or fix `cwd`; {refused}",
                    tool.name,
                    cwd.display()
                ),
            );
        }
    }
    if let Err(why) = find_command(&tool) {
        p.warn(
            t.span("command"),
            &t.key("command"),
            format!("tool `{}`: {why}; {refused}", tool.name),
        );
    }
    Some(tool)
}

/// Whether a path is filled in per session (it holds a placeholder).
fn is_template(path: &Path) -> bool {
    path.to_string_lossy().contains('{')
}

fn valid_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && name != "."
        && name != ".."
}

/// The program the relay would start for `tool`, found the way it is started: a command with a
/// `/` is a path (relative ones from the tool's `cwd`), any other is looked up in the tool's
/// `PATH` (its `env` PATH if it sets one, else the relay's). The error says what was searched
/// and what to do.
fn find_command(tool: &ToolConfig) -> Result<PathBuf, String> {
    let base = tool
        .cwd
        .clone()
        .filter(|c| !is_template(c))
        .unwrap_or_default();
    if tool.command.contains('/') {
        let path = base.join(&tool.command);
        return match program(&path) {
            Ok(()) => Ok(path),
            Err(why) => Err(format!(
                "`{}` {why}: install it, or fix `command`",
                path.display()
            )),
        };
    }
    let (search, whence): (Option<OsString>, &str) = match tool.env.get("PATH") {
        Some(p) => (Some(p.into()), "the tool's env PATH"),
        None => (std::env::var_os("PATH"), "the relay's PATH"),
    };
    let Some(search) = search.filter(|s| !s.is_empty()) else {
        return Err(format!(
            "`{}` cannot be looked up: {whence} is empty or not set; give the command's full path",
            tool.command
        ));
    };
    let mut unusable = None;
    for dir in std::env::split_paths(&search) {
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let candidate = base.join(dir).join(&tool.command);
        match program(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(why) if candidate.exists() && unusable.is_none() => {
                unusable = Some(format!(" ({} {why})", candidate.display()));
            }
            Err(_) => {}
        }
    }
    Err(format!(
        "`{}` was not found in {whence} ({}){}: install it, give its full path, or set PATH in \
         the tool's `env`",
        tool.command,
        search.to_string_lossy(),
        unusable.unwrap_or_default()
    ))
}

/// Whether `path` is a program that can be started.
fn program(path: &Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err("is a folder, not a program".into()),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => {
            Err("is not executable (chmod +x it)".into())
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err("does not exist".into()),
        Err(e) => Err(format!("cannot be read: {e}")),
    }
}

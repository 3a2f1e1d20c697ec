//! The parts of a `[[tool]]` that host it for many users: per-user templates (`{user}`),
//! `env_files`, `create_cwd`, `[tool.limits]` and `[tool.sandbox]`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::diag::Problems;
use super::read::Section;
use super::{Sandbox, ToolLimits};
use crate::confine::template;
use crate::policy::rate::Rate;
use crate::policy::{Rule, ToolPolicy};

const LIMIT_KEYS: &[&str] = &[
    "memory",
    "cpu_seconds",
    "processes",
    "open_files",
    "max_unterminated",
];

const SANDBOX_KEYS: &[&str] = &["network", "read_only", "writable", "hide"];

const POLICY_KEYS: &[&str] = &["users", "groups", "allow", "deny"];

/// Checks every template of a tool (`args`, `env`, `cwd`); the command itself takes none.
pub(super) fn check_templates(
    t: &Section<'_, '_>,
    command: Option<&str>,
    args: &[String],
    env: &BTreeMap<String, String>,
    cwd: Option<&str>,
    p: &mut Problems<'_>,
) {
    if let Some(c) = command {
        if c.contains(['{', '}']) {
            p.error(
                t.span("command"),
                &t.key("command"),
                "the command cannot hold placeholders: put {user} in `args`, `env` or `cwd`",
            );
        }
    }
    for (n, a) in args.iter().enumerate() {
        template_ok(t, "args", &format!("{}[{n}]", t.key("args")), a, p);
    }
    for (k, v) in env {
        template_ok(t, "env", &format!("{}.{k}", t.key("env")), v, p);
    }
    if let Some(c) = cwd {
        template_ok(t, "cwd", &t.key("cwd"), c, p);
    }
}

fn template_ok(t: &Section<'_, '_>, field: &str, key: &str, value: &str, p: &mut Problems<'_>) {
    if let Err(e) = template::check(value) {
        p.error(t.span(field), key, e.to_string());
    }
}

/// `env_files = { NAME = "path" }`: relative paths are taken from the config file's folder.
pub(super) fn env_files(
    t: &Section<'_, '_>,
    base: &Path,
    p: &mut Problems<'_>,
) -> BTreeMap<String, PathBuf> {
    let Some(map) = t.string_map("env_files", p) else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for (name, path) in map {
        let key = format!("{}.{name}", t.key("env_files"));
        if let Err(e) = template::check(&path) {
            p.error(t.span("env_files"), &key, e.to_string());
            continue;
        }
        if !valid_env_name(&name) {
            p.error(
                t.span("env_files"),
                &key,
                format!("`{name}` is not an environment variable name: use letters, digits and _"),
            );
            continue;
        }
        out.insert(name, base.join(path));
    }
    out
}

fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `create_cwd = true`: needs a `cwd`.
pub(super) fn create_cwd(t: &Section<'_, '_>, p: &mut Problems<'_>) -> bool {
    let Some(flag) = t.bool("create_cwd", p) else {
        return false;
    };
    if flag && !t.has("cwd") {
        p.error(
            t.span("create_cwd"),
            &t.key("create_cwd"),
            "create_cwd needs a `cwd` to create, e.g. cwd = \"/srv/mcp/users/{user}\"",
        );
    }
    flag
}

/// `[tool.limits]`: each key optional; 0 turns a limit off.
pub(super) fn limits(
    t: &Section<'_, '_>,
    max_message_size: usize,
    p: &mut Problems<'_>,
) -> ToolLimits {
    let defaults = ToolLimits::defaults(max_message_size);
    let Some(l) = t.table("limits", p) else {
        return defaults;
    };
    l.only(LIMIT_KEYS, p);
    let off_if_zero = |v: Option<(u64, _)>, d: Option<u64>| match v {
        Some((0, _)) => None,
        Some((n, _)) => Some(n),
        None => d,
    };
    let memory = l.size("memory", p);
    if let Some((n, at)) = &memory {
        if (1..16 << 20).contains(n) {
            p.error(
                at.clone(),
                &l.key("memory"),
                "is below 16 MiB, too small for any tool to start: give at least \"16MiB\" (0 \
                 turns the limit off)",
            );
        }
    }
    let max_unterminated = match l.size("max_unterminated", p) {
        Some((n, at)) if n < max_message_size as u64 => {
            p.error(
                at,
                &l.key("max_unterminated"),
                format!(
                    "must be at least the tool's max_message_size ({max_message_size} bytes): a \
                     line of the largest message must fit"
                ),
            );
            defaults.max_unterminated
        }
        Some((n, _)) => n,
        None => defaults.max_unterminated,
    };
    ToolLimits {
        memory: off_if_zero(memory, defaults.memory),
        cpu_seconds: off_if_zero(l.uint("cpu_seconds", p), defaults.cpu_seconds),
        processes: off_if_zero(l.uint("processes", p), defaults.processes),
        open_files: off_if_zero(l.uint("open_files", p), defaults.open_files),
        max_unterminated,
    }
}

/// `[tool.sandbox]`: present means on.
pub(super) fn sandbox(t: &Section<'_, '_>, p: &mut Problems<'_>) -> Option<Sandbox> {
    let s = t.table("sandbox", p)?;
    s.only(SANDBOX_KEYS, p);
    let mut paths = |field: &str| -> Vec<String> {
        let list = s.strings(field, p).unwrap_or_default();
        let mut ok = Vec::new();
        for (n, path) in list.into_iter().enumerate() {
            let key = format!("{}[{n}]", s.key(field));
            if let Err(e) = template::check(&path) {
                p.error(s.span(field), &key, e.to_string());
            } else if !path.starts_with('/') {
                p.error(
                    s.span(field),
                    &key,
                    format!("`{path}` is not an absolute path: sandbox paths start with /"),
                );
            } else {
                ok.push(path);
            }
        }
        ok
    };
    let read_only = paths("read_only");
    let writable = paths("writable");
    let hide = paths("hide");
    Some(Sandbox {
        network: s.bool("network", p).unwrap_or(false),
        read_only,
        writable,
        hide,
    })
}

/// `calls_per_second` and `call_burst` (in `[limits]` or a `[[tool]]`): none means no limit;
/// the burst defaults to twice the rate.
pub(super) fn call_rate(t: &Section<'_, '_>, p: &mut Problems<'_>) -> Option<Rate> {
    let rate = t.uint("calls_per_second", p);
    let burst = t.uint("call_burst", p);
    match (rate, burst) {
        (Some((0, at)), _) => {
            p.error(
                at,
                &t.key("calls_per_second"),
                "must be at least 1 (leave it out for no limit)",
            );
            None
        }
        (Some((r, _)), burst) => {
            let burst = burst.map_or(r.saturating_mul(2), |(b, _)| b).max(1);
            Some(Rate {
                per_second: r as f64,
                burst: u32::try_from(burst).unwrap_or(u32::MAX),
            })
        }
        (None, Some((_, at))) => {
            p.error(
                at,
                &t.key("call_burst"),
                "has no effect without `calls_per_second`",
            );
            None
        }
        (None, None) => None,
    }
}

/// `[[tool.policy]]`: rules of which of the server's own tools a user may use.
pub(super) fn policy(t: &Section<'_, '_>, p: &mut Problems<'_>) -> ToolPolicy {
    let mut rules = Vec::new();
    for r in t.tables("policy", p) {
        r.only(POLICY_KEYS, p);
        let users = r.strings("users", p).unwrap_or_default();
        let groups = r.strings("groups", p).unwrap_or_default();
        if users.is_empty() && groups.is_empty() {
            p.error(
                r.at(),
                &r.key("users"),
                "a policy rule names whom it applies to: `users` (\"*\" for everyone) or `groups`",
            );
        }
        let allow = r.strings("allow", p).unwrap_or_default();
        let deny = r.strings("deny", p).unwrap_or_default();
        if allow.is_empty() && deny.is_empty() {
            p.error(
                r.at(),
                &r.key("allow"),
                "a policy rule needs `allow` or `deny` (globs of the server's tool names)",
            );
        }
        rules.push(Rule {
            users,
            groups,
            allow,
            deny,
        });
    }
    ToolPolicy { rules }
}

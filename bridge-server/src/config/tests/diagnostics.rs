//! A full config, and how problems and warnings are reported (place, order, hints).

use std::time::Duration;

use super::*;

#[test]
fn a_full_config_parses() {
    let loaded = parse(
        r#"
listen = "127.0.0.1:9000"
[limits]
kill_grace_ms = 500
idle_timeout_ms = 0
[security]
allowed_origins = ["https://app.example.com"]
[metrics]
listen = "127.0.0.1:9090"
[[tool]]
name = "time"
command = "/bin/sh"
args = ["--local-timezone", "UTC"]
env = { TZ = "UTC" }
cwd = "/tmp"
max_message_size = 65536
max_sessions = 4
"#,
    )
    .expect("valid");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let cfg = loaded.config;
    assert_eq!(cfg.listen.port(), 9000);
    assert_eq!(cfg.limits.kill_grace, Duration::from_millis(500));
    assert_eq!(cfg.limits.idle_timeout, None);
    assert_eq!(cfg.allowed_origins, ["https://app.example.com"]);
    assert_eq!(cfg.metrics_listen.map(|a| a.port()), Some(9090));
    let tool = cfg.tool("time").expect("tool");
    assert_eq!(tool.args, ["--local-timezone", "UTC"]);
    assert_eq!(tool.env.get("TZ").map(String::as_str), Some("UTC"));
    assert_eq!(tool.max_message_size, 65536);
    assert_eq!(tool.max_sessions, Some(4));
}

#[test]
fn every_problem_is_reported_in_file_order_with_line_and_column() {
    // Two typos: the one on line 5 comes before the one on line 9, whatever the key order.
    let text = concat!(
        "listen = \"127.0.0.1:8787\"\n",
        "[[tool]]\n",
        "name = \"a\"\n",
        "command = \"/bin/sh\"\n",
        "zzz_typo = 1\n",
        "[limits]\n",
        "kill_grace_ms = 10\n",
        "\n",
        "  aaa_typo = 2\n",
    );
    let got = problems(text);
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(
        got[0].starts_with("relay.toml:5:1: `tool[0].zzz_typo`: unknown key in [[tool]]"),
        "{got:#?}"
    );
    assert!(
        got[1].starts_with("relay.toml:9:3: `limits.aaa_typo`: unknown key in [limits]"),
        "{got:#?}"
    );
}

#[test]
fn unknown_keys_get_a_hint() {
    let got = problems("[[tool]]\nname = 'a'\ncomand = 'x'\n");
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(
        got[0].starts_with("relay.toml:1:1: `tool[0].command`: missing: [[tool]] needs `command`"),
        "{got:#?}"
    );
    assert!(
        got[1].starts_with(
            "relay.toml:3:1: `tool[0].comand`: unknown key in [[tool]]: did you mean `command`?"
        ),
        "{got:#?}"
    );
}

#[test]
fn values_of_every_section_are_checked_in_one_run() {
    let text = r#"listen = "nowhere"
[tls]
cert = "no-such.crt"
key = "no-such.key"
[auth]
mode = "magic"
[metrics]
listen = 9090
[limits]
heartbeat_interval_ms = 5000
heartbeat_timeout_ms = 1000
kill_grace_ms = -1
[[tool]]
name = "a b"
command = ""
max_message_size = 10
[[tool]]
name = "a b"
command = "/bin/sh"
args = ["ok", 3]
"#;
    let got = problems(text);
    let expect = [
        "relay.toml:1:10: `listen`: `nowhere` is not an address",
        "relay.toml:3:8: `tls.cert`: cannot read certificates from no-such.crt",
        "relay.toml:4:7: `tls.key`: cannot read private key from no-such.key",
        "relay.toml:6:8: `auth.mode`: `magic` is not a mode",
        "relay.toml:8:10: `metrics.listen`: expected a string, found an integer",
        "relay.toml:11:24: `limits.heartbeat_timeout_ms`: heartbeat_timeout_ms (1000 ms) must be longer",
        "relay.toml:12:17: `limits.kill_grace_ms`: must be 0 or more",
        "relay.toml:14:8: `tool[0].name`: `a b` cannot be used in a URL path",
        "relay.toml:15:11: `tool[0].command`: the command is empty",
        "relay.toml:16:20: `tool[0].max_message_size`: 10 bytes is too small",
        "relay.toml:18:8: `tool[1].name`: `a b` is already the name of tool[0]",
        "relay.toml:18:8: `tool[1].name`: `a b` cannot be used in a URL path",
        "relay.toml:20:15: `tool[1].args[1]`: expected a string, found an integer",
    ];
    assert_eq!(got.len(), expect.len(), "{got:#?}");
    for (line, want) in got.iter().zip(expect) {
        assert!(
            line.starts_with(want),
            "{line}\n  does not start with\n{want}"
        );
    }
}

#[test]
fn auth_and_tls_errors_carry_a_place() {
    let got = problems(&format!("[auth]\nmode = \"tokens\"\n{SH_TOOL}"));
    assert!(
        got[0].starts_with("relay.toml:2:8: `auth.mode`: mode \"tokens\" needs at least one"),
        "{got:#?}"
    );
    let got = problems(&format!("[auth]\n{SH_TOOL}"));
    assert!(
        got[0].starts_with("relay.toml:1:1: `auth.mode`: missing"),
        "{got:#?}"
    );
    let got = problems(&format!("[tls]\ncert = \"c.pem\"\n{SH_TOOL}"));
    assert!(
        got[0].starts_with("relay.toml:1:1: `tls.key`: missing: [tls] needs `key`"),
        "{got:#?}"
    );
    assert!(
        got[1].starts_with("relay.toml:2:8: `tls.cert`: cannot read certificates from c.pem"),
        "{got:#?}"
    );
    let got = problems(&format!(
        "[auth]\nmode = \"tokens\"\n[[auth.token]]\nuser = \"a\"\nsha256 = \"plain\"\n{SH_TOOL}"
    ));
    assert!(
        got[0].starts_with("relay.toml:5:10: `auth.token[0].sha256`: expected `sha256:`"),
        "{got:#?}"
    );
}

#[test]
fn no_authentication_off_loopback_points_at_the_cause() {
    let got = problems(&format!("listen = \"0.0.0.0:8787\"\n{SH_TOOL}"));
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0].starts_with("relay.toml:1:10: `listen`: 0.0.0.0:8787 is not a loopback address"),
        "{got:#?}"
    );
    let got = problems(&format!(
        "listen = \"0.0.0.0:8787\"\n[auth]\nmode = \"none\"\n{SH_TOOL}"
    ));
    assert!(
        got[0].starts_with("relay.toml:3:8: `auth.mode`: \"none\" is allowed only on a loopback"),
        "{got:#?}"
    );
}

#[test]
fn every_syntax_error_is_reported() {
    let got = problems("listen = \"127.0.0.1:1\n[[tool]]\nname = \ncommand = 'x'\n");
    assert!(got.len() >= 2, "{got:#?}");
    assert!(got[0].starts_with("relay.toml:1:"), "{got:#?}");
    assert!(got[1].starts_with("relay.toml:3:"), "{got:#?}");
    assert!(got
        .iter()
        .all(|l| !l.contains('`') || l.contains("expected")));
}

#[test]
fn no_tools_is_reported_at_the_end_of_the_file() {
    let got = problems("listen = '127.0.0.1:1'\n");
    assert_eq!(got, ["relay.toml:2:1: `tool`: no tools are configured: add at least one [[tool]] table with `name` and `command`"]);
}

#[test]
fn a_command_that_cannot_be_found_is_a_warning() {
    let dir = std::env::temp_dir().join(format!("mcp-bridge-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = format!(
        "[[tool]]\nname = \"time\"\ncommand = \"mcp-bridge-no-such-tool\"\nenv = {{ PATH = \"{}\" }}\n",
        dir.display()
    );
    let loaded = parse(&text).expect("a missing command is not an error");
    let w: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(w.len(), 1, "{w:#?}");
    assert!(
        w[0].starts_with(&format!(
            "relay.toml:3:11: warning: `tool[0].command`: tool `time`: `mcp-bridge-no-such-tool` \
             was not found in the tool's env PATH ({})",
            dir.display()
        )),
        "{}",
        w[0]
    );
    assert!(w[0].contains("refused with HTTP 502"), "{}", w[0]);
    // Installed later: the warning goes away.
    let program = dir.join("mcp-bridge-no-such-tool");
    std::fs::write(&program, "#!/bin/sh\n").unwrap();
    let loaded = parse(&text).unwrap();
    assert!(loaded.warnings[0].message.contains("is not executable"));
    std::fs::set_permissions(
        &program,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    assert!(parse(&text).unwrap().warnings.is_empty());
    // Without an env PATH, the relay's own PATH is searched (and named).
    let loaded = parse("[[tool]]\nname = 't'\ncommand = 'mcp-bridge-no-such-tool-2'\n").unwrap();
    assert!(
        loaded.warnings[0]
            .message
            .contains("not found in the relay's PATH ("),
        "{:?}",
        loaded.warnings
    );
    // A path, and a working folder, that do not exist.
    let loaded =
        parse("[[tool]]\nname = 't'\ncommand = '/no/such/tool'\ncwd = '/no/such/dir'\n").unwrap();
    let w: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(w.len(), 2, "{w:#?}");
    assert!(
        w[0].starts_with(
            "relay.toml:3:11: warning: `tool[0].command`: tool `t`: `/no/such/tool` does not exist"
        ),
        "{w:#?}"
    );
    assert!(
        w[1].starts_with("relay.toml:4:7: warning: `tool[0].cwd`"),
        "{w:#?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn warnings_are_listed_with_errors() {
    let got = problems("[[tool]]\nname = 't'\ncommand = 'mcp-bridge-no-such-tool-3'\nbad = 1\n");
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(got[0].contains(": warning: `tool[0].command`"), "{got:#?}");
    assert!(got[1].contains("`tool[0].bad`: unknown key"), "{got:#?}");
}

#[test]
fn columns_count_characters() {
    // Byte 6 is the `=`: the 4th character of its line (the 5th byte).
    assert_eq!(diag::line_col("a\nzé = x", 6), (2, 4));
    assert_eq!(diag::line_col("", 0), (1, 1));
}

#[test]
fn a_wrong_type_is_reported_once() {
    let got = problems("[[tool]]\nname = 1\ncommand = '/bin/sh'\n");
    assert_eq!(
        got,
        ["relay.toml:2:8: `tool[0].name`: expected a string, found an integer"]
    );
}

#[test]
fn tables_of_another_auth_mode_are_a_warning() {
    let loaded = parse(&format!(
        "[auth]\nmode = \"none\"\n[[auth.token]]\nuser = \"a\"\nsha256 = \"x\"\n{SH_TOOL}"
    ))
    .expect("valid");
    let w: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(w.len(), 1, "{w:#?}");
    assert!(
        w[0].starts_with("relay.toml:3:1: warning: `auth.token`: ignored"),
        "{w:#?}"
    );
}

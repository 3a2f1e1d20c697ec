//! The relay's own sections: handshake bounds, hosting, node id, admin tokens, cluster.

use super::*;

#[test]
fn handshake_bounds_parse_with_their_defaults() {
    let cfg = parse(SH_TOOL).expect("valid").config;
    assert_eq!(cfg.limits.max_handshakes, 256);
    assert_eq!(cfg.limits.max_handshakes_per_source, 32);
    let cfg = parse(&format!(
        "[limits]\nmax_handshakes = 64\nmax_handshakes_per_source = 8\n{SH_TOOL}"
    ))
    .expect("valid")
    .config;
    assert_eq!(cfg.limits.max_handshakes, 64);
    assert_eq!(cfg.limits.max_handshakes_per_source, 8);
}

#[test]
fn a_zero_or_negative_per_source_handshake_bound_is_reported_with_its_place() {
    let got = problems(&format!(
        "[limits]\nmax_handshakes_per_source = 0\n{SH_TOOL}"
    ));
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0]
            .starts_with("relay.toml:2:29: `limits.max_handshakes_per_source`: must be at least 1"),
        "{got:#?}"
    );
    let got = problems(&format!(
        "[limits]\nmax_handshakes_per_source = -4\n{SH_TOOL}"
    ));
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0]
            .starts_with("relay.toml:2:29: `limits.max_handshakes_per_source`: must be 0 or more"),
        "{got:#?}"
    );
    let got = problems(&format!(
        "[limits]\nmax_handshake_per_source = 4\n{SH_TOOL}"
    ));
    assert!(
        got[0].contains("did you mean `max_handshakes_per_source`?"),
        "{got:#?}"
    );
}

#[test]
fn hosting_keys_parse_with_their_defaults() {
    let loaded = parse(
        r#"
[[tool]]
name = "files"
command = "/bin/sh"
args = ["/srv/{user}", "{{literal}}"]
cwd = "/srv/users/{user}"
create_cwd = true
env = { WHO = "{user}@{tool}" }
env_files = { GITHUB_TOKEN = "secrets/{user}/github" }
[tool.limits]
memory = "512MiB"
cpu_seconds = 600
processes = 0
[tool.sandbox]
network = true
read_only = ["/opt/tools"]
writable = ["/srv/shared/{user}"]
hide = ["/srv/private"]
"#,
    )
    .expect("valid");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let tool = loaded.config.tool("files").expect("tool").clone();
    assert!(tool.create_cwd);
    assert_eq!(
        tool.env_files.get("GITHUB_TOKEN").map(PathBuf::as_path),
        Some(Path::new("secrets/{user}/github"))
    );
    assert_eq!(tool.limits.memory, Some(512 << 20));
    assert_eq!(tool.limits.cpu_seconds, Some(600));
    assert_eq!(tool.limits.processes, None, "0 turns a limit off");
    assert_eq!(tool.limits.open_files, Some(1024), "the default stays");
    let sb = tool.sandbox.expect("sandbox");
    assert!(sb.network);
    assert_eq!(sb.writable, ["/srv/shared/{user}"]);
    // A tool without the keys gets the defaults and no sandbox.
    let plain = parse(SH_TOOL).expect("valid").config;
    let a = plain.tool("a").expect("tool");
    assert_eq!(a.limits, ToolLimits::defaults(a.max_message_size));
    assert!(a.sandbox.is_none());
}

#[test]
fn hosting_mistakes_are_reported_with_their_place() {
    let found = problems(
        r#"
[[tool]]
name = "files"
command = "/bin/{user}"
args = ["{usr}"]
create_cwd = true
env_files = { "BAD-NAME" = "/x" }
[tool.limits]
memory = "lots"
max_unterminated = 10
[tool.sandbox]
writable = ["relative/{user}"]
"#,
    );
    let joined = found.join("\n");
    for needle in [
        "tool[0].command",
        "cannot hold placeholders",
        "tool[0].args[0]",
        "`{usr}` is not a placeholder",
        "create_cwd needs a `cwd`",
        "BAD-NAME",
        "tool[0].limits.memory",
        "is not a size",
        "tool[0].limits.max_unterminated",
        "tool[0].sandbox.writable[0]",
        "not an absolute path",
    ] {
        assert!(joined.contains(needle), "missing {needle:?} in:\n{joined}");
    }
}

#[test]
fn node_id_names_this_relay_among_its_peers() {
    let cfg = parse(&format!("node_id = \"relay-1\"\n{SH_TOOL}"))
        .expect("valid")
        .config;
    assert_eq!(cfg.node_id.as_deref(), Some("relay-1"));
    assert_eq!(parse(SH_TOOL).expect("valid").config.node_id, None);
    for bad in ["", "relay.1", "relay 1", "ä", &"x".repeat(64)] {
        let found = problems(&format!("node_id = \"{bad}\"\n{SH_TOOL}"));
        assert_eq!(found.len(), 1, "{bad:?}: {found:?}");
        assert!(
            found[0].contains("node_id") && found[0].contains("letters, digits"),
            "{bad:?}: {found:?}"
        );
    }
}

#[test]
fn admin_tokens_parse_and_need_the_metrics_listener_and_a_token_of_their_own() {
    let hash = crate::auth::hash_token("admin-secret");
    let user_hash = crate::auth::hash_token("alice-secret");
    let cfg = |metrics: &str, admin_hash: &str| {
        format!(
            "[auth]\nmode = \"tokens\"\n[[auth.token]]\nuser = \"alice\"\nsha256 = \"{user_hash}\"\n\
             tools = [\"*\"]\n{metrics}[[admin.token]]\nname = \"ops\"\nsha256 = \"{admin_hash}\"\n\
             [[admin.token]]\nsha256 = \"{admin_hash}\"\n{SH_TOOL}"
        )
    };
    let loaded = parse(&cfg("[metrics]\nlisten = \"127.0.0.1:9090\"\n", &hash)).expect("valid");
    let names: Vec<&str> = loaded
        .config
        .admin_tokens
        .iter()
        .map(|t| t.user.as_str())
        .collect();
    assert_eq!(names, ["ops", "admin"], "the name defaults to `admin`");
    assert!(parse(SH_TOOL)
        .expect("valid")
        .config
        .admin_tokens
        .is_empty());

    let no_listener = problems(&cfg("", &hash));
    assert!(
        no_listener
            .iter()
            .any(|p| p.contains("`admin`") && p.contains("[metrics] listen")),
        "{no_listener:?}"
    );
    let shared_token = problems(&cfg("[metrics]\nlisten = \"127.0.0.1:9090\"\n", &user_hash));
    assert!(
        shared_token
            .iter()
            .any(|p| p.contains("admin.token[0].sha256") && p.contains("a token of its own")),
        "{shared_token:?}"
    );
    let empty = problems(&format!(
        "[metrics]\nlisten = \"127.0.0.1:9090\"\n[admin]\n{SH_TOOL}"
    ));
    assert!(empty.iter().any(|p| p.contains("admin.token")), "{empty:?}");
    let typo = problems(&format!(
        "[metrics]\nlisten = \"127.0.0.1:9090\"\n[[admin.token]]\nnam = \"x\"\nsha256 = \"{hash}\"\n{SH_TOOL}"
    ));
    assert!(
        typo.iter().any(|p| p.contains("did you mean `name`")),
        "{typo:?}"
    );
}

#[test]
fn cluster_names_the_other_nodes() {
    let cfg = parse(&format!(
        "node_id = \"relay-1\"\n[cluster]\npeers = {{ relay-2 = \"10.0.0.12:8787\" }}\n\
         peer_address = \"{{node}}.relays.svc:8787\"\n{SH_TOOL}"
    ))
    .expect("valid")
    .config;
    assert_eq!(
        cfg.cluster.address_of("relay-2").as_deref(),
        Some("10.0.0.12:8787")
    );
    assert_eq!(
        cfg.cluster.address_of("relay-7").as_deref(),
        Some("relay-7.relays.svc:8787")
    );
    assert!(parse(SH_TOOL).expect("valid").config.cluster.is_empty());
    for (bad, why) in [
        ("peers = { \"a.b\" = \"h:1\" }", "cannot be a node id"),
        ("peers = { a = \"no-port\" }", "is not HOST:PORT"),
        (
            "peer_address = \"relays.svc:8787\"",
            "must contain `{node}`",
        ),
        (
            "peer_address = \"{node}.relays.svc\"",
            "`{node}.relays.svc` is not HOST:PORT",
        ),
    ] {
        let found = problems(&format!("[cluster]\n{bad}\n{SH_TOOL}"));
        assert_eq!(found.len(), 1, "{bad}: {found:?}");
        assert!(found[0].contains(why), "{bad}: {found:?}");
    }
}

//! Tests of the metrics that follow the config: the limits published at start and after a
//! reload.

use super::*;

fn tools(text: &str) -> Vec<crate::config::ToolConfig> {
    crate::config::Config::parse(text, std::path::Path::new("relay.toml"))
        .expect("valid")
        .config
        .tools
}

/// The tool limit lines, sorted (a family's order is not fixed).
fn tool_limits(m: &Metrics) -> Vec<String> {
    let mut out: Vec<String> = m
        .encode()
        .lines()
        .filter(|l| l.starts_with("mcp_bridge_tool_max_sessions{"))
        .map(str::to_owned)
        .collect();
    out.sort();
    out
}

#[test]
fn tool_limits_follow_a_reload() {
    let m = Metrics::new();
    let limits = crate::config::Limits::default();
    let tool = |name: &str, max: &str| {
        format!("[[tool]]\nname = \"{name}\"\ncommand = \"/bin/sh\"\n{max}\n")
    };
    let first = tools(&format!(
        "{}{}",
        tool("a", ""),
        tool("b", "max_sessions = 3")
    ));
    m.set_limits(&limits, &first);
    let all = limits.max_sessions;
    assert_eq!(
        tool_limits(&m),
        [
            format!("mcp_bridge_tool_max_sessions{{tool=\"a\"}} {all}"),
            "mcp_bridge_tool_max_sessions{tool=\"b\"} 3".to_owned(),
        ]
    );
    let second = tools(&format!(
        "{}{}",
        tool("b", "max_sessions = 5"),
        tool("c", "")
    ));
    m.set_tool_limits(&limits, &second, &["a", "b"]);
    assert_eq!(
        tool_limits(&m),
        [
            "mcp_bridge_tool_max_sessions{tool=\"b\"} 5".to_owned(),
            format!("mcp_bridge_tool_max_sessions{{tool=\"c\"}} {all}"),
        ]
    );
}

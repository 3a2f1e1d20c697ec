//! The alert rules through `promtool`: they load (`check rules`), and each alert fires on its
//! fixture series and stays quiet on the others (`test rules`).

use anyhow::Result;
use mcp_bridge_tests::{promtool, repo_root};

fn run(args: &[&str]) -> Result<()> {
    let out = promtool(args)?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {}:\n{text}", args.join(" "));
    println!("promtool {}: {}", args.join(" "), text.trim());
    Ok(())
}

#[test]
fn alert_rules_load_and_pass_their_fixtures() -> Result<()> {
    let dir = repo_root().join("deploy/prometheus");
    let rules = dir.join("alerts.yml");
    let tests = dir.join("alerts_test.yml");
    run(&["check", "rules", &rules.display().to_string()])?;
    run(&["test", "rules", &tests.display().to_string()])?;
    // Every alert has a fixture and a runbook entry.
    let text = std::fs::read_to_string(&rules)?;
    let fixtures = std::fs::read_to_string(&tests)?;
    let docs = std::fs::read_to_string(repo_root().join("docs/operations.md"))?;
    let alerts: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 8, "{alerts:?}");
    for a in alerts {
        assert!(
            fixtures.contains(&format!("alertname: {a}")),
            "{a}: no fixture"
        );
        assert!(
            docs.contains(&format!("#### {a}")),
            "{a}: no runbook in docs/operations.md"
        );
    }
    Ok(())
}

//! The dashboard file as data: its panels and queries (with Grafana's variables filled in as
//! Grafana would), and its structure checked.

use anyhow::{Context, Result};
use mcp_bridge_tests::repo_root;
use serde_json::Value;

/// The committed dashboard.
pub(super) fn load() -> Result<Value> {
    let path = repo_root().join("deploy/grafana/mcp-bridge.json");
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// One query of one panel.
#[derive(Debug, Clone)]
pub(super) struct Query {
    pub(super) panel: String,
    pub(super) expr: String,
}

/// Every panel that is not a row.
pub(super) fn panels(dash: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dash["panels"].as_array().into_iter().flatten() {
        if p["type"] == "row" {
            // A collapsed row keeps its panels inside.
            out.extend(p["panels"].as_array().into_iter().flatten());
        } else {
            out.push(p);
        }
    }
    out
}

/// Every query of every panel, in order.
pub(super) fn queries(dash: &Value) -> Vec<Query> {
    panels(dash)
        .into_iter()
        .flat_map(|p| {
            let panel = p["title"].as_str().unwrap_or("?").to_owned();
            p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(move |t| {
                    Some(Query {
                        panel: panel.clone(),
                        expr: t["expr"].as_str()?.to_owned(),
                    })
                })
        })
        .collect()
}

/// `expr` as Grafana sends it: `$instance` (multi-value, "All") as a regex alternation of the
/// escaped values, `$__rate_interval` as `rate_interval`.
pub(super) fn substitute(expr: &str, instances: &[String], rate_interval: &str) -> String {
    let alternatives: Vec<String> = instances.iter().map(|i| i.replace('.', "\\\\.")).collect();
    expr.replace("$__rate_interval", rate_interval)
        .replace("$instance", &format!("({})", alternatives.join("|")))
}

#[test]
fn the_dashboard_has_its_variables_and_every_panel_a_datasource_and_unit() -> Result<()> {
    let dash = load()?;
    let vars = dash["templating"]["list"]
        .as_array()
        .context("templating")?;
    let var = |name: &str| vars.iter().find(|v| v["name"] == name);
    let ds = var("datasource").context("no datasource variable")?;
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    let inst = var("instance").context("no instance variable")?;
    assert_eq!(inst["type"], "query");
    assert_eq!(inst["datasource"]["uid"], "${datasource}");
    assert_eq!(inst["includeAll"], true);
    assert_eq!(inst["multi"], true);
    assert!(inst["query"]["query"]
        .as_str()
        .is_some_and(|q| q.starts_with("label_values(mcp_bridge_")));

    let panels = panels(&dash);
    assert!(panels.len() >= 20, "{} panels", panels.len());
    let mut ids = std::collections::HashSet::new();
    for p in &panels {
        let title = p["title"].as_str().unwrap_or("?");
        assert!(ids.insert(p["id"].as_u64()), "{title}: duplicate panel id");
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        assert!(
            p["description"].as_str().is_some_and(|d| d.len() > 20),
            "{title}: no description"
        );
        assert!(
            p["fieldConfig"]["defaults"]["unit"]
                .as_str()
                .is_some_and(|u| !u.is_empty()),
            "{title}: no unit"
        );
        let targets = p["targets"].as_array().context("targets")?;
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
            let expr = t["expr"].as_str().unwrap_or("");
            assert!(!expr.contains("$datasource"), "{title}: {expr}");
            // Scoped to the chosen relays, unless it is a constant.
            assert!(expr.contains(r#"instance=~"$instance""#), "{title}: {expr}");
        }
        let gp = &p["gridPos"];
        assert!(
            gp["w"].as_u64().is_some_and(|w| w > 0 && w <= 24) && gp["h"].as_u64() > Some(0),
            "{title}: gridPos {gp}"
        );
    }
    // Every metric the dashboard reads is one the relay exports (documented in operations.md).
    let docs = std::fs::read_to_string(repo_root().join("docs/operations.md"))?;
    for q in queries(&dash) {
        for name in metric_names(&q.expr) {
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name);
            assert!(
                name == "up"
                    || docs.contains(&format!("`{base}`"))
                    || docs.contains(&format!("`{name}`")),
                "{}: `{name}` is not in docs/operations.md's metrics table",
                q.panel
            );
        }
    }
    Ok(())
}

/// The metric names in a query (identifiers followed by `{`).
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_alphabetic() || b[i] == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
                i += 1;
            }
            if b.get(i) == Some(&b'{') && (start == 0 || b[start - 1] != b'$') {
                out.push(expr[start..i].to_owned());
            }
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn variables_are_filled_in_as_grafana_does() {
    let got = substitute(
        r#"rate(x{instance=~"$instance"}[$__rate_interval])"#,
        &["127.0.0.1:1".into(), "127.0.0.1:2".into()],
        "30s",
    );
    assert_eq!(
        got,
        r#"rate(x{instance=~"(127\\.0\\.0\\.1:1|127\\.0\\.0\\.1:2)"}[30s])"#
    );
    assert_eq!(
        metric_names(r#"a_b{x="1"} / on (i) c:d{y="$z"} + sum(e)"#),
        ["a_b", "c:d"]
    );
}

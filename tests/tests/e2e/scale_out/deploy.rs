//! The deploy examples: the relay configs pass `bridge-server check-config`, the systemd unit
//! passes `systemd-analyze verify`, and the nginx config renders.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};
use mcp_bridge_tests::{bin, repo_root, TempDir};

use super::nginx::{render_nginx_conf, NGINX_CONF};

/// The relay configs shipped in deploy/ are valid (the sample, and the one in the Kubernetes
/// ConfigMap), the systemd unit passes `systemd-analyze verify`, and the nginx config renders
/// with every marked line understood.
#[test]
fn deploy_examples_pass_check_config() -> Result<()> {
    let root = repo_root();
    let dir = TempDir::new();
    let k8s = std::fs::read_to_string(root.join("deploy/kubernetes/configmap.yaml"))?;
    let k8s_toml = yaml_block(&k8s, "relay.toml:").context("relay.toml in the ConfigMap")?;
    let k8s_file = dir.path().join("k8s-relay.toml");
    std::fs::write(&k8s_file, k8s_toml)?;
    for file in [root.join("deploy/relay.example.toml"), k8s_file] {
        let out = Command::new(bin("bridge-server"))
            .arg("check-config")
            .arg(&file)
            .output()?;
        assert!(
            out.status.success(),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The systemd unit, where systemd's own checker is installed (the CI image has it; it is
    // a check of the file, not of a running systemd). ExecStart must name an existing program.
    let unit = std::fs::read_to_string(root.join("deploy/systemd/mcp-bridge.service"))?;
    let analyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    if let Some(analyze) = analyze {
        let unit_file = dir.path().join("mcp-bridge.service");
        let server = bin("bridge-server").display().to_string();
        std::fs::write(
            &unit_file,
            unit.replace("/usr/local/bin/bridge-server", &server),
        )?;
        let out = Command::new(analyze)
            .arg("verify")
            .arg(&unit_file)
            .output()?;
        assert!(
            out.status.success(),
            "systemd-analyze verify deploy/systemd/mcp-bridge.service: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        println!(
            "systemd-analyze is not installed: deploy/systemd/mcp-bridge.service not verified"
        );
    }

    let template = std::fs::read_to_string(root.join(NGINX_CONF))?;
    let a = SocketAddr::from(([127, 0, 0, 1], 1));
    let rendered = render_nginx_conf(&template, dir.path(), a, &[a, a])?;
    assert!(rendered.contains("hash $mcp_bridge_affinity consistent;"));
    assert!(!rendered.contains("10.0.0."), "{rendered}");
    Ok(())
}

/// The text of a YAML literal block (`key: |`), dedented.
fn yaml_block(yaml: &str, key: &str) -> Option<String> {
    let mut lines = yaml
        .lines()
        .skip_while(|l| !l.trim_start().starts_with(key));
    let head = lines.next()?;
    let key_indent = head.len() - head.trim_start().len();
    let body: Vec<&str> = lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > key_indent)
        .collect();
    let indent = body
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()?;
    Some(
        body.iter()
            .map(|l| l.get(indent..).unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

//! What an operator sees, checked against a real Prometheus (the Debian package, started by the
//! tests on loopback with a generated config):
//!
//! - `deploy/grafana/mcp-bridge.json` is a well-formed dashboard: the datasource and relay
//!   variables, every panel on the datasource variable, a unit on every panel;
//! - Prometheus scrapes two relays during a scripted workload (calls, a resume, a tool crash
//!   and the re-established session, rate-limited calls, a refused resume, a shed handshake, a
//!   wrong token), and every query of the dashboard runs through its HTTP API without error
//!   and returns series; the same Prometheus evaluates the alert rules on those series (every
//!   metric they read exported, every rule healthy, none pending or firing);
//! - `deploy/prometheus/alerts.yml` passes `promtool check rules`, and its fixtures
//!   (`alerts_test.yml`: each alert fires when it should and stays quiet when it should not)
//!   pass `promtool test rules`.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod dashboard;
mod live;
mod rules;

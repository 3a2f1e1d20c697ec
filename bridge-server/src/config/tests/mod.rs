//! The config reader's tests, by topic: how problems are reported (diagnostics), the relay's
//! own sections (server), and authentication (auth). Here: the helpers they share.

use std::path::Path;

use super::*;

mod auth;
mod diagnostics;
mod server;

fn parse(text: &str) -> Result<Loaded, ConfigError> {
    Config::parse(text, Path::new("relay.toml"))
}

/// Every problem, one line each.
fn problems(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(l) => panic!("expected errors, got a valid config ({:?})", l.warnings),
        Err(e) => e.problems().iter().map(ToString::to_string).collect(),
    }
}

const SH_TOOL: &str = "[[tool]]\nname = \"a\"\ncommand = \"/bin/sh\"\n";

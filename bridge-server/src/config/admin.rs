//! The `[admin]` section: the tokens of the session admin API (`[[admin.token]]`, each a name
//! for the audit log and a SHA-256 hash, never the token), and the rule that the API is served
//! only on the private `[metrics] listen` address. Serving the API is the `admin` module's job.

use std::net::SocketAddr;

use crate::auth::{AuthConfig, Grant, TokenEntry};

use super::diag::Problems;
use super::read::Section;

/// `[admin]`; no table (or an invalid one) means no admin API.
pub(super) fn admin(
    root: &Section<'_, '_>,
    metrics_listen: Option<SocketAddr>,
    auth: Option<&AuthConfig>,
    p: &mut Problems<'_>,
) -> Vec<TokenEntry> {
    let Some(a) = root.table("admin", p) else {
        return Vec::new();
    };
    a.only(&["token"], p);
    let tables = a.tables("token", p);
    if tables.is_empty() {
        a.missing(
            "token",
            "one or more [[admin.token]] tables with `name` and `sha256` (from \
             `bridge-server new-token admin.token`); without [admin] the admin API is off",
            p,
        );
        return Vec::new();
    }
    if metrics_listen.is_none() && !root.child("metrics").is_some_and(|m| m.has("listen")) {
        p.error(
            a.at(),
            a.name(),
            "the admin API is served only on the private metrics listener, and there is none: \
             set [metrics] listen = \"127.0.0.1:9090\" (or a private interface)",
        );
    }
    let user_hashes: Vec<[u8; 32]> = match auth {
        Some(AuthConfig::Tokens(entries)) => entries.iter().map(|e| e.sha256).collect(),
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    for t in &tables {
        t.only(&["name", "sha256"], p);
        let name = t.string("name", p);
        let sha256 = t.string("sha256", p);
        if !t.has("sha256") {
            t.missing("sha256", "the line `bridge-server new-token` printed", p);
        }
        let name = match name {
            Some((n, at)) if n.trim().is_empty() || n.chars().any(char::is_control) => {
                p.error(
                    at,
                    &t.key("name"),
                    "give a plain name (it names the admin in the audit log)",
                );
                None
            }
            Some((n, _)) => Some(n.to_owned()),
            None => Some("admin".to_owned()),
        };
        let hash = sha256.and_then(|(text, at)| match crate::auth::parse_hash(text) {
            None => {
                p.error(
                    at,
                    &t.key("sha256"),
                    "expected `sha256:` and 64 hex digits, as printed by `bridge-server \
                     new-token` or `bridge-server hash-token`; never the token itself",
                );
                None
            }
            Some(h) if user_hashes.contains(&h) => {
                p.error(
                    at,
                    &t.key("sha256"),
                    "this is also a user's token in [[auth.token]]: give the admin API a token \
                     of its own (`bridge-server new-token admin.token`)",
                );
                None
            }
            Some(h) => Some(h),
        });
        if let (Some(user), Some(sha256)) = (name, hash) {
            out.push(TokenEntry {
                user,
                sha256,
                grant: Grant::Only(Default::default()),
                groups: Vec::new(),
            });
        }
    }
    out
}

//! The `[admin]` section: the tokens of the session admin API (`[[admin.token]]`, each a name
//! for the audit log and a SHA-256 hash, never the token), and the rule that the API is served
//! only on the private `[metrics] listen` address. Serving the API is the `admin` module's job.

use std::net::SocketAddr;

use crate::auth::{AuthConfig, Grant, TokenEntry};

use super::auth::token_hash;
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
        let sha256 = token_hash(t, p);
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
        let hash = sha256.and_then(|(h, at)| {
            if user_hashes.contains(&h) {
                p.error(
                    at,
                    &t.key("sha256"),
                    "this is also a user's token in [[auth.token]]: give the admin API a token \
                     of its own (`bridge-server new-token admin.token`)",
                );
                return None;
            }
            Some(h)
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

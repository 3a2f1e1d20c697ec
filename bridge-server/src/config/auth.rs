//! The `[auth]` section: no authentication, static tokens (`[[auth.token]]`), or JWTs
//! (`[auth.jwt]`).

use std::path::Path;

use crate::auth::{AuthConfig, Grant, JwtConfig, TokenEntry};

use super::diag::Problems;
use super::read::Section;
use super::server::resolve;

const MODES: &str = "use \"none\", \"tokens\" or \"jwt\"";

/// `[auth]`; no table means no authentication. `None` when the section has errors.
pub(super) fn auth(
    root: &Section<'_, '_>,
    base: &Path,
    p: &mut Problems<'_>,
) -> Option<AuthConfig> {
    if !root.has("auth") {
        return Some(AuthConfig::None);
    }
    let a = root.table("auth", p)?;
    a.only(&["mode", "token", "jwt"], p);
    let tokens = a.tables("token", p);
    let jwt = a.table("jwt", p);
    if !a.has("mode") {
        a.missing("mode", "one of \"none\", \"tokens\" or \"jwt\"", p);
        return None;
    }
    let (mode, at) = a.string("mode", p)?;
    // Tables another mode would use are not read: say so, rather than leave them looking live.
    let known = matches!(mode, "none" | "tokens" | "jwt");
    if let (Some(t), true) = (tokens.first(), known && mode != "tokens") {
        p.warn(
            t.at(),
            &a.key("token"),
            format!("ignored: [[auth.token]] tables are used with mode \"tokens\", and mode is \"{mode}\""),
        );
    }
    if let (Some(j), true) = (&jwt, known && mode != "jwt") {
        p.warn(
            j.at(),
            j.name(),
            format!("ignored: [auth.jwt] is used with mode \"jwt\", and mode is \"{mode}\""),
        );
    }
    match mode {
        "none" => Some(AuthConfig::None),
        "tokens" => {
            if tokens.is_empty() {
                p.error(
                    at,
                    &a.key("mode"),
                    "mode \"tokens\" needs at least one [[auth.token]] table with `user`, \
                     `sha256` and `tools`",
                );
                return None;
            }
            let mut entries = Vec::new();
            for t in &tokens {
                entries.push(token(t, p));
            }
            entries
                .into_iter()
                .collect::<Option<Vec<_>>>()
                .map(AuthConfig::Tokens)
        }
        "jwt" => match &jwt {
            Some(j) => self::jwt(j, base, p).map(|j| AuthConfig::Jwt(Box::new(j))),
            None => {
                p.error(
                    at,
                    &a.key("mode"),
                    "mode \"jwt\" needs an [auth.jwt] table with `issuer` and `audience`",
                );
                None
            }
        },
        other => {
            p.error(
                at,
                &a.key("mode"),
                format!("`{other}` is not a mode: {MODES}"),
            );
            None
        }
    }
}

/// One `[[auth.token]]`.
fn token(t: &Section<'_, '_>, p: &mut Problems<'_>) -> Option<TokenEntry> {
    t.only(&["user", "sha256", "tools", "groups"], p);
    let user = t.string("user", p);
    let sha256 = t.string("sha256", p);
    let tools = t.strings("tools", p);
    let groups = t.strings("groups", p);
    if !t.has("user") {
        t.missing("user", "the user's name (for the audit log and limits)", p);
    }
    if !t.has("sha256") {
        t.missing("sha256", "the line `bridge-server new-token` printed", p);
    }
    let user = match user {
        Some((u, at)) if u.trim().is_empty() => {
            p.error(at, &t.key("user"), "is empty: give the user's name");
            None
        }
        other => other,
    };
    let sha256 = sha256.and_then(|(text, at)| {
        let hash = crate::auth::parse_hash(text);
        if hash.is_none() {
            p.error(
                at,
                &t.key("sha256"),
                "expected `sha256:` and 64 hex digits, as printed by `bridge-server new-token` \
                 or `bridge-server hash-token`; never the token itself",
            );
        }
        hash
    });
    Some(TokenEntry {
        user: user?.0.to_owned(),
        sha256: sha256?,
        grant: Grant::from_names(tools.unwrap_or_default()),
        groups: groups.unwrap_or_default(),
    })
}

/// `[auth.jwt]`.
fn jwt(j: &Section<'_, '_>, base: &Path, p: &mut Problems<'_>) -> Option<JwtConfig> {
    j.only(
        &[
            "issuer",
            "audience",
            "leeway_s",
            "hs256_secret_env",
            "jwks_file",
            "user_claim",
            "tools_claim",
            "groups_claim",
        ],
        p,
    );
    let issuer = j.string("issuer", p);
    let audience = j.string("audience", p);
    if !j.has("issuer") {
        j.missing("issuer", "the `iss` every token must carry", p);
    }
    if !j.has("audience") {
        j.missing("audience", "the `aud` every token must carry", p);
    }
    let leeway_s = j.uint("leeway_s", p).map_or(30, |(n, _)| n);
    let user_claim = j.string("user_claim", p).map_or("sub", |(s, _)| s);
    let tools_claim = j.string("tools_claim", p).map_or("mcp_tools", |(s, _)| s);
    let groups_claim = j.string("groups_claim", p).map_or("groups", |(s, _)| s);
    let hs256_secret =
        j.string("hs256_secret_env", p)
            .and_then(|(var, at)| match std::env::var(var) {
                Ok(v) if !v.is_empty() => Some(v.into_bytes()),
                _ => {
                    p.error(
                        at,
                        &j.key("hs256_secret_env"),
                        format!(
                            "environment variable `{var}` is not set: set it to the HS256 secret \
                         in the relay's environment"
                        ),
                    );
                    None
                }
            });
    let jwks = j.string("jwks_file", p).and_then(|(file, at)| {
        let f = resolve(base, Path::new(file));
        let key = j.key("jwks_file");
        let text = std::fs::read_to_string(&f)
            .map_err(|e| {
                p.error(
                    at.clone(),
                    &key,
                    format!("cannot read {}: {e}", f.display()),
                )
            })
            .ok()?;
        serde_json::from_str(&text)
            .map_err(|e| p.error(at, &key, format!("{} is not a JWKS: {e}", f.display())))
            .ok()
    });
    if !j.has("hs256_secret_env") && !j.has("jwks_file") {
        p.error(
            j.at(),
            j.name(),
            "set `hs256_secret_env` (HS256) or `jwks_file` (RS256/ES256)",
        );
    }
    if hs256_secret.is_none() && jwks.is_none() {
        return None;
    }
    Some(JwtConfig {
        issuer: issuer?.0.to_owned(),
        audience: audience?.0.to_owned(),
        leeway_s,
        hs256_secret,
        jwks,
        user_claim: user_claim.to_owned(),
        tools_claim: tools_claim.to_owned(),
        groups_claim: groups_claim.to_owned(),
    })
}

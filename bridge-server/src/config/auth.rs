//! The `[auth]` section: no authentication, static tokens (`[[auth.token]]`), or JWTs
//! (`[auth.jwt]`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::keys::{allowed_url, parse_jwks, CachePolicy, RemoteKeys};
use crate::auth::{
    AuthConfig, CertEntry, Grant, JwtConfig, KeySource, ResourceConfig, ScopeMap, TokenEntry,
};

use super::diag::Problems;
use super::read::Section;
use super::server::resolve;
use super::OnRevoke;

const MODES: &str = "use \"none\", \"tokens\", \"jwt\" or \"mtls\"";

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
    a.only(&["mode", "token", "jwt", "cert", "on_revoke"], p);
    let tokens = a.tables("token", p);
    let certs = a.tables("cert", p);
    let jwt = a.table("jwt", p);
    if !a.has("mode") {
        a.missing(
            "mode",
            "one of \"none\", \"tokens\", \"jwt\" or \"mtls\"",
            p,
        );
        return None;
    }
    let (mode, at) = a.string("mode", p)?;
    // Tables another mode would use are not read: say so, rather than leave them looking live.
    let known = matches!(mode, "none" | "tokens" | "jwt" | "mtls");
    if let (Some(c), true) = (certs.first(), known && mode != "mtls") {
        p.warn(
            c.at(),
            &a.key("cert"),
            format!(
                "ignored: [[auth.cert]] tables are used with mode \"mtls\", and mode is \"{mode}\""
            ),
        );
    }
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
        "mtls" => {
            if certs.is_empty() {
                p.error(
                    at,
                    &a.key("mode"),
                    "mode \"mtls\" needs at least one [[auth.cert]] table with `user`, \
                     `subject_cn` or `san`, and `tools` (and [tls] client_ca)",
                );
                return None;
            }
            let entries: Vec<_> = certs.iter().map(|c| cert(c, p)).collect();
            entries
                .into_iter()
                .collect::<Option<Vec<_>>>()
                .map(AuthConfig::Certs)
        }
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
                    "mode \"jwt\" needs an [auth.jwt] table with at least `issuer`",
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

/// `user`: the name a token or certificate stands for. `None` (reported) when missing or blank.
fn user(s: &Section<'_, '_>, p: &mut Problems<'_>) -> Option<String> {
    if !s.has("user") {
        s.missing("user", "the user's name (for the audit log and limits)", p);
    }
    match s.string("user", p)? {
        (u, at) if u.trim().is_empty() => {
            p.error(at, &s.key("user"), "is empty: give the user's name");
            None
        }
        (u, _) => Some(u.to_owned()),
    }
}

/// `sha256`: a token's hash as `bridge-server new-token` prints it (never the token), with
/// where it is written. `None` (reported) when missing or malformed.
pub(super) fn token_hash(
    t: &Section<'_, '_>,
    p: &mut Problems<'_>,
) -> Option<([u8; 32], std::ops::Range<usize>)> {
    if !t.has("sha256") {
        t.missing("sha256", "the line `bridge-server new-token` printed", p);
    }
    let (text, at) = t.string("sha256", p)?;
    match crate::auth::parse_hash(text) {
        Some(hash) => Some((hash, at)),
        None => {
            p.error(
                at,
                &t.key("sha256"),
                "expected `sha256:` and 64 hex digits, as printed by `bridge-server new-token` \
                 or `bridge-server hash-token`; never the token itself",
            );
            None
        }
    }
}

/// One `[[auth.cert]]`.
fn cert(c: &Section<'_, '_>, p: &mut Problems<'_>) -> Option<CertEntry> {
    c.only(&["user", "subject_cn", "san", "tools", "groups"], p);
    let user = user(c, p);
    let cn = c.string("subject_cn", p).map(|(s, _)| s.to_owned());
    let san = c.string("san", p).map(|(s, _)| s.to_owned());
    let tools = c.strings("tools", p);
    let groups = c.strings("groups", p);
    if !c.has("subject_cn") && !c.has("san") {
        p.error(
            c.at(),
            c.name(),
            "set `subject_cn` (the certificate subject's common name) or `san` (a DNS name, \
             email or URI in its subject alternative names)",
        );
        return None;
    }
    Some(CertEntry {
        user: user?,
        subject_cn: cn,
        san,
        grant: Grant::from_names(tools.unwrap_or_default()),
        groups: groups.unwrap_or_default(),
    })
}

/// One `[[auth.token]]`.
fn token(t: &Section<'_, '_>, p: &mut Problems<'_>) -> Option<TokenEntry> {
    t.only(&["user", "sha256", "tools", "groups"], p);
    let user = user(t, p);
    let sha256 = token_hash(t, p);
    let tools = t.strings("tools", p);
    let groups = t.strings("groups", p);
    Some(TokenEntry {
        user: user?,
        sha256: sha256?.0,
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
            "jwks_url",
            "jwks_refresh_s",
            "jwks_min_refetch_s",
            "ca_file",
            "user_claim",
            "tools_claim",
            "groups_claim",
            "scope_claim",
            "scopes",
            "resource_url",
            "authorization_servers",
        ],
        p,
    );
    let issuer = j.string("issuer", p);
    if !j.has("issuer") {
        j.missing(
            "issuer",
            "the identity provider's issuer URL, as its tokens carry it in `iss`",
            p,
        );
    }
    let audience = match j.peek_string("audience") {
        Some((a, _)) => Some(vec![a.to_owned()]),
        None => j.strings("audience", p),
    }
    .unwrap_or_default();
    let leeway_s = j.uint("leeway_s", p).map_or(30, |(n, _)| n);
    let user_claim = j.string("user_claim", p).map_or("sub", |(s, _)| s);
    let tools_claim = j.string("tools_claim", p).map_or("mcp_tools", |(s, _)| s);
    let groups_claim = j.string("groups_claim", p).map_or("groups", |(s, _)| s);
    let scope_claim = j.string("scope_claim", p).map_or("scope", |(s, _)| s);
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
    let scopes = scope_map(j, p);
    let resource = resource(j, p);
    let keys = keys(j, issuer.as_ref().map(|(i, at)| (*i, at.clone())), base, p);
    if j.has("hs256_secret_env") && hs256_secret.is_none() {
        return None;
    }
    Some(JwtConfig {
        issuer: issuer?.0.to_owned(),
        audience,
        leeway_s,
        hs256_secret,
        keys: keys?,
        user_claim: user_claim.to_owned(),
        tools_claim: tools_claim.to_owned(),
        groups_claim: groups_claim.to_owned(),
        scope_claim: scope_claim.to_owned(),
        scopes: scopes?,
        resource: resource?,
    })
}

/// Where RS256/ES256 keys come from: `jwks_file`; else `jwks_url` or discovery from `issuer`
/// (unless only `hs256_secret_env` is set). `None` when that part has errors.
fn keys(
    j: &Section<'_, '_>,
    issuer: Option<(&str, std::ops::Range<usize>)>,
    base: &Path,
    p: &mut Problems<'_>,
) -> Option<KeySource> {
    let refresh = j.uint("jwks_refresh_s", p).map(|(n, _)| n);
    let min_refetch = j.uint("jwks_min_refetch_s", p).map(|(n, _)| n);
    let ca_file = j
        .string("ca_file", p)
        .map(|(f, at)| (resolve(base, Path::new(f)), at));
    let jwks_url = j.string("jwks_url", p);
    if let Some((file, at)) = j.string("jwks_file", p) {
        if let Some((_, url_at)) = &jwks_url {
            p.error(
                url_at.clone(),
                &j.key("jwks_url"),
                "set `jwks_file` or `jwks_url`, not both",
            );
            return None;
        }
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
        // The same reading as a fetched key set: keys the relay cannot verify with are left
        // out (and named in a warning); a file left with none is an error.
        return match parse_jwks(text.as_bytes()) {
            Ok((set, skipped)) => {
                if skipped > 0 {
                    p.warn(
                        at,
                        &key,
                        format!(
                            "{skipped} of the keys in {} are left out: of a type or algorithm \
                             the relay cannot verify with, or for encryption (`use: enc`)",
                            f.display()
                        ),
                    );
                }
                Some(KeySource::File(set))
            }
            Err(e) => {
                p.error(
                    at,
                    &key,
                    format!(
                        "{} is not a JWKS with a usable signing key: {e}; give it at least one \
                         RSA, EC, OKP or oct key for signatures",
                        f.display()
                    ),
                );
                None
            }
        };
    }
    if j.has("hs256_secret_env") && jwks_url.is_none() {
        return Some(KeySource::None);
    }
    let (issuer, issuer_at) = issuer?;
    let url = |text: &str, at: std::ops::Range<usize>, key: &str, p: &mut Problems<'_>| {
        match url::Url::parse(text) {
            Ok(u) if allowed_url(&u) => Some(u),
            _ => {
                p.error(
                    at,
                    &j.key(key),
                    format!(
                        "`{text}` is not an https URL (plain http only to a loopback host): the \
                         relay fetches the identity provider's keys from it"
                    ),
                );
                None
            }
        }
    };
    url(issuer, issuer_at, "issuer", p)?;
    let jwks_url = match jwks_url {
        Some((u, at)) => Some(url(u, at, "jwks_url", p)?),
        None => None,
    };
    let defaults = CachePolicy::default();
    let policy = CachePolicy {
        refresh: refresh.map_or(defaults.refresh, |s| Duration::from_secs(s.max(10))),
        min_refetch: min_refetch.map_or(defaults.min_refetch, Duration::from_secs),
        retry: defaults.retry,
    };
    let ca = ca_file.as_ref();
    match RemoteKeys::new(issuer, jwks_url, ca.map(|(f, _)| f.as_path()), policy) {
        Ok(k) => Some(KeySource::Remote(Arc::new(k))),
        Err(e) => {
            let at = ca.map_or(j.at(), |(_, at)| at.clone());
            p.error(at, &j.key("ca_file"), e.to_string());
            None
        }
    }
}

/// `[auth.jwt.scopes]`: scope → tools (`["*"]` for all). `Some(None)` when not set.
fn scope_map(j: &Section<'_, '_>, p: &mut Problems<'_>) -> Option<Option<ScopeMap>> {
    if !j.has("scopes") {
        return Some(None);
    }
    let lists = j.string_lists("scopes", p)?;
    if lists.is_empty() {
        p.error(
            j.span("scopes"),
            &j.key("scopes"),
            "is empty: map at least one scope to tools (`\"mcp:time\" = [\"time\"]`), or \
             leave the table out to grant tools by `tools_claim`",
        );
        return None;
    }
    Some(Some(ScopeMap(
        lists
            .into_iter()
            .map(|(scope, tools)| (scope, Grant::from_names(tools)))
            .collect(),
    )))
}

/// `resource_url` and `authorization_servers`.
fn resource(j: &Section<'_, '_>, p: &mut Problems<'_>) -> Option<ResourceConfig> {
    let url = match j.string("resource_url", p) {
        Some((u, at)) => {
            let ok = url::Url::parse(u).is_ok_and(|v| {
                matches!(v.scheme(), "https" | "http")
                    && v.host().is_some()
                    && v.path().trim_end_matches('/').is_empty()
                    && v.query().is_none()
            });
            if !ok {
                p.error(
                    at,
                    &j.key("resource_url"),
                    format!(
                        "`{u}` is not an origin: give the relay's public URL as clients reach it, \
                         scheme, host and port only (https://relay.example.com)"
                    ),
                );
                return None;
            }
            Some(u.trim_end_matches('/').to_owned())
        }
        None => None,
    };
    let authorization_servers = j.strings("authorization_servers", p).unwrap_or_default();
    Some(ResourceConfig {
        url,
        authorization_servers,
    })
}

/// `[auth] on_revoke`: what a reload does to a live session whose static token (or its grant
/// of the session's tool) was removed: `"end"` (default) or `"next_call"`.
pub(super) fn on_revoke(root: &Section<'_, '_>, p: &mut Problems<'_>) -> OnRevoke {
    let Some(a) = root.child("auth") else {
        return OnRevoke::End;
    };
    let Some((text, at)) = a.string("on_revoke", p) else {
        return OnRevoke::End;
    };
    match text {
        "end" => OnRevoke::End,
        "next_call" => OnRevoke::NextCall,
        other => {
            p.error(
                at,
                &a.key("on_revoke"),
                format!("`{other}` is not a choice: write \"end\" (at once) or \"next_call\""),
            );
            OnRevoke::End
        }
    }
}

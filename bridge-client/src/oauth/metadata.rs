//! Discovery documents, sans-IO: where to look (RFC 9728 protected-resource metadata, RFC 8414
//! and OpenID discovery for the authorization server, in the MCP spec's order) and whether what
//! came back may be used (resource and issuer checks, PKCE S256, https endpoints). Fetching
//! them is [`super::http`]'s job.

use serde::Deserialize;
use url::Url;

use super::AuthError;

/// RFC 9728 §2, the fields we use.
#[derive(Debug, Clone, Deserialize)]
pub struct ResourceMetadata {
    /// The protected resource's identifier (the `resource` parameter we send).
    pub resource: String,
    /// Issuers of the authorization servers that protect it.
    #[serde(default)]
    pub authorization_servers: Vec<String>,
    /// Scopes the resource understands.
    #[serde(default)]
    pub scopes_supported: Option<Vec<String>>,
}

/// RFC 8414 §2 (and OpenID discovery), the fields we use.
#[derive(Debug, Clone, Deserialize)]
pub struct ServerMetadata {
    /// Must equal the issuer we looked up.
    pub issuer: String,
    /// Where the browser goes.
    pub authorization_endpoint: Option<String>,
    /// Where codes and refresh tokens are exchanged.
    pub token_endpoint: String,
    /// RFC 7591 dynamic registration.
    #[serde(default)]
    pub registration_endpoint: Option<String>,
    /// RFC 8628 device grant.
    #[serde(default)]
    pub device_authorization_endpoint: Option<String>,
    /// RFC 7009 token revocation (used by `logout`).
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
    /// Must hold `S256`.
    #[serde(default)]
    pub code_challenge_methods_supported: Vec<String>,
    /// Absent means `client_secret_basic` (RFC 8414 §2).
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
    /// RFC 9207: the redirect carries `iss`.
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
    /// Client ID Metadata Documents accepted as client ids.
    #[serde(default)]
    pub client_id_metadata_document_supported: bool,
}

/// The well-known URLs of a resource's metadata, in the order to try: path-inserted, then the
/// root (RFC 9728 §3.1). A server at the root has only one.
pub fn resource_metadata_urls(server: &Url) -> Vec<Url> {
    const WK: &str = "/.well-known/oauth-protected-resource";
    let mut out = Vec::new();
    let path = server.path().trim_end_matches('/');
    let mut base = server.clone();
    base.set_query(None);
    base.set_fragment(None);
    if !path.is_empty() {
        let mut u = base.clone();
        u.set_path(&format!("{WK}{path}"));
        out.push(u);
    }
    let mut u = base;
    u.set_path(WK);
    out.push(u);
    out
}

/// The authorization server's metadata URLs, in the MCP spec's order (RFC 8414 §3.1 with path
/// insertion, then OpenID discovery inserted, then appended).
pub fn server_metadata_urls(issuer: &Url) -> Vec<Url> {
    const OAUTH: &str = "/.well-known/oauth-authorization-server";
    const OIDC: &str = "/.well-known/openid-configuration";
    let path = issuer.path().trim_end_matches('/');
    let mut base = issuer.clone();
    base.set_query(None);
    base.set_fragment(None);
    let at = |p: String| {
        let mut u = base.clone();
        u.set_path(&p);
        u
    };
    if path.is_empty() {
        vec![at(OAUTH.into()), at(OIDC.into())]
    } else {
        vec![
            at(format!("{OAUTH}{path}")),
            at(format!("{OIDC}{path}")),
            at(format!("{path}{OIDC}")),
        ]
    }
}

/// A URL we may send credentials to: https, or http to a loopback host (development and
/// tests). `what` names it in the error.
pub fn check_endpoint(url: &str, what: &str) -> Result<Url, AuthError> {
    let u = Url::parse(url)
        .map_err(|e| AuthError::Metadata(format!("the {what} {url:?} is not a URL: {e}")))?;
    match u.scheme() {
        "https" => Ok(u),
        "http" if is_loopback(&u) => Ok(u),
        _ => Err(AuthError::Metadata(format!(
            "the {what} {u} is not https: refusing to send credentials over it"
        ))),
    }
}

/// True for `localhost`, 127.0.0.0/8 and `::1`.
pub fn is_loopback(u: &Url) -> bool {
    match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    }
}

/// RFC 9728 §3.3: the metadata's `resource` must name the server we talk to — the same origin,
/// and a path that is the server's path or a parent of it at a segment boundary.
pub fn check_resource(meta: &ResourceMetadata, server: &Url) -> Result<Url, AuthError> {
    let bad = |why: &str| {
        AuthError::Metadata(format!(
            "the protected-resource metadata for {server} names the resource {:?}, {why}: \
             refusing to sign in for another server",
            meta.resource
        ))
    };
    let r = Url::parse(&meta.resource).map_err(|_| bad("which is not a URL"))?;
    if r.origin() != server.origin() {
        return Err(bad("on another origin"));
    }
    let rp = r.path().trim_end_matches('/');
    let sp = server.path().trim_end_matches('/');
    let parent = sp == rp || (sp.starts_with(rp) && sp.as_bytes().get(rp.len()) == Some(&b'/'));
    if !parent {
        return Err(bad("whose path does not contain the server's"));
    }
    Ok(r)
}

impl ServerMetadata {
    /// RFC 8414 §3.3: the issuer is exactly the one we looked up (no normalization), the
    /// endpoints are https, and PKCE S256 is offered (the MCP spec: refuse otherwise).
    pub fn validate(&self, expected_issuer: &str) -> Result<(), AuthError> {
        if self.issuer != expected_issuer {
            return Err(AuthError::Metadata(format!(
                "the authorization server metadata for {expected_issuer} names the issuer {:?}: \
                 refusing to use it (RFC 8414 §3.3)",
                shared::log_safe(&self.issuer)
            )));
        }
        if !self
            .code_challenge_methods_supported
            .iter()
            .any(|m| m == "S256")
        {
            return Err(AuthError::Unsupported(format!(
                "the authorization server {expected_issuer} does not offer PKCE with S256 \
                 (code_challenge_methods_supported: {:?}); the MCP authorization spec forbids \
                 signing in without it: ask the provider to enable PKCE",
                self.code_challenge_methods_supported
            )));
        }
        check_endpoint(&self.token_endpoint, "token endpoint")?;
        for (u, what) in [
            (&self.authorization_endpoint, "authorization endpoint"),
            (&self.registration_endpoint, "registration endpoint"),
            (
                &self.device_authorization_endpoint,
                "device authorization endpoint",
            ),
        ] {
            if let Some(u) = u {
                check_endpoint(u, what)?;
            }
        }
        Ok(())
    }

    /// Whether the token endpoint takes `method` (absent list: only `client_secret_basic`).
    pub fn accepts_auth(&self, method: &str) -> bool {
        match &self.token_endpoint_auth_methods_supported {
            Some(list) => list.iter().any(|m| m == method),
            None => method == "client_secret_basic",
        }
    }
}

/// Scope selection (MCP spec): the challenge's `scope`, else every `scopes_supported` of the
/// resource, else none (the parameter left out).
pub fn select_scope(challenge: Option<&str>, meta: &ResourceMetadata) -> Option<String> {
    if let Some(s) = challenge.map(str::trim).filter(|s| !s.is_empty()) {
        return Some(s.to_owned());
    }
    meta.scopes_supported
        .as_ref()
        .filter(|s| !s.is_empty())
        .map(|s| s.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    fn strs(v: Vec<Url>) -> Vec<String> {
        v.into_iter().map(String::from).collect()
    }

    #[test]
    fn resource_metadata_path_inserted_then_root() {
        assert_eq!(
            strs(resource_metadata_urls(&u(
                "https://mcp.example.com/public/mcp?x=1"
            ))),
            [
                "https://mcp.example.com/.well-known/oauth-protected-resource/public/mcp",
                "https://mcp.example.com/.well-known/oauth-protected-resource"
            ]
        );
        assert_eq!(
            strs(resource_metadata_urls(&u("http://127.0.0.1:8/"))),
            ["http://127.0.0.1:8/.well-known/oauth-protected-resource"]
        );
    }

    #[test]
    fn server_metadata_order() {
        assert_eq!(
            strs(server_metadata_urls(&u("https://auth.example.com/tenant1"))),
            [
                "https://auth.example.com/.well-known/oauth-authorization-server/tenant1",
                "https://auth.example.com/.well-known/openid-configuration/tenant1",
                "https://auth.example.com/tenant1/.well-known/openid-configuration"
            ]
        );
        assert_eq!(
            strs(server_metadata_urls(&u("https://auth.example.com"))),
            [
                "https://auth.example.com/.well-known/oauth-authorization-server",
                "https://auth.example.com/.well-known/openid-configuration"
            ]
        );
    }

    fn server(issuer: &str, pkce: &[&str]) -> ServerMetadata {
        serde_json::from_value(serde_json::json!({
            "issuer": issuer,
            "authorization_endpoint": "https://auth.example.com/authorize",
            "token_endpoint": "https://auth.example.com/token",
            "code_challenge_methods_supported": pkce,
        }))
        .unwrap()
    }

    #[test]
    fn issuer_must_match_exactly() {
        assert!(server("https://auth.example.com", &["S256"])
            .validate("https://auth.example.com")
            .is_ok());
        for other in [
            "https://auth.example.com/",
            "https://AUTH.example.com",
            "https://evil",
        ] {
            let e = server(other, &["S256"]).validate("https://auth.example.com");
            assert!(matches!(e, Err(AuthError::Metadata(_))), "{other}");
        }
    }

    #[test]
    fn pkce_s256_required() {
        for m in [&[][..], &["plain"][..]] {
            let e = server("https://a", m).validate("https://a").unwrap_err();
            assert!(e.to_string().contains("PKCE"), "{e}");
        }
    }

    #[test]
    fn endpoints_https_unless_loopback() {
        let mut m = server("https://a", &["S256"]);
        m.token_endpoint = "http://auth.example.com/token".into();
        assert!(m.validate("https://a").is_err());
        m.token_endpoint = "http://127.0.0.1:9/token".into();
        assert!(m.validate("https://a").is_ok());
    }

    #[test]
    fn resource_must_contain_the_server() {
        let meta = |r: &str| ResourceMetadata {
            resource: r.into(),
            authorization_servers: vec![],
            scopes_supported: None,
        };
        let s = u("https://mcp.example.com/api/mcp");
        assert!(check_resource(&meta("https://mcp.example.com/api/mcp"), &s).is_ok());
        assert!(check_resource(&meta("https://mcp.example.com/api"), &s).is_ok());
        assert!(check_resource(&meta("https://mcp.example.com"), &s).is_ok());
        assert!(check_resource(&meta("https://mcp.example.com/ap"), &s).is_err());
        assert!(check_resource(&meta("https://other.example.com/api/mcp"), &s).is_err());
        assert!(check_resource(&meta("http://mcp.example.com/api/mcp"), &s).is_err());
    }

    #[test]
    fn scope_selection() {
        let mut meta = ResourceMetadata {
            resource: "https://r".into(),
            authorization_servers: vec![],
            scopes_supported: Some(vec!["a".into(), "b".into()]),
        };
        assert_eq!(select_scope(Some("x y"), &meta).as_deref(), Some("x y"));
        assert_eq!(select_scope(None, &meta).as_deref(), Some("a b"));
        meta.scopes_supported = None;
        assert_eq!(select_scope(Some(" "), &meta), None);
    }

    #[test]
    fn auth_methods_default_to_basic() {
        let m = server("https://a", &["S256"]);
        assert!(m.accepts_auth("client_secret_basic"));
        assert!(!m.accepts_auth("none"));
    }
}

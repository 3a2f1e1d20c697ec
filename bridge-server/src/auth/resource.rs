//! The relay as an OAuth 2.1 protected resource, as the MCP authorization spec asks: its
//! canonical URIs (the relay's, and one per tool at `/mcp/<tool>`), their Protected Resource
//! Metadata (RFC 9728, at the well-known path with the resource's path inserted), and the
//! `WWW-Authenticate` challenges of its 401 and 403 answers. Not responsible for checking
//! tokens (`jwt`) or for serving HTTP.

use std::net::SocketAddr;

use serde_json::{json, Value};

use super::{JwtConfig, ScopeMap};

/// The well-known path of protected-resource metadata (RFC 9728 §3).
pub const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// `[auth.jwt]`'s resource settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceConfig {
    /// The relay's canonical URL, an origin (`https://relay.example.com`); `None`: the address
    /// it serves (`https://` with TLS).
    pub url: Option<String>,
    /// Authorization servers to publish; empty: the issuer.
    pub authorization_servers: Vec<String>,
}

/// What the relay publishes, fixed at start.
#[derive(Debug, Clone)]
pub struct Resource {
    /// The relay's canonical URI, without a trailing slash.
    base: String,
    authorization_servers: Vec<String>,
    scopes: Option<ScopeMap>,
}

/// A challenge's error (RFC 6750 §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeError<'a> {
    /// No credentials were sent: no error code.
    None,
    /// `invalid_token`, with a short machine-readable description.
    InvalidToken(&'a str),
    /// `insufficient_scope`.
    InsufficientScope,
}

impl Resource {
    /// The resource of a relay checking JWTs with `cfg`, serving `served` (with TLS or not).
    pub fn new(cfg: &JwtConfig, served: SocketAddr, tls: bool) -> Resource {
        let base = match &cfg.resource.url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => format!("{}://{served}", if tls { "https" } else { "http" }),
        };
        let authorization_servers = if cfg.resource.authorization_servers.is_empty() {
            vec![cfg.issuer.clone()]
        } else {
            cfg.resource.authorization_servers.clone()
        };
        Resource {
            base,
            authorization_servers,
            scopes: cfg.scopes.clone(),
        }
    }

    /// The relay's canonical URI.
    pub fn relay_uri(&self) -> &str {
        &self.base
    }

    /// A tool's canonical URI: where its MCP endpoint is.
    pub fn tool_uri(&self, tool: &str) -> String {
        format!("{}/mcp/{tool}", self.base)
    }

    /// The audiences a token for `tool` may carry: the tool's URI, or the relay's.
    pub fn audiences(&self, tool: &str) -> Vec<String> {
        vec![self.tool_uri(tool), self.base.clone()]
    }

    /// Where the metadata of `tool` (or, with `None`, the relay's) is published.
    pub fn metadata_url(&self, tool: Option<&str>) -> String {
        match tool {
            Some(t) => format!("{}{METADATA_PATH}/mcp/{t}", self.base),
            None => format!("{}{METADATA_PATH}", self.base),
        }
    }

    /// The scopes that grant `tool` (all mapped scopes for the relay); empty when scopes are
    /// not mapped.
    pub fn scopes(&self, tool: Option<&str>) -> Vec<&str> {
        match (&self.scopes, tool) {
            (Some(m), Some(t)) => m.granting(t),
            (Some(m), None) => m.all(),
            (None, _) => Vec::new(),
        }
    }

    /// The RFC 9728 metadata document of `tool` (or of the relay).
    pub fn metadata(&self, tool: Option<&str>) -> Value {
        let resource = match tool {
            Some(t) => self.tool_uri(t),
            None => self.base.clone(),
        };
        let mut doc = json!({
            "resource": resource,
            "authorization_servers": self.authorization_servers,
            "bearer_methods_supported": ["header"],
            "resource_name": match tool {
                Some(t) => format!("mcp-bridge tool {t}"),
                None => "mcp-bridge relay".to_owned(),
            },
        });
        let scopes = self.scopes(tool);
        if !scopes.is_empty() {
            doc["scopes_supported"] = json!(scopes);
        }
        doc
    }

    /// The `WWW-Authenticate` value for a refusal at `tool`'s endpoint.
    pub fn challenge(&self, tool: &str, error: ChallengeError<'_>) -> String {
        let mut c = format!(
            "Bearer realm=\"mcp-bridge\", resource_metadata=\"{}\"",
            self.metadata_url(Some(tool))
        );
        let scopes = self.scopes(Some(tool));
        if !scopes.is_empty() {
            c.push_str(&format!(", scope=\"{}\"", scopes.join(" ")));
        }
        match error {
            ChallengeError::None => {}
            ChallengeError::InvalidToken(code) => c.push_str(&format!(
                ", error=\"invalid_token\", error_description=\"{code}\""
            )),
            ChallengeError::InsufficientScope => c.push_str(
                ", error=\"insufficient_scope\", error_description=\"the token carries no scope \
                 that grants this tool\"",
            ),
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Grant, KeySource};

    fn cfg(url: Option<&str>, scopes: Option<ScopeMap>) -> JwtConfig {
        JwtConfig {
            issuer: "https://idp.example.com/realms/acme".into(),
            audience: vec![],
            leeway_s: 0,
            hs256_secret: None,
            keys: KeySource::None,
            user_claim: "sub".into(),
            tools_claim: "mcp_tools".into(),
            groups_claim: "groups".into(),
            scope_claim: "scope".into(),
            scopes,
            resource: ResourceConfig {
                url: url.map(str::to_owned),
                authorization_servers: vec![],
            },
        }
    }

    #[test]
    fn uris_metadata_and_challenges() {
        let scopes = ScopeMap(
            [
                ("mcp:time".to_owned(), Grant::from_names(["time"])),
                ("mcp:all".to_owned(), Grant::All),
            ]
            .into_iter()
            .collect(),
        );
        let served: SocketAddr = "127.0.0.1:8443".parse().expect("addr");
        let r = Resource::new(
            &cfg(Some("https://relay.example.com/"), Some(scopes)),
            served,
            true,
        );
        assert_eq!(r.tool_uri("time"), "https://relay.example.com/mcp/time");
        assert_eq!(
            r.audiences("time"),
            [
                "https://relay.example.com/mcp/time",
                "https://relay.example.com"
            ]
        );
        assert_eq!(
            r.metadata_url(Some("time")),
            "https://relay.example.com/.well-known/oauth-protected-resource/mcp/time"
        );
        let doc = r.metadata(Some("time"));
        assert_eq!(doc["resource"], "https://relay.example.com/mcp/time");
        assert_eq!(
            doc["authorization_servers"],
            json!(["https://idp.example.com/realms/acme"])
        );
        assert_eq!(doc["scopes_supported"], json!(["mcp:all", "mcp:time"]));
        assert_eq!(
            r.metadata(Some("git"))["scopes_supported"],
            json!(["mcp:all"])
        );
        assert_eq!(r.metadata(None)["resource"], "https://relay.example.com");
        assert_eq!(
            r.challenge("time", ChallengeError::None),
            "Bearer realm=\"mcp-bridge\", resource_metadata=\"https://relay.example.com/.well-known/oauth-protected-resource/mcp/time\", scope=\"mcp:all mcp:time\""
        );
        assert!(r
            .challenge("time", ChallengeError::InvalidToken("expired"))
            .ends_with("error=\"invalid_token\", error_description=\"expired\""));
        assert!(r
            .challenge("time", ChallengeError::InsufficientScope)
            .contains("error=\"insufficient_scope\""));
    }

    #[test]
    fn base_from_the_served_address_and_no_scopes() {
        let served: SocketAddr = "[::1]:9000".parse().expect("addr");
        let r = Resource::new(&cfg(None, None), served, false);
        assert_eq!(r.tool_uri("t"), "http://[::1]:9000/mcp/t");
        assert!(r.metadata(Some("t")).get("scopes_supported").is_none());
        assert!(!r.challenge("t", ChallengeError::None).contains("scope="));
    }

    #[test]
    fn scope_map_grants() {
        let m = ScopeMap(
            [
                ("a".to_owned(), Grant::from_names(["x", "y"])),
                ("b".to_owned(), Grant::from_names(["z"])),
                ("admin".to_owned(), Grant::All),
            ]
            .into_iter()
            .collect(),
        );
        let g = m.grant(&["a".into(), "b".into(), "other".into()]);
        assert!(g.allows("x") && g.allows("z") && !g.allows("w"));
        assert_eq!(m.grant(&["admin".into()]), Grant::All);
        assert!(!m.grant(&[]).allows("x"));
        assert_eq!(m.granting("z"), ["admin", "b"]);
    }
}

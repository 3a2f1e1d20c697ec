//! Fetching an identity provider's signing keys: OpenID Connect discovery, else RFC 8414
//! authorization-server metadata, names the JWKS URL; the JWKS is fetched over HTTPS (plain
//! http only to a loopback host) with the platform's roots plus the configured CA file, every
//! request bounded in time and size, redirects not followed. Not responsible for when to fetch
//! or for keeping keys (`cache`).

use std::path::Path;
use std::time::Duration;

use jsonwebtoken::jwk::{Jwk, JwkSet};
use serde::Deserialize;
use serde_json::Value;
use url::Url;

/// Bound on one request, connect included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest discovery document or JWKS read.
const MAX_BODY: usize = 1 << 20;

/// Why keys could not be fetched. The text names the URL and what to check, never a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The provider could not be reached, or did not answer in time.
    #[error("cannot reach {url}: {reason}")]
    Unreachable {
        /// The URL.
        url: String,
        /// What the network said.
        reason: String,
    },
    /// The provider answered with an HTTP error.
    #[error("{url} answered HTTP {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
    },
    /// The answer is not the document expected.
    #[error("{url} did not serve {what}: {reason}")]
    Document {
        /// The URL.
        url: String,
        /// "a JWKS", "discovery metadata", …
        what: &'static str,
        /// Why not.
        reason: String,
    },
    /// The HTTP client could not be set up (an unreadable CA file).
    #[error("cannot set up the HTTPS client: {0}")]
    Setup(String),
}

/// The HTTP client for one issuer.
#[derive(Clone)]
pub(crate) struct Fetcher {
    client: reqwest::Client,
    issuer: String,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: Option<String>,
}

/// Whether `u` may be fetched: https, or http to a loopback host.
pub(crate) fn allowed_url(u: &Url) -> bool {
    match u.scheme() {
        "https" => true,
        "http" => match u.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            None => false,
        },
        _ => false,
    }
}

/// The discovery URLs for `issuer`, in the order tried: OpenID Connect (appended), then RFC 8414
/// (path inserted), then OpenID Connect path-inserted.
pub(crate) fn discovery_urls(issuer: &Url) -> Vec<Url> {
    let path = issuer.path().trim_end_matches('/');
    let mut base = issuer.clone();
    base.set_query(None);
    base.set_fragment(None);
    let with = |p: String| {
        let mut u = base.clone();
        u.set_path(&p);
        u
    };
    let mut out = vec![with(format!("{path}/.well-known/openid-configuration"))];
    out.push(with(format!(
        "/.well-known/oauth-authorization-server{path}"
    )));
    if !path.is_empty() {
        out.push(with(format!("/.well-known/openid-configuration{path}")));
    }
    out
}

/// A JWKS from its JSON text; keys this relay cannot use (unknown types or algorithms) are
/// left out rather than failing the whole set.
pub(crate) fn parse_jwks(body: &[u8]) -> Result<(JwkSet, usize), String> {
    #[derive(Deserialize)]
    struct Raw {
        keys: Vec<Value>,
    }
    let raw: Raw = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let total = raw.keys.len();
    let keys: Vec<Jwk> = raw
        .keys
        .into_iter()
        .filter_map(|k| serde_json::from_value::<Jwk>(k).ok())
        .filter(|k| {
            // Encryption keys (`use: enc`) and kinds this relay cannot verify with are skipped.
            let enc = k.common.public_key_use == Some(jsonwebtoken::jwk::PublicKeyUse::Encryption);
            !enc && jsonwebtoken::DecodingKey::from_jwk(k).is_ok()
        })
        .collect();
    let skipped = total - keys.len();
    if keys.is_empty() {
        return Err(format!("none of its {total} keys is usable"));
    }
    Ok((JwkSet { keys }, skipped))
}

impl Fetcher {
    /// A client for `issuer`, trusting the platform's roots plus `ca_file`.
    pub(crate) fn new(issuer: &str, ca_file: Option<&Path>) -> Result<Fetcher, FetchError> {
        let tls = shared::tls::client_config(ca_file, None)
            .map_err(|e| FetchError::Setup(e.to_string()))?;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("mcp-bridge-relay/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| FetchError::Setup(e.to_string()))?;
        Ok(Fetcher {
            client,
            issuer: issuer.to_owned(),
        })
    }

    /// The JWKS URL from the issuer's discovery metadata, whose `issuer` must be ours.
    pub(crate) async fn discover(&self) -> Result<Url, FetchError> {
        let issuer = Url::parse(&self.issuer).map_err(|e| FetchError::Document {
            url: self.issuer.clone(),
            what: "an issuer URL",
            reason: e.to_string(),
        })?;
        let mut last = None;
        for u in discovery_urls(&issuer) {
            let body = match self.get(&u).await {
                Ok(b) => b,
                Err(e @ FetchError::Status { .. }) => {
                    last = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let doc: Discovery =
                serde_json::from_slice(&body).map_err(|e| FetchError::Document {
                    url: u.to_string(),
                    what: "discovery metadata",
                    reason: e.to_string(),
                })?;
            let bad = |reason: String| FetchError::Document {
                url: u.to_string(),
                what: "discovery metadata",
                reason,
            };
            if doc.issuer != self.issuer {
                return Err(bad(format!(
                    "it names the issuer {:?}, not {:?} (set `issuer` to exactly the provider's)",
                    shared::log_safe(&doc.issuer),
                    self.issuer
                )));
            }
            let jwks = doc
                .jwks_uri
                .ok_or_else(|| bad("it has no `jwks_uri`".into()))?;
            let jwks = Url::parse(&jwks).map_err(|e| bad(format!("bad `jwks_uri`: {e}")))?;
            if !allowed_url(&jwks) {
                return Err(bad(format!("`jwks_uri` {jwks} is not https")));
            }
            return Ok(jwks);
        }
        Err(last.unwrap_or_else(|| FetchError::Status {
            url: self.issuer.clone(),
            status: 404,
        }))
    }

    /// The key set at `url`, and how many of its keys were left out.
    pub(crate) async fn jwks(&self, url: &Url) -> Result<(JwkSet, usize), FetchError> {
        let body = self.get(url).await?;
        parse_jwks(&body).map_err(|reason| FetchError::Document {
            url: url.to_string(),
            what: "a JWKS",
            reason,
        })
    }

    async fn get(&self, url: &Url) -> Result<Vec<u8>, FetchError> {
        let unreachable = |e: reqwest::Error| FetchError::Unreachable {
            url: url.to_string(),
            reason: if e.is_timeout() {
                format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())
            } else {
                error_chain(&e)
            },
        };
        let mut resp = self
            .client
            .get(url.clone())
            .header("Accept", "application/json")
            .send()
            .await
            .map_err(unreachable)?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(FetchError::Status {
                url: url.to_string(),
                status,
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(unreachable)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(FetchError::Document {
                    url: url.to_string(),
                    what: "a document within 1 MiB",
                    reason: "it is larger".into(),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// An error with its sources (reqwest's own text alone says little: "error sending request").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        text.push_str(": ");
        text.push_str(&s.to_string());
        cur = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_urls_for_root_and_path_issuers() {
        let root = Url::parse("https://idp.example.com").expect("url");
        let got: Vec<String> = discovery_urls(&root).iter().map(Url::to_string).collect();
        assert_eq!(
            got,
            [
                "https://idp.example.com/.well-known/openid-configuration",
                "https://idp.example.com/.well-known/oauth-authorization-server",
            ]
        );
        let tenant = Url::parse("https://idp.example.com/realms/acme/").expect("url");
        let got: Vec<String> = discovery_urls(&tenant).iter().map(Url::to_string).collect();
        assert_eq!(
            got,
            [
                "https://idp.example.com/realms/acme/.well-known/openid-configuration",
                "https://idp.example.com/.well-known/oauth-authorization-server/realms/acme",
                "https://idp.example.com/.well-known/openid-configuration/realms/acme",
            ]
        );
    }

    #[test]
    fn jwks_keeps_usable_keys_only() {
        let body =
            br#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"a"},{"kty":"weird","kid":"b"}]}"#;
        let (set, skipped) = parse_jwks(body).expect("jwks");
        assert_eq!((set.keys.len(), skipped), (1, 1));
        assert!(parse_jwks(br#"{"keys":[{"kty":"weird"}]}"#).is_err());
        assert!(parse_jwks(b"<html>").is_err());
    }

    #[test]
    fn only_https_or_loopback_http() {
        let ok = |s: &str| allowed_url(&Url::parse(s).expect("url"));
        assert!(ok("https://idp.example.com/jwks"));
        assert!(ok("http://127.0.0.1:8080/jwks"));
        assert!(ok("http://[::1]/jwks"));
        assert!(!ok("http://idp.example.com/jwks"));
        assert!(!ok("ftp://idp.example.com/jwks"));
    }
}

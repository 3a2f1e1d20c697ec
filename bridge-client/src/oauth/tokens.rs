//! Tokens and the registered client as kept between processes, and the decisions about them
//! (still good, refresh now, gone) — sans-IO, with the time passed in as Unix seconds because
//! tokens outlive the process. Where they are kept is [`super::store`].

use serde::{Deserialize, Serialize};

use super::AuthError;
use crate::Secret;

/// Refresh this long before the access token expires.
pub const REFRESH_MARGIN_SECS: u64 = 30;

/// How the client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// Public client: `client_id` in the form.
    None,
    /// HTTP Basic with id and secret.
    ClientSecretBasic,
    /// Id and secret in the form.
    ClientSecretPost,
}

impl AuthMethod {
    /// The RFC 7591 name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::None => "none",
            AuthMethod::ClientSecretBasic => "client_secret_basic",
            AuthMethod::ClientSecretPost => "client_secret_post",
        }
    }
}

/// A client we may use with one authorization server.
#[derive(Clone, Serialize, Deserialize)]
pub struct Client {
    /// The client id (an https URL for a Client ID Metadata Document).
    pub client_id: String,
    /// For confidential clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// How to authenticate at the token endpoint.
    pub auth_method: AuthMethod,
    /// The redirect URI registered for it (None: any loopback URI, or device grant only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_uri: Option<String>,
    /// Obtained by dynamic registration (and so forgotten by `logout`).
    #[serde(default)]
    pub registered: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "…"))
            .field("auth_method", &self.auth_method)
            .finish()
    }
}

/// What one sign-in left: the keyring record for an issuer and a resource.
#[derive(Clone, Serialize, Deserialize)]
pub struct Record {
    /// Format version.
    pub v: u32,
    /// The authorization server.
    pub issuer: String,
    /// The protected resource (`resource` parameter), as its metadata names it.
    pub resource: String,
    /// The client the tokens were issued to (refresh needs the same one).
    pub client: Client,
    /// Where to refresh (from the validated metadata), so a refresh needs no discovery.
    pub token_endpoint: String,
    /// Access token (never logged).
    pub access_token: String,
    /// Refresh token, when the server issued one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Unix seconds; None when the server did not say.
    #[serde(default)]
    pub expires_at: Option<u64>,
    /// Granted scope, when the server said.
    #[serde(default)]
    pub scope: Option<String>,
    /// Where `logout` revokes the tokens (RFC 7009), when the server has such an endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_endpoint: Option<String>,
    /// A random stamp per token issue: tells a process that another one has replaced them.
    pub generation: String,
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("issuer", &self.issuer)
            .field("resource", &self.resource)
            .field("client", &self.client)
            .field("expires_at", &self.expires_at)
            .field("has_refresh_token", &self.refresh_token.is_some())
            .finish_non_exhaustive()
    }
}

/// What to do with the stored tokens now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Use the access token.
    Fresh,
    /// Expiring within the margin (or expired) and a refresh token is there: refresh.
    Refresh,
    /// Expired, nothing to refresh with: sign in.
    Expired,
}

impl Record {
    /// The decision at `now` (Unix seconds).
    pub fn freshness(&self, now: u64) -> Freshness {
        match self.expires_at {
            Some(t) if now + REFRESH_MARGIN_SECS >= t => {
                if self.refresh_token.is_some() {
                    Freshness::Refresh
                } else if now >= t {
                    Freshness::Expired
                } else {
                    Freshness::Fresh
                }
            }
            _ => Freshness::Fresh,
        }
    }

    /// The access token, for the `Authorization` header.
    pub fn bearer(&self) -> Secret {
        Secret::new(self.access_token.clone())
    }
}

/// A successful token endpoint answer (RFC 6749 §5.1).
#[derive(Deserialize)]
pub struct TokenResponse {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    scope: Option<String>,
}

/// An error answer (RFC 6749 §5.2).
#[derive(Deserialize)]
pub struct ErrorResponse {
    /// The code.
    pub error: String,
    /// Human text.
    #[serde(default)]
    pub error_description: Option<String>,
}

impl ErrorResponse {
    /// As an [`AuthError`] for `endpoint`.
    pub fn into_error(self, endpoint: &'static str) -> AuthError {
        AuthError::OAuth {
            endpoint,
            code: shared::log_safe_max(&self.error, 64).into_owned(),
            description: self
                .error_description
                .map(|d| shared::log_safe(&d).into_owned()),
        }
    }
}

/// Reads a token endpoint answer (status and JSON body) into a record, keeping the old refresh
/// token when a refresh answer carries none (RFC 6749 §6).
pub fn record_from_response(
    status: u16,
    body: &[u8],
    previous_refresh: Option<&str>,
    now: u64,
    make: impl FnOnce(String, Option<String>, Option<u64>, Option<String>) -> Record,
) -> Result<Record, AuthError> {
    if !(200..300).contains(&status) {
        return Err(match serde_json::from_slice::<ErrorResponse>(body) {
            Ok(e) => e.into_error("the token endpoint"),
            Err(_) => AuthError::Metadata(format!(
                "the token endpoint answered HTTP {status} without an OAuth error"
            )),
        });
    }
    let t: TokenResponse = serde_json::from_slice(body).map_err(|_| {
        AuthError::Metadata("the token endpoint's answer is not a token response".into())
    })?;
    if let Some(tt) = &t.token_type {
        if !tt.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Unsupported(format!(
                "the token endpoint issued a {:?} token; only Bearer tokens are supported",
                shared::log_safe_max(tt, 32)
            )));
        }
    }
    let expires_in = match t.expires_in {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => None,
    };
    let refresh = t
        .refresh_token
        .or_else(|| previous_refresh.map(str::to_owned));
    Ok(make(
        t.access_token,
        refresh,
        expires_in.map(|s| now.saturating_add(s)),
        t.scope,
    ))
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(expires_at: Option<u64>, refresh: bool) -> Record {
        Record {
            v: 1,
            issuer: "https://a".into(),
            resource: "https://r".into(),
            client: Client {
                client_id: "c".into(),
                client_secret: Some("s3cr3t".into()),
                auth_method: AuthMethod::ClientSecretBasic,
                redirect_uri: None,
                registered: true,
            },
            token_endpoint: "https://a/token".into(),
            access_token: "AT-SECRET".into(),
            refresh_token: refresh.then(|| "RT-SECRET".into()),
            expires_at,
            scope: None,
            revocation_endpoint: None,
            generation: "g".into(),
        }
    }

    #[test]
    fn freshness_decisions() {
        assert_eq!(rec(None, false).freshness(1000), Freshness::Fresh);
        assert_eq!(rec(Some(2000), true).freshness(1000), Freshness::Fresh);
        assert_eq!(rec(Some(1020), true).freshness(1000), Freshness::Refresh);
        assert_eq!(rec(Some(900), true).freshness(1000), Freshness::Refresh);
        assert_eq!(rec(Some(1020), false).freshness(1000), Freshness::Fresh);
        assert_eq!(rec(Some(900), false).freshness(1000), Freshness::Expired);
    }

    #[test]
    fn debug_never_shows_secrets() {
        let d = format!("{:?}", rec(Some(1), true));
        assert!(!d.contains("SECRET") && !d.contains("s3cr3t"), "{d}");
    }

    #[test]
    fn token_responses() {
        let make = |a, r, e, s| Record {
            access_token: a,
            refresh_token: r,
            expires_at: e,
            scope: s,
            ..rec(None, false)
        };
        let r = record_from_response(
            200,
            br#"{"access_token":"x","token_type":"Bearer","expires_in":60}"#,
            Some("old"),
            100,
            make,
        )
        .unwrap();
        assert_eq!(r.expires_at, Some(160));
        assert_eq!(r.refresh_token.as_deref(), Some("old"));
        let e = record_from_response(
            400,
            br#"{"error":"invalid_grant","error_description":"grant request is invalid"}"#,
            None,
            0,
            make,
        )
        .unwrap_err();
        assert!(e.is_invalid_grant(), "{e}");
        assert!(record_from_response(200, b"{}", None, 0, make).is_err());
        assert!(record_from_response(
            200,
            br#"{"access_token":"x","token_type":"DPoP"}"#,
            None,
            0,
            make
        )
        .is_err());
    }
}

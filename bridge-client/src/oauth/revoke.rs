//! Signing out (`bridge-client logout URL`): the stored tokens are revoked at the authorization
//! server (RFC 7009) when it named a revocation endpoint at sign-in — the refresh token first
//! (which ends the grant at most servers), then the access token — and then forgotten from the
//! keyring whatever the server said, since the user asked to sign out. Not here: what is stored
//! where (`store`), nor how a request is authenticated as the client (`flow`).

use std::path::Path;

use super::http::Http;
use super::metadata;
use super::store::{self, Binding};
use super::tokens::Record;
use super::{authorizer, flow, AuthError};

/// What `logout` did.
#[derive(Debug)]
pub struct LogoutReport {
    /// The sign-in that was forgotten.
    pub binding: Binding,
    /// Where the tokens were revoked, and how that went: `None` when the authorization server
    /// named no revocation endpoint (or nothing was stored but the binding).
    pub revocation: Option<(String, Result<(), String>)>,
}

/// Revokes (where the server allows) and forgets the sign-in bound to `server_url`; `Ok(None)`
/// when none is stored. `ca_file`: a private CA for the authorization server's TLS.
pub async fn logout(
    server_url: &str,
    ca_file: Option<&Path>,
) -> Result<Option<LogoutReport>, AuthError> {
    let key = authorizer::server_key(&authorizer::parse_server(server_url)?);
    let Some(b) = store::binding(&key)? else {
        return Ok(None);
    };
    let record = store::load(&b.issuer, &b.resource)?;
    let revocation = match record {
        Some(rec) => match rec.revocation_endpoint.clone() {
            Some(ep) => {
                let outcome = revoke(&Http::new(ca_file)?, &rec, &ep).await;
                Some((ep, outcome.map_err(|e| e.to_string())))
            }
            None => None,
        },
        None => None,
    };
    let binding = store::forget(&key)?.unwrap_or(b);
    Ok(Some(LogoutReport {
        binding,
        revocation,
    }))
}

/// RFC 7009 §2: one request per token; 200 means revoked (or already invalid).
async fn revoke(http: &Http, rec: &Record, endpoint: &str) -> Result<(), AuthError> {
    let ep = metadata::check_endpoint(endpoint, "revocation endpoint")?;
    let tokens = [
        (rec.refresh_token.as_deref(), "refresh_token"),
        (Some(rec.access_token.as_str()), "access_token"),
    ];
    for (token, hint) in tokens {
        let Some(token) = token else { continue };
        let req = flow::revocation(&ep, &rec.client, token, hint);
        let (status, body) = http.post_form(&req).await?;
        if status != 200 {
            // The body is an OAuth error (no token in it); show its `error` only.
            let error = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error")?.as_str().map(str::to_owned))
                .unwrap_or_default();
            return Err(AuthError::Http {
                url: ep.to_string(),
                reason: format!(
                    "revoking the {} answered HTTP {status} {}",
                    hint.replace('_', " "),
                    shared::log_safe(&error)
                ),
            });
        }
    }
    Ok(())
}

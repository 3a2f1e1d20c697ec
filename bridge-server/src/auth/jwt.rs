//! Checking a JWT access token: the key (HS256 secret, a JWKS file, or the identity provider's
//! keys), the signature, `exp`/`nbf`, `iss`, `aud` (one of the audiences this resource answers
//! to), then the principal: user, groups, and the tools granted — by the scopes the token
//! carries when scopes map to tools, else by a tools claim. Not responsible for fetching keys
//! (`keys`) or for the HTTP answer.

use std::collections::BTreeSet;

use jsonwebtoken::{errors::ErrorKind, Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::keys::KeyLookup;
use super::{AuthError, Grant, JwtConfig, KeySource, Principal};

/// Names from a claim: an array of strings, or one space-separated string.
fn names(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// Whether the token's header is JSON with an `alg` (one `decode_header` could not take).
fn names_an_alg(token: &str) -> bool {
    use base64::Engine;
    let Some(head) = token.split('.').next() else {
        return false;
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head.trim_end_matches('='))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .is_some_and(|h| h.get("alg").is_some_and(Value::is_string))
}

/// The decoding key for a token's header.
fn key_for(cfg: &JwtConfig, alg: Algorithm, kid: Option<&str>) -> Result<DecodingKey, AuthError> {
    match alg {
        Algorithm::HS256 => match &cfg.hs256_secret {
            Some(secret) => Ok(DecodingKey::from_secret(secret)),
            None => Err(AuthError::Algorithm),
        },
        Algorithm::RS256 | Algorithm::ES256 | Algorithm::PS256 | Algorithm::EdDSA => {
            let jwk = match &cfg.keys {
                KeySource::None => return Err(AuthError::Algorithm),
                KeySource::File(set) => match kid {
                    Some(kid) => set.find(kid),
                    None if set.keys.len() == 1 => set.keys.first(),
                    None => None,
                }
                .cloned()
                .ok_or(AuthError::UnknownKey)?,
                KeySource::Remote(remote) => match remote.find(kid) {
                    KeyLookup::Found(k) => *k,
                    KeyLookup::Unknown => return Err(AuthError::UnknownKey),
                    KeyLookup::NotLoaded => return Err(AuthError::KeysUnavailable),
                },
            };
            // A key published for another algorithm does not verify this one.
            if let Some(ka) = jwk.common.key_algorithm {
                if ka.to_string() != format!("{alg:?}") {
                    return Err(AuthError::Algorithm);
                }
            }
            DecodingKey::from_jwk(&jwk).map_err(|_| AuthError::BadSignature)
        }
        _ => Err(AuthError::Algorithm),
    }
}

/// Verifies `token` for a resource known by `audiences` (used when the config names none).
pub(super) fn check(
    cfg: &JwtConfig,
    token: &str,
    audiences: &[String],
) -> Result<Principal, AuthError> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
        ErrorKind::InvalidAlgorithmName | ErrorKind::InvalidAlgorithm => AuthError::Algorithm,
        // `alg: none` (or another name this library does not know) fails as a JSON error.
        _ if names_an_alg(token) => AuthError::Algorithm,
        _ => AuthError::BadToken("cannot read the token header".into()),
    })?;
    let key = key_for(cfg, header.alg, header.kid.as_deref())?;
    let mut v = Validation::new(header.alg);
    v.leeway = cfg.leeway_s;
    v.validate_nbf = true;
    v.set_issuer(&[cfg.issuer.as_str()]);
    if cfg.audience.is_empty() {
        v.set_audience(audiences);
    } else {
        v.set_audience(&cfg.audience);
    }
    v.set_required_spec_claims(&["exp", "iss", "aud"]);
    let data = jsonwebtoken::decode::<Value>(token, &key, &v).map_err(|e| match e.kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => AuthError::Algorithm,
        ErrorKind::MissingRequiredClaim(c) => AuthError::BadToken(format!("missing claim `{c}`")),
        _ => AuthError::BadToken("the token does not verify".into()),
    })?;
    let claims = data.claims;
    let user = claims
        .get(&cfg.user_claim)
        .and_then(Value::as_str)
        .ok_or_else(|| AuthError::BadToken(format!("missing claim `{}`", cfg.user_claim)))?
        .to_owned();
    let grant = match &cfg.scopes {
        Some(map) => {
            // `scope` (RFC 9068, a space-separated string) or `scp` (Entra ID, Okta: an array).
            let mut held = names(claims.get(&cfg.scope_claim));
            if held.is_empty() {
                held = names(claims.get("scp"));
            }
            map.grant(&held)
        }
        None => match claims.get(&cfg.tools_claim) {
            Some(v) => Grant::from_names(names(Some(v))),
            None => Grant::Only(BTreeSet::new()),
        },
    };
    let groups = names(claims.get(&cfg.groups_claim));
    Ok(Principal {
        user,
        grant,
        groups,
        credential: None,
    })
}

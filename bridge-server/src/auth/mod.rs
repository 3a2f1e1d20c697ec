//! Who is connecting, and which tools they may use: static tokens (stored as SHA-256 hashes,
//! compared in constant time), JWT access tokens (HS256 with a secret from the environment;
//! RS256/ES256 with keys from a JWKS file or from the identity provider, [`keys`]), or no
//! authentication (loopback only). With JWTs the relay is an OAuth resource server
//! ([`resource`]: its metadata and challenges).
//!
//! This module decides; the HTTP layer turns its refusals into 401/403 answers. It never logs
//! or returns a token.

pub mod cert;
mod jwt;
pub mod keys;
pub mod resource;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use jsonwebtoken::jwk::JwkSet;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use cert::{CertEntry, CertIdentity};
pub use resource::ResourceConfig;

/// The tools a principal may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// Every tool (`"*"`).
    All,
    /// These tools only.
    Only(BTreeSet<String>),
}

impl Grant {
    /// From a list of names, where `"*"` means all.
    pub fn from_names<I: IntoIterator<Item = S>, S: Into<String>>(names: I) -> Grant {
        let set: BTreeSet<String> = names.into_iter().map(Into::into).collect();
        if set.contains("*") {
            Grant::All
        } else {
            Grant::Only(set)
        }
    }

    /// Whether `tool` is granted.
    pub fn allows(&self, tool: &str) -> bool {
        match self {
            Grant::All => true,
            Grant::Only(set) => set.contains(tool),
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// User name (for logs, limits and session binding).
    pub user: String,
    /// Tools granted.
    pub grant: Grant,
    /// Groups the user belongs to (for per-tool policy rules).
    pub groups: Vec<String>,
    /// Which configured static token it presented (that entry's SHA-256, never the token), so
    /// a config reload can tell whether the token is still there. `None` for JWTs and no auth.
    pub credential: Option<[u8; 32]>,
}

/// The variable naming the user to a tool process.
pub const USER_ENV: &str = "MCP_BRIDGE_USER";
/// The variable listing the user's groups (comma-separated) to a tool process.
pub const GROUPS_ENV: &str = "MCP_BRIDGE_GROUPS";

impl Principal {
    /// The principal as a tool process sees it: [`USER_ENV`] and [`GROUPS_ENV`] (control
    /// characters, which an environment cannot hold safely, shown as U+FFFD). Never a token.
    pub fn env(&self) -> [(String, std::ffi::OsString); 2] {
        let clean = |s: &str| -> String {
            s.chars()
                .map(|c| if c.is_control() { '\u{fffd}' } else { c })
                .collect()
        };
        let groups: Vec<String> = self.groups.iter().map(|g| clean(g)).collect();
        [
            (USER_ENV.to_owned(), clean(&self.user).into()),
            (GROUPS_ENV.to_owned(), groups.join(",").into()),
        ]
    }
}

/// A configured static token: its hash, never the token.
#[derive(Clone)]
pub struct TokenEntry {
    /// User name.
    pub user: String,
    /// SHA-256 of the token.
    pub sha256: [u8; 32],
    /// Tools granted.
    pub grant: Grant,
    /// Groups the user belongs to.
    pub groups: Vec<String>,
}

impl fmt::Debug for TokenEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenEntry")
            .field("user", &self.user)
            .field("grant", &self.grant)
            .finish_non_exhaustive()
    }
}

/// Where RS256/ES256 public keys come from.
#[derive(Debug, Clone, Default)]
pub enum KeySource {
    /// None: only HS256 tokens.
    #[default]
    None,
    /// A JWKS file, read at start.
    File(JwkSet),
    /// The identity provider, fetched and refreshed.
    Remote(Arc<keys::RemoteKeys>),
}

/// Scopes that grant tools (`[auth.jwt.scopes]`): a token's grant is the union of the grants of
/// the scopes it carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeMap(pub BTreeMap<String, Grant>);

impl ScopeMap {
    /// The tools these scopes grant together.
    pub fn grant(&self, held: &[String]) -> Grant {
        let mut tools = BTreeSet::new();
        for s in held {
            match self.0.get(s) {
                Some(Grant::All) => return Grant::All,
                Some(Grant::Only(t)) => tools.extend(t.iter().cloned()),
                None => {}
            }
        }
        Grant::Only(tools)
    }

    /// The scopes that grant `tool` (what a client should ask for), in order.
    pub fn granting(&self, tool: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(_, g)| g.allows(tool))
            .map(|(s, _)| s.as_str())
            .collect()
    }

    /// Every scope, in order.
    pub fn all(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// JWT validation settings.
#[derive(Clone)]
pub struct JwtConfig {
    /// Required `iss`.
    pub issuer: String,
    /// Accepted `aud` values; empty: the resource's own URIs (the tool's and the relay's).
    pub audience: Vec<String>,
    /// Clock skew allowed for `exp` and `nbf`, in seconds.
    pub leeway_s: u64,
    /// HS256 secret (from the environment variable the config names).
    pub hs256_secret: Option<Vec<u8>>,
    /// RS256/ES256 public keys.
    pub keys: KeySource,
    /// Claim holding the user name.
    pub user_claim: String,
    /// Claim holding the granted tools (an array of names, or a space-separated string); used
    /// when no scopes are mapped.
    pub tools_claim: String,
    /// Claim holding the user's groups (an array of names, or a space-separated string).
    pub groups_claim: String,
    /// Claim holding the token's scopes (`scope`; `scp` is read when it is absent).
    pub scope_claim: String,
    /// Scopes mapped to tools; when set, grants come from scopes only.
    pub scopes: Option<ScopeMap>,
    /// What the relay publishes as a protected resource.
    pub resource: ResourceConfig,
}

impl fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtConfig")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_s", &self.leeway_s)
            .field("hs256", &self.hs256_secret.is_some())
            .field("keys", &self.keys)
            .field("scopes", &self.scopes)
            .field("resource", &self.resource)
            .finish_non_exhaustive()
    }
}

/// How the relay authenticates.
#[derive(Debug, Clone)]
pub enum AuthConfig {
    /// Nobody is asked for anything; allowed only on loopback.
    None,
    /// Static bearer tokens.
    Tokens(Vec<TokenEntry>),
    /// Bearer JWTs.
    Jwt(Box<JwtConfig>),
    /// Client certificates (mutual TLS), mapped to users.
    Certs(Vec<CertEntry>),
}

/// Why a request is not authenticated. The text is safe to send to the client and to log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("missing bearer token: send `Authorization: Bearer <token>` (bridge-client login stores one)")]
    Missing,
    /// The header is not a bearer token.
    #[error("malformed Authorization header: expected `Bearer <token>`")]
    Malformed,
    /// No configured token matches.
    #[error("unknown token")]
    UnknownToken,
    /// JWT `exp` has passed.
    #[error("token expired")]
    Expired,
    /// JWT `nbf` is in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// JWT `iss` is not the configured issuer.
    #[error("wrong token issuer")]
    WrongIssuer,
    /// JWT `aud` does not include the configured audience.
    #[error("wrong token audience")]
    WrongAudience,
    /// The signature does not verify.
    #[error("bad token signature")]
    BadSignature,
    /// `alg` is none, or not one this relay accepts.
    #[error("token algorithm not accepted")]
    Algorithm,
    /// The token's `kid` names no key the identity provider publishes.
    #[error("token signed by an unknown key")]
    UnknownKey,
    /// `mtls` mode: the connection presented no client certificate.
    #[error("no client certificate: connect with the certificate your relay's operator issued (bridge-client --client-cert and --client-key)")]
    NoCertificate,
    /// `mtls` mode: the certificate maps to no configured user.
    #[error("the client certificate is not mapped to a user on this relay; ask its operator to add its subject or SAN to [[auth.cert]]")]
    UnknownCertificate,
    /// The identity provider's keys could not be fetched yet (the relay's problem, not the
    /// token's: answered 503).
    #[error("the relay cannot reach its identity provider for signing keys yet; retry shortly")]
    KeysUnavailable,
    /// Not a well-formed JWT, or a required claim is missing.
    #[error("malformed token: {0}")]
    BadToken(String),
}

impl AuthError {
    /// A short machine-readable reason, for metrics and audit.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed => "malformed_header",
            AuthError::UnknownToken => "unknown_token",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::WrongIssuer => "wrong_issuer",
            AuthError::WrongAudience => "wrong_audience",
            AuthError::BadSignature => "bad_signature",
            AuthError::Algorithm => "bad_algorithm",
            AuthError::UnknownKey => "unknown_key",
            AuthError::NoCertificate => "no_certificate",
            AuthError::UnknownCertificate => "unknown_certificate",
            AuthError::KeysUnavailable => "keys_unavailable",
            AuthError::BadToken(_) => "malformed_token",
        }
    }
}

/// The SHA-256 of a token, as stored in the config (`sha256:<hex>`).
pub fn hash_token(token: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(token.as_bytes())))
}

/// A new token (for `bridge-server new-token`); never shown by `Debug`.
pub struct NewToken(String);

impl NewToken {
    /// 32 random bytes from the OS, as 64 hex digits (safe in a header and a file).
    pub fn generate() -> Result<NewToken, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        Ok(NewToken(hex::encode(bytes)))
    }

    /// The token itself, to write it where its user gets it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for NewToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NewToken(…)")
    }
}

/// Parses `sha256:<64 hex digits>`.
pub fn parse_hash(text: &str) -> Option<[u8; 32]> {
    let hex_part = text.strip_prefix("sha256:")?;
    let bytes = hex::decode(hex_part).ok()?;
    bytes.try_into().ok()
}

impl AuthConfig {
    /// Whether a session that `user` opened for `tool` with `credential` would still be let in
    /// under this config (after a reload). Static tokens: the same token is still configured,
    /// for the same user, and still grants the tool (so a session opened without credentials
    /// ends once tokens are required). No auth: every session. A JWT session is not checked
    /// again: its token expires on its own.
    pub fn still_admits(&self, user: &str, credential: Option<&[u8; 32]>, tool: &str) -> bool {
        match self {
            AuthConfig::None => true,
            AuthConfig::Tokens(entries) => credential.is_some_and(|c| {
                entries
                    .iter()
                    .any(|e| &e.sha256 == c && e.user == user && e.grant.allows(tool))
            }),
            AuthConfig::Jwt(_) => true,
            // A certificate session is not checked again (its certificate was verified at
            // the handshake; a removed mapping stops new sessions).
            AuthConfig::Certs(_) => true,
        }
    }

    /// Authenticates a connection's verified client certificate (`mtls` mode; the other modes
    /// ignore it and look at the `Authorization` header).
    pub fn authenticate_cert(&self, id: Option<&CertIdentity>) -> Result<Principal, AuthError> {
        match self {
            AuthConfig::Certs(entries) => cert::check(entries, id),
            _ => Err(AuthError::NoCertificate),
        }
    }

    /// Authenticates the value of the `Authorization` header (if any) for a resource known by
    /// `audiences` (its canonical URIs: a JWT must name one of them, unless the config lists
    /// its own `audience`).
    pub fn authenticate(
        &self,
        header: Option<&[u8]>,
        audiences: &[String],
    ) -> Result<Principal, AuthError> {
        if let AuthConfig::None = self {
            return Ok(Principal {
                user: "anonymous".to_owned(),
                grant: Grant::All,
                groups: Vec::new(),
                credential: None,
            });
        }
        let token = bearer(header)?;
        match self {
            AuthConfig::None => Err(AuthError::UnknownToken),
            AuthConfig::Certs(_) => Err(AuthError::NoCertificate),
            AuthConfig::Tokens(entries) => check_token(entries, token),
            AuthConfig::Jwt(cfg) => jwt::check(cfg, token, audiences),
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(header: Option<&[u8]>) -> Result<&str, AuthError> {
    let header = header.ok_or(AuthError::Missing)?;
    let header = std::str::from_utf8(header).map_err(|_| AuthError::Malformed)?;
    let (scheme, token) = header.trim().split_once(' ').ok_or(AuthError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    Ok(token)
}

/// Checks a request to the admin API against its tokens (`[[admin.token]]`, compared in
/// constant time like users' tokens): the admin's name.
pub(crate) fn authenticate_admin(
    entries: &[TokenEntry],
    header: Option<&[u8]>,
) -> Result<String, AuthError> {
    check_token(entries, bearer(header)?).map(|p| p.user)
}

fn check_token(entries: &[TokenEntry], token: &str) -> Result<Principal, AuthError> {
    let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    // Compare against every entry, in constant time each, so timing says nothing about which
    // (if any) matched.
    let mut found: Option<&TokenEntry> = None;
    for entry in entries {
        if bool::from(entry.sha256.ct_eq(&digest)) {
            found = Some(entry);
        }
    }
    found
        .map(|e| Principal {
            user: e.user.clone(),
            grant: e.grant.clone(),
            groups: e.groups.clone(),
            credential: Some(e.sha256),
        })
        .ok_or(AuthError::UnknownToken)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_hash_round_trip_and_lookup() {
        let hash = hash_token("s3cret");
        assert!(hash.starts_with("sha256:") && hash.len() == 7 + 64);
        let entries = vec![TokenEntry {
            user: "alice".into(),
            sha256: parse_hash(&hash).expect("hash"),
            grant: Grant::from_names(["time"]),
            groups: vec!["ops".into()],
        }];
        let auth = AuthConfig::Tokens(entries);
        let p = auth.authenticate(Some(b"Bearer s3cret"), &[]).expect("ok");
        assert_eq!(p.user, "alice");
        assert_eq!(p.groups, ["ops"]);
        assert!(p.grant.allows("time") && !p.grant.allows("github"));
        assert_eq!(
            auth.authenticate(Some(b"Bearer nope"), &[]),
            Err(AuthError::UnknownToken)
        );
        assert_eq!(auth.authenticate(None, &[]), Err(AuthError::Missing));
        assert_eq!(
            auth.authenticate(Some(b"Basic abc"), &[]),
            Err(AuthError::Malformed)
        );
        assert!(parse_hash("sha256:zz").is_none());
    }

    #[test]
    fn admin_tokens_name_their_admin_and_refuse_the_rest() {
        let entries = vec![TokenEntry {
            user: "ops".into(),
            sha256: parse_hash(&hash_token("s3cret")).unwrap(),
            grant: Grant::Only(BTreeSet::new()),
            groups: Vec::new(),
        }];
        assert_eq!(
            authenticate_admin(&entries, Some(b"Bearer s3cret")),
            Ok("ops".to_owned())
        );
        assert_eq!(
            authenticate_admin(&entries, Some(b"Bearer s3cre")),
            Err(AuthError::UnknownToken)
        );
        assert_eq!(authenticate_admin(&entries, None), Err(AuthError::Missing));
        assert_eq!(
            authenticate_admin(&entries, Some(b"Basic s3cret")),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            authenticate_admin(&[], Some(b"Bearer s3cret")),
            Err(AuthError::UnknownToken)
        );
    }

    #[test]
    fn the_principal_reaches_a_tool_as_two_variables() {
        let p = Principal {
            user: "alice\n".into(),
            grant: Grant::All,
            groups: vec!["eng".into(), "ops".into()],
            credential: None,
        };
        let env = p.env();
        assert_eq!(env[0].0, USER_ENV);
        assert_eq!(env[0].1, "alice\u{fffd}");
        assert_eq!(env[1].0, GROUPS_ENV);
        assert_eq!(env[1].1, "eng,ops");
    }

    #[test]
    fn errors_never_contain_the_token() {
        let auth = AuthConfig::Tokens(vec![]);
        let err = auth
            .authenticate(Some(b"Bearer TOPSECRET"), &[])
            .unwrap_err();
        assert!(!err.to_string().contains("TOPSECRET"));
        let jwt = AuthConfig::Jwt(Box::new(JwtConfig {
            issuer: "i".into(),
            audience: vec!["a".into()],
            leeway_s: 0,
            hs256_secret: Some(b"k".to_vec()),
            keys: KeySource::None,
            user_claim: "sub".into(),
            tools_claim: "tools".into(),
            groups_claim: "groups".into(),
            scope_claim: "scope".into(),
            scopes: None,
            resource: ResourceConfig::default(),
        }));
        let err = jwt
            .authenticate(Some(b"Bearer TOPSECRET.x.y"), &[])
            .unwrap_err();
        assert!(!err.to_string().contains("TOPSECRET"), "{err}");
    }
}

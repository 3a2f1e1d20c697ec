//! The one error type of the sign-in: what went wrong and what the user can do about it.
//! Messages never carry a token, a code, a verifier or a client secret.

/// Why a sign-in, a refresh or the token store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// A URL the user gave or a server sent is unusable.
    #[error("{0}")]
    BadUrl(String),
    /// An HTTP exchange failed below the protocol (connect, TLS, timeout, body too large).
    #[error("{url}: {reason}")]
    Http {
        /// Where.
        url: String,
        /// What failed (never a secret).
        reason: String,
    },
    /// The server is not an OAuth-protected resource we can discover.
    #[error(
        "{url} names no authorization server (no protected-resource metadata, RFC 9728): \
         sign-in is not possible there; if it takes a static token, use `bridge-client login` \
         with that token on stdin"
    )]
    NoResourceMetadata {
        /// The MCP server.
        url: String,
    },
    /// A metadata document is missing, malformed or inconsistent.
    #[error("{0}")]
    Metadata(String),
    /// The authorization server lacks something the MCP spec requires of it.
    #[error("{0}")]
    Unsupported(String),
    /// No way to obtain a client id.
    #[error(
        "{issuer} offers no dynamic client registration and no client id was given: register \
         a client with the provider (redirect URI http://127.0.0.1/callback, any port) and pass \
         --oauth-client-id (and --oauth-client-secret-file for a confidential client)"
    )]
    NoClient {
        /// The authorization server.
        issuer: String,
    },
    /// The authorization server answered with an OAuth error.
    #[error("{endpoint} refused: {code}{}", describe(.description))]
    OAuth {
        /// Which step ("token endpoint", "registration endpoint", "authorization").
        endpoint: &'static str,
        /// The `error` code, e.g. `invalid_grant`.
        code: String,
        /// `error_description`, made log-safe.
        description: Option<String>,
    },
    /// The redirect back from the browser does not belong to this sign-in.
    #[error("the sign-in redirect was rejected: {0}; start the sign-in again")]
    Redirect(String),
    /// Nobody completed the sign-in in time.
    #[error(
        "the sign-in did not complete within {0} s: open the URL printed above in a browser \
         (or use --device on a machine without one) and try again"
    )]
    Timeout(u64),
    /// Another bridge-client held the sign-in lock for too long.
    #[error(
        "another bridge-client has been signing in to {0} for too long; finish or cancel \
         that sign-in, then try again"
    )]
    LockTimeout(String),
    /// The server keeps refusing fresh tokens: stop rather than loop.
    #[error(
        "{url} refused the token right after a new sign-in ({reason}); check that your account \
         may use this server, then `bridge-client logout {url}` and sign in again"
    )]
    Refused {
        /// The MCP server.
        url: String,
        /// The server's challenge, made log-safe.
        reason: String,
    },
    /// Signing in needs the user, and this call may not ask.
    #[error("not signed in to {0}: run `bridge-client login {0}` first")]
    NotSignedIn(String),
    /// The OS keyring or the lock file failed.
    #[error("{0}")]
    Store(String),
    /// A local I/O failure (callback listener, lock file, secret file).
    #[error("{0}")]
    Io(String),
}

fn describe(d: &Option<String>) -> String {
    match d {
        Some(d) => format!(" ({d})"),
        None => String::new(),
    }
}

impl AuthError {
    /// True for the token endpoint's `invalid_grant`: the grant is gone, sign in again.
    pub fn is_invalid_grant(&self) -> bool {
        matches!(self, AuthError::OAuth { code, .. } if code == "invalid_grant")
    }
}

//! PKCE S256 (RFC 7636) and the random values of a sign-in (`state`, the callback path), from
//! the OS's random source. Sans-IO.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

use super::AuthError;
use crate::Secret;

/// `n` random bytes as unpadded base64url (`n` = 32 gives 43 characters, 256 bits).
pub fn random_string(n: usize) -> Result<String, AuthError> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf)
        .map_err(|e| AuthError::Io(format!("the OS random source failed: {e}")))?;
    Ok(URL_SAFE_NO_PAD.encode(buf))
}

/// A PKCE pair: the verifier stays here, the challenge goes to the browser.
pub struct Pkce {
    /// Sent only to the token endpoint.
    pub verifier: Secret,
    /// `BASE64URL(SHA256(verifier))`.
    pub challenge: String,
}

impl Pkce {
    /// A fresh pair with a 43-character verifier.
    pub fn new() -> Result<Pkce, AuthError> {
        let verifier = random_string(32)?;
        Ok(Pkce {
            challenge: challenge_s256(&verifier),
            verifier: Secret::new(verifier),
        })
    }
}

/// The S256 challenge of `verifier`.
pub fn challenge_s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s256_matches_an_independent_computation() {
        // Python: base64.urlsafe_b64encode(hashlib.sha256(v).digest()).rstrip(b'=')
        assert_eq!(
            challenge_s256("dBjftJeZ4CVP-mJ92IbZo3zCHA5o-gE0KUUYr-dXpQ"),
            "psp-1uRjgers3UTPToZBB3OMTUf45ZJDXhQWI1EpfgI"
        );
    }

    #[test]
    fn verifiers_are_long_unreserved_and_unique() {
        let a = Pkce::new().unwrap();
        let b = Pkce::new().unwrap();
        let v = a.verifier.expose();
        assert_eq!(v.len(), 43);
        assert!(v
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_ne!(v, b.verifier.expose());
        assert_eq!(a.challenge, challenge_s256(v));
    }
}

//! The device authorization grant (RFC 8628) for machines without a browser: the request, the
//! answer shown to the user, and the polling decisions — sans-IO; the polling loop is in
//! [`super::authorizer`].

use std::time::Duration;

use serde::Deserialize;

use super::tokens::ErrorResponse;
use super::AuthError;

/// The grant type polled at the token endpoint.
pub(super) const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// RFC 8628 §3.2.
#[derive(Deserialize)]
pub(super) struct DeviceAuthorization {
    /// Secret: sent only to the token endpoint.
    pub(super) device_code: String,
    /// What the user types.
    pub(super) user_code: String,
    /// Where the user goes.
    pub(super) verification_uri: String,
    /// The same with the code filled in.
    #[serde(default)]
    pub(super) verification_uri_complete: Option<String>,
    /// Seconds the codes live.
    pub(super) expires_in: u64,
    /// Seconds between polls (default 5).
    #[serde(default)]
    pub(super) interval: Option<u64>,
}

/// What to do after a poll that did not return tokens.
#[derive(Debug)]
pub(super) enum Poll {
    /// Ask again after this long.
    Wait(Duration),
    /// Give up with this error.
    Fail(AuthError),
}

/// The next step after a token endpoint error while polling every `interval`.
pub(super) fn after_error(status: u16, body: &[u8], interval: Duration) -> Poll {
    let Ok(e) = serde_json::from_slice::<ErrorResponse>(body) else {
        return Poll::Fail(AuthError::Metadata(format!(
            "the token endpoint answered HTTP {status} while polling the device grant"
        )));
    };
    match e.error.as_str() {
        "authorization_pending" => Poll::Wait(interval),
        // RFC 8628 §3.5: slow down by 5 seconds, for this and every later poll.
        "slow_down" => Poll::Wait(interval + Duration::from_secs(5)),
        _ => Poll::Fail(e.into_error("the token endpoint")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polling_decisions() {
        let i = Duration::from_secs(5);
        assert!(matches!(
            after_error(400, br#"{"error":"authorization_pending"}"#, i),
            Poll::Wait(d) if d == i
        ));
        assert!(matches!(
            after_error(400, br#"{"error":"slow_down"}"#, i),
            Poll::Wait(d) if d == Duration::from_secs(10)
        ));
        assert!(matches!(
            after_error(400, br#"{"error":"access_denied"}"#, i),
            Poll::Fail(AuthError::OAuth { .. })
        ));
        assert!(matches!(after_error(500, b"oops", i), Poll::Fail(_)));
    }
}

//! One connection attempt to the relay, with OAuth sign-in: the upgrade carries the
//! authorizer's current bearer (refreshed near expiry); when the relay refuses it with a 401
//! (or a 403 `insufficient_scope`) whose Bearer challenge names protected-resource metadata, the
//! same [`Authorizer`] the HTTP upstream uses discovers, signs in (or refreshes), and the
//! upgrade is tried once more with the new token. Nothing here is special to our relay: any
//! resource server that answers as RFC 9728 says works. Not responsible for the upgrade itself
//! (`crate::connect`) or for when to try (the core).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::{ConnectRequest, Welcome};
use crate::connect::{self, Ws};
use crate::oauth::{challenge::parse_bearer, AuthError, Authorizer};
use crate::{relay_url, ClientError, Options, Secret};

/// A connection attempt in progress.
pub(crate) type Attempt = Pin<Box<dyn Future<Output = Result<(Ws, Welcome), ClientError>> + Send>>;

/// The authorizer for the tunnel at `opts.url`, when sign-in is configured (no static token).
/// The relay's WebSocket URL names the same resource as its http(s) one; plain `ws://` to a
/// remote host is never an OAuth sign-in (tokens would travel in clear), so none, quietly.
pub(crate) fn authorizer(opts: &Options) -> Option<Arc<Authorizer>> {
    let o = opts.oauth.as_ref()?;
    let url = relay_url::as_http(&opts.url);
    match Authorizer::new(&url, o.clone()) {
        Ok(a) => Some(Arc::new(a)),
        Err(AuthError::BadUrl(_)) => None,
        Err(e) => {
            warn!("{e}; a relay that asks for sign-in will be refused");
            None
        }
    }
}

/// Whether a refusal asks for an OAuth sign-in: 401, or 403 `insufficient_scope`, with a Bearer
/// challenge naming protected-resource metadata.
fn asks_sign_in(e: &ClientError) -> Option<&str> {
    let ClientError::Refused {
        status,
        www_authenticate: Some(www),
        ..
    } = e
    else {
        return None;
    };
    let c = parse_bearer(www)?;
    let wanted = *status == 401 || (*status == 403 && c.insufficient_scope());
    (wanted && c.resource_metadata.is_some()).then_some(www.as_str())
}

/// Starts a connection attempt; each upgrade is bounded by the request's timeout, a sign-in by
/// the authorizer's wait for the IDE.
pub(crate) fn open(
    opts: Arc<Options>,
    auth: Option<Arc<Authorizer>>,
    req: ConnectRequest,
) -> Attempt {
    Box::pin(async move {
        let bearer = match &auth {
            Some(a) => match tokio::time::timeout(req.timeout, a.bearer()).await {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    warn!("cannot use the stored sign-in: {e}");
                    None
                }
                Err(_) => {
                    warn!(
                        "the stored sign-in was not ready within {} (a slow refresh?); connecting without it",
                        shared::human_duration(req.timeout)
                    );
                    None
                }
            },
            None => None,
        };
        let first = upgrade(&opts, bearer.as_ref(), &req).await;
        let (Err(e), Some(a)) = (&first, &auth) else {
            return first;
        };
        let Some(www) = asks_sign_in(e) else {
            return first;
        };
        info!("the relay at {} asks for sign-in", opts.url);
        let token = bounded(a.ide_wait(), &opts.url, a.on_unauthorized(www)).await?;
        upgrade(&opts, Some(&token), &req).await
    })
}

/// A sign-in for the relay at `url`, given up after `wait` (the IDE's `initialize` waits on it;
/// [`Authorizer::ide_wait`], as on the HTTP upstream).
async fn bounded(
    wait: Duration,
    url: &str,
    sign_in: impl Future<Output = Result<Secret, AuthError>>,
) -> Result<Secret, ClientError> {
    let reason = match tokio::time::timeout(wait, sign_in).await {
        Ok(Ok(token)) => return Ok(token),
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!(
            "not completed within {}; run `bridge-client login {url}` in a terminal, then retry",
            shared::human_duration(wait)
        ),
    };
    Err(ClientError::SignIn {
        url: url.to_owned(),
        reason,
    })
}

async fn upgrade(
    opts: &Options,
    bearer: Option<&Secret>,
    req: &ConnectRequest,
) -> Result<(Ws, Welcome), ClientError> {
    let resume = req.resume.as_ref().map(|(id, seq)| (id.as_str(), *seq));
    match tokio::time::timeout(
        req.timeout,
        connect::connect(opts, bearer, resume, req.reestablish),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(ClientError::Unreachable {
            url: opts.url.clone(),
            reason: format!("no answer within {}", shared::human_duration(req.timeout)),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bearer_challenge_with_metadata_asks_for_sign_in() {
        let refused = |status, www: Option<&str>| ClientError::Refused {
            url: String::new(),
            status,
            reason: String::new(),
            www_authenticate: www.map(str::to_owned),
        };
        let prm =
            r#"Bearer resource_metadata="https://r/.well-known/oauth-protected-resource/mcp/t""#;
        assert!(asks_sign_in(&refused(401, Some(prm))).is_some());
        assert!(asks_sign_in(&refused(401, Some("Bearer realm=\"x\""))).is_none());
        assert!(asks_sign_in(&refused(401, None)).is_none());
        assert!(asks_sign_in(&refused(403, Some(prm))).is_none());
        let step_up = format!("{prm}, error=\"insufficient_scope\", scope=\"a\"");
        assert!(asks_sign_in(&refused(403, Some(&step_up))).is_some());
    }

    /// Log lines written while `f` runs.
    fn logged<T>(f: impl FnOnce() -> T) -> (T, String) {
        #[derive(Clone, Default)]
        struct Buf(Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0
                    .lock()
                    .map_err(|_| std::io::ErrorKind::Other)?
                    .extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let w = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .finish();
        let out = tracing::subscriber::with_default(sub, f);
        let text = buf
            .0
            .lock()
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        (out, text.unwrap_or_default())
    }

    #[test]
    fn plain_ws_to_a_remote_relay_has_no_authorizer_and_says_nothing() {
        let args = |url: &str| crate::settings::ConnectArgs {
            url: Some(url.into()),
            token_env: "MCP_BRIDGE_TEST_NO_SUCH_VAR".into(),
            no_keyring: true,
            max_message_size: 1,
            heartbeat_interval: 20.0,
            heartbeat_timeout: 45.0,
            max_backoff: 5.0,
            ..crate::settings::ConnectArgs::default()
        };
        // Sign-in configured (as without --no-keyring), the URL the tunnel's.
        let mut opts = args("https://127.0.0.1:1/mcp/t").resolve().expect("valid");
        assert!(opts.oauth.is_some());
        opts.url = "wss://127.0.0.1:1/mcp/t".into();
        let (a, log) = logged(|| authorizer(&opts));
        assert!(a.is_some() && log.is_empty(), "{log}");
        opts.url = "ws://relay.example.com:8080/mcp/t".into();
        let (a, log) = logged(|| authorizer(&opts));
        assert!(a.is_none());
        assert!(log.is_empty(), "no warning naming a URL never typed: {log}");
    }

    #[tokio::test]
    async fn a_sign_in_that_does_not_finish_is_given_up_after_the_wait() {
        let url = "wss://127.0.0.1:1/mcp/t";
        let wait = Duration::from_millis(50);
        let e = bounded(wait, url, std::future::pending())
            .await
            .expect_err("given up");
        assert!(
            matches!(&e, ClientError::SignIn { reason, .. } if reason.contains("not completed within")),
            "{e}"
        );
        let ok = bounded(wait, url, async { Ok(Secret::new("t".into())) }).await;
        assert_eq!(ok.map(|t| t.expose().to_owned()).ok().as_deref(), Some("t"));
        let e = bounded(wait, url, async { Err(AuthError::NotSignedIn(url.into())) })
            .await
            .expect_err("refused");
        assert!(matches!(e, ClientError::SignIn { .. }), "{e}");
    }
}

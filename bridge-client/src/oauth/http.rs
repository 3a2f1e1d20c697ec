//! The thin HTTP layer under the sign-in: GET a JSON document, POST a form or JSON, probe the
//! MCP server — over reqwest with our rustls config (ring, the platform's roots plus
//! `--ca-file`), no redirects followed (an OAuth endpoint that redirects is misconfigured, and
//! following would carry credentials elsewhere), bodies capped, every request bounded in time.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::de::DeserializeOwned;
use url::Url;

use super::flow::FormRequest;
use super::AuthError;
use crate::Secret;

/// Largest body read from an OAuth endpoint or a probe.
const MAX_BODY: usize = 1 << 20;
/// Bound on one request, connect included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What an MCP server said to a request.
#[derive(Debug, Clone)]
pub(super) struct Probe {
    /// HTTP status.
    pub(super) status: u16,
    /// The `WWW-Authenticate` header, when there is one.
    pub(super) www_authenticate: Option<String>,
}

/// An HTTP client for the OAuth calls.
#[derive(Clone)]
pub(super) struct Http {
    ca_file: Option<PathBuf>,
    /// Built at the first request: loading the platform's root certificates takes
    /// milliseconds that a session which never signs in should not wait for at start-up.
    client: Arc<OnceLock<reqwest::Client>>,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Http")
    }
}

fn http_err(url: &Url, e: impl std::fmt::Display) -> AuthError {
    AuthError::Http {
        url: url.to_string(),
        reason: e.to_string(),
    }
}

impl Http {
    /// A client trusting the platform's roots plus `ca_file` (set up at its first request).
    pub(super) fn new(ca_file: Option<&Path>) -> Result<Http, AuthError> {
        Ok(Http {
            ca_file: ca_file.map(Path::to_path_buf),
            client: Arc::new(OnceLock::new()),
        })
    }

    fn client(&self) -> Result<&reqwest::Client, AuthError> {
        if let Some(c) = self.client.get() {
            return Ok(c);
        }
        let tls = shared::tls::client_config(self.ca_file.as_deref(), None)
            .map_err(|e| AuthError::Io(format!("TLS setup failed: {e}")))?;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("bridge-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| AuthError::Io(format!("cannot build the HTTP client: {e}")))?;
        Ok(self.client.get_or_init(|| client))
    }

    /// A JSON document: `Ok(None)` for a 4xx (try the next well-known URL), an error for a
    /// failure or a body that is not the document.
    pub(super) async fn get_json<T: DeserializeOwned>(
        &self,
        url: &Url,
    ) -> Result<Option<T>, AuthError> {
        let resp = self
            .client()?
            .get(url.clone())
            .header("Accept", "application/json")
            .send()
            .await
            .map_err(|e| http_err(url, e))?;
        let status = resp.status().as_u16();
        if (400..500).contains(&status) {
            return Ok(None);
        }
        if !(200..300).contains(&status) {
            return Err(http_err(url, format!("HTTP {status}")));
        }
        let body = read_capped(url, resp).await?;
        serde_json::from_slice(&body).map(Some).map_err(|e| {
            AuthError::Metadata(format!("{url} is not a valid metadata document: {e}"))
        })
    }

    /// POSTs a form; the status and the body (which may hold tokens: never log it).
    pub(super) async fn post_form(&self, req: &FormRequest) -> Result<(u16, Vec<u8>), AuthError> {
        let mut b = self
            .client()?
            .post(req.url.clone())
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("Accept", "application/json")
            .body(req.body());
        if let Some(basic) = &req.basic {
            b = b.header("Authorization", basic.expose());
        }
        let resp = b.send().await.map_err(|e| http_err(&req.url, e))?;
        let status = resp.status().as_u16();
        Ok((status, read_capped(&req.url, resp).await?))
    }

    /// POSTs a JSON document (client registration).
    pub(super) async fn post_json(
        &self,
        url: &Url,
        body: &serde_json::Value,
    ) -> Result<(u16, Vec<u8>), AuthError> {
        let resp = self
            .client()?
            .post(url.clone())
            .header("Content-Type", "application/json")
            .header("Accept", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| http_err(url, e))?;
        let status = resp.status().as_u16();
        Ok((status, read_capped(url, resp).await?))
    }

    /// An MCP `initialize` POST, with `bearer` when given: how a server says whether (and
    /// where) to sign in. The answer's body is read and dropped.
    pub(super) async fn probe(
        &self,
        url: &Url,
        bearer: Option<&Secret>,
    ) -> Result<Probe, AuthError> {
        const INIT: &str = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"bridge-client","version":"0"}}}"#;
        let mut b = self
            .client()?
            .post(url.clone())
            .header("Content-Type", "application/json")
            .header("Accept", "application/json, text/event-stream")
            .header("MCP-Protocol-Version", "2025-11-25")
            .body(INIT);
        if let Some(t) = bearer {
            b = b.header("Authorization", format!("Bearer {}", t.expose()));
        }
        let resp = b.send().await.map_err(|e| http_err(url, e))?;
        let status = resp.status().as_u16();
        let www_authenticate = resp
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(Probe {
            status,
            www_authenticate,
        })
    }
}

async fn read_capped(url: &Url, mut resp: reqwest::Response) -> Result<Vec<u8>, AuthError> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| http_err(url, e))? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(http_err(url, "the answer is larger than 1 MiB"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

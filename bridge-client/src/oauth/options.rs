//! The sign-in options as the user gives them (`login`, and the HTTP upstream's
//! `connect`), resolved into [`Options`] before anything touches the network.

use std::path::PathBuf;
use std::time::Duration;

use super::registration::Preconfigured;
use super::AuthError;
use crate::Secret;

/// The environment variable that may hold a pre-registered client's secret.
pub const CLIENT_SECRET_ENV: &str = "MCP_BRIDGE_OAUTH_CLIENT_SECRET";

/// The longest an IDE's request waits for a sign-in, on the tunnel and the HTTP upstream alike
/// (hosts time requests out too): a longer `--oauth-timeout` still bounds `login`.
pub const MAX_IDE_WAIT: Duration = Duration::from_secs(120);

/// OAuth options on the command line.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct OAuthArgs {
    /// Pre-registered OAuth client id (skips Client ID Metadata Documents and dynamic
    /// registration). Register its redirect URI as http://127.0.0.1/callback (any port).
    #[arg(long, value_name = "ID")]
    pub oauth_client_id: Option<String>,

    /// File whose first line is the pre-registered client's secret (default: the environment
    /// variable MCP_BRIDGE_OAUTH_CLIENT_SECRET, if set).
    #[arg(long, value_name = "FILE", requires = "oauth_client_id")]
    pub oauth_client_secret_file: Option<PathBuf>,

    /// https URL of this client's Client ID Metadata Document, used as the client id where the
    /// authorization server accepts them.
    #[arg(long, value_name = "URL")]
    pub oauth_client_metadata_url: Option<String>,

    /// Leave the RFC 8707 `resource` parameter out (for providers that reject it, e.g. Entra
    /// ID's AADSTS9010010).
    #[arg(long)]
    pub oauth_no_resource: bool,

    /// Sign in with the device authorization grant (RFC 8628): a code to enter on another
    /// device, no local browser.
    #[arg(long)]
    pub device: bool,

    /// Seconds to wait for the sign-in to complete in the browser.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub oauth_timeout: u64,

    /// PEM file of a private CA to trust for the OAuth servers (besides the system's roots);
    /// when connecting, `--ca-file` is used if this is not given.
    #[arg(long = "oauth-ca-file", value_name = "FILE")]
    pub oauth_ca_file: Option<PathBuf>,
}

/// Resolved sign-in options.
#[derive(Debug, Clone)]
pub struct Options {
    /// A client the user configured, if any.
    pub client: Preconfigured,
    /// Leave `resource` out of every request.
    pub no_resource: bool,
    /// Use the device grant instead of the browser.
    pub device: bool,
    /// Bound on one interactive sign-in.
    pub sign_in_timeout: Duration,
    /// Bound on waiting for another process's sign-in (its timeout plus a margin).
    pub lock_timeout: Duration,
    /// Extra CA for the OAuth servers.
    pub ca_file: Option<PathBuf>,
    /// Whether a 401 may start an interactive sign-in (false: fail with "run login").
    pub interactive: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            client: Preconfigured::default(),
            no_resource: false,
            device: false,
            sign_in_timeout: Duration::from_secs(300),
            lock_timeout: Duration::from_secs(330),
            ca_file: None,
            interactive: true,
        }
    }
}

impl Options {
    /// How long an IDE's request waits for a sign-in: the sign-in's own bound, at most
    /// [`MAX_IDE_WAIT`].
    pub fn ide_wait(&self) -> Duration {
        self.sign_in_timeout.min(MAX_IDE_WAIT)
    }
}

impl OAuthArgs {
    /// Checks and resolves them (reads the secret file).
    pub fn resolve(&self) -> Result<Options, AuthError> {
        let client_secret = match &self.oauth_client_secret_file {
            Some(f) => {
                let text = std::fs::read_to_string(f).map_err(|e| {
                    AuthError::Io(format!(
                        "cannot read --oauth-client-secret-file {}: {e}",
                        f.display()
                    ))
                })?;
                let s = text.lines().next().unwrap_or("").trim().to_owned();
                if s.is_empty() {
                    return Err(AuthError::Io(format!(
                        "{} holds no client secret",
                        f.display()
                    )));
                }
                Some(Secret::new(s))
            }
            None if self.oauth_client_id.is_some() => std::env::var(CLIENT_SECRET_ENV)
                .ok()
                .filter(|s| !s.trim().is_empty())
                .map(|s| Secret::new(s.trim().to_owned())),
            None => None,
        };
        if let Some(u) = &self.oauth_client_metadata_url {
            let ok = url::Url::parse(u).is_ok_and(|p| p.scheme() == "https" && p.path().len() > 1);
            if !ok {
                return Err(AuthError::BadUrl(format!(
                    "--oauth-client-metadata-url must be an https URL with a path (e.g. \
                     https://example.com/client.json), not {u:?}"
                )));
            }
        }
        let sign_in_timeout = Duration::from_secs(self.oauth_timeout.max(1));
        Ok(Options {
            client: Preconfigured {
                client_id: self.oauth_client_id.clone(),
                client_secret,
                metadata_document: self.oauth_client_metadata_url.clone(),
            },
            no_resource: self.oauth_no_resource,
            device: self.device,
            sign_in_timeout,
            lock_timeout: sign_in_timeout + Duration::from_secs(30),
            ca_file: self.oauth_ca_file.clone(),
            interactive: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ide_waits_for_a_sign_in_at_most_max_ide_wait() {
        let wait = |secs| {
            let args = OAuthArgs {
                oauth_timeout: secs,
                ..OAuthArgs::default()
            };
            args.resolve().expect("valid").ide_wait()
        };
        assert_eq!(wait(300), MAX_IDE_WAIT, "the default 300 s is capped");
        assert_eq!(
            wait(30),
            Duration::from_secs(30),
            "a shorter sign-in bound wins"
        );
        assert_eq!(Options::default().ide_wait(), MAX_IDE_WAIT);
    }
}

//! From the command line to [`Options`]: the `connect` arguments as the user wrote them
//! ([`ConnectArgs`]), checked and resolved — URL, headers, durations, TLS, proxy, the token's
//! source — before anything connects. Parsing the command line itself is `main.rs`'s job.

use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

use shared::carrier::Heartbeat;

use crate::oauth::{AuthError, OAuthArgs};
use crate::{credentials, relay_url, Backoff, Options, Proxy, Secret};

/// The arguments of `bridge-client [connect] URL`.
#[derive(clap::Args, Debug, Default)]
pub struct ConnectArgs {
    /// The relay's URL for the tool (ws://HOST:PORT/mcp/TOOL or wss://HOST/mcp/TOOL: the
    /// mcp-bridge tunnel), or any MCP server's Streamable HTTP endpoint
    /// (https://HOST/PATH; http:// for this machine only, see --allow-insecure-http).
    pub url: Option<String>,

    /// Allow a plain http:// URL to another machine (the token and every message travel
    /// unencrypted: only for a network you trust).
    #[arg(long)]
    pub allow_insecure_http: bool,

    /// Extra header for the upgrade request or every HTTP request, as 'Name: value'
    /// (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    pub headers: Vec<String>,

    /// Environment variable that holds the relay token; when it is set, it wins over the
    /// keyring.
    #[arg(long, value_name = "VAR", default_value = "MCP_BRIDGE_TOKEN")]
    pub token_env: String,

    /// Read the relay token from this file instead (first line).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// Do not look in the OS keyring for a token.
    #[arg(long)]
    pub no_keyring: bool,

    /// PEM file of a private CA to trust for wss:// and https:// (in addition to the system's
    /// roots).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,

    /// PEM client certificate for mutual TLS (with --client-key).
    #[arg(long, value_name = "FILE", requires = "client_key")]
    pub client_cert: Option<PathBuf>,

    /// PEM private key of the client certificate.
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    pub client_key: Option<PathBuf>,

    /// HTTP proxy (http://[user:pass@]host:port), or `none`. Default: HTTPS_PROXY / HTTP_PROXY,
    /// honouring NO_PROXY.
    #[arg(long, value_name = "URL")]
    pub proxy: Option<String>,

    /// Largest JSON-RPC message accepted from the IDE or the relay, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = shared::DEFAULT_MAX_MESSAGE_SIZE)]
    pub max_message_size: usize,

    /// Seconds between WebSocket pings to the relay.
    #[arg(long, value_name = "SECS", default_value_t = 20.0)]
    pub heartbeat_interval: f64,

    /// Seconds without any frame from the relay after which the connection is declared dead
    /// (and resumed on a new one).
    #[arg(long, value_name = "SECS", default_value_t = 45.0)]
    pub heartbeat_timeout: f64,

    /// Largest delay between reconnection attempts, in seconds (they start at 0.1 s and double).
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub max_backoff: f64,

    /// More log output on stderr: -v debug, -vv trace (default: warnings). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// OAuth sign-in for an http(s):// MCP server that asks for it (used when no static token
    /// is given; --oauth-timeout also bounds, up to 120 s, how long the IDE's requests wait).
    #[command(flatten)]
    pub oauth: OAuthArgs,
}

/// Why the arguments cannot be used; each message says what to change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// No URL was given.
    #[error("give the relay URL, e.g. `bridge-client ws://127.0.0.1:8787/mcp/demo`")]
    NoUrl,
    /// The URL cannot be used.
    #[error(transparent)]
    Url(#[from] relay_url::UrlError),
    /// The URL does not parse.
    #[error("invalid relay URL {0}; expected ws://HOST:PORT/mcp/TOOL")]
    BadUrl(String),
    /// A `-H` header cannot be used.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// A duration is out of range.
    #[error("--{0} must be a number of seconds above 0")]
    Seconds(&'static str),
    /// The heartbeat would declare the relay dead before pinging it.
    #[error("--heartbeat-timeout must be longer than --heartbeat-interval")]
    Heartbeat,
    /// The TLS files cannot be used.
    #[error(transparent)]
    Tls(#[from] shared::tls::TlsError),
    /// The proxy setting cannot be used.
    #[error("{0}")]
    Proxy(String),
    /// The token file cannot be read.
    #[error("cannot read the token file {path}: {source}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The token file holds no token.
    #[error("the token file {0} is empty")]
    EmptyTokenFile(PathBuf),
    /// The OAuth options cannot be used.
    #[error(transparent)]
    OAuth(#[from] AuthError),
}

/// Why a `Name: value` header cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// No `:`.
    #[error("header `{0}` has no `:`; write it as 'Name: value'")]
    NoColon(String),
    /// The name is not a header name.
    #[error("`{0}` is not a valid header name")]
    Name(String),
    /// The value cannot go into a header.
    #[error("the value of header `{0}` is not valid")]
    Value(String),
}

/// Parses `Name: value` into a header pair.
pub fn parse_header(text: &str) -> Result<(HeaderName, HeaderValue), HeaderError> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| HeaderError::NoColon(text.to_owned()))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| HeaderError::Name(name.trim().to_owned()))?;
    let value =
        HeaderValue::from_str(value.trim()).map_err(|_| HeaderError::Value(name.to_string()))?;
    Ok((name, value))
}

impl ConnectArgs {
    /// Checks every argument and resolves the token, TLS and proxy settings.
    pub fn resolve(&self) -> Result<Options, SettingsError> {
        let url = self.url.clone().ok_or(SettingsError::NoUrl)?;
        let headers = self
            .headers
            .iter()
            .map(|h| parse_header(h))
            .collect::<Result<Vec<_>, _>>()?;
        let heartbeat = Heartbeat {
            interval: seconds("heartbeat-interval", self.heartbeat_interval)?,
            timeout: seconds("heartbeat-timeout", self.heartbeat_timeout)?,
        };
        if heartbeat.timeout <= heartbeat.interval {
            return Err(SettingsError::Heartbeat);
        }
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: seconds("max-backoff", self.max_backoff)?,
        };
        let upstream = relay_url::upstream(&url, self.allow_insecure_http)?;
        let uri: http::Uri = url
            .parse()
            .map_err(|_| SettingsError::BadUrl(url.clone()))?;
        let scheme = uri.scheme_str().unwrap_or("").to_ascii_lowercase();
        let host = uri.host().unwrap_or("").to_owned();
        let secure = scheme == "wss" || scheme == "https";
        let tls = if secure {
            let client = match (&self.client_cert, &self.client_key) {
                (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
                _ => None,
            };
            Some(shared::tls::client_config(self.ca_file.as_deref(), client)?)
        } else {
            None
        };
        let proxy = match self.proxy.as_deref() {
            Some("none") => None,
            Some(p) => Some(Proxy::parse(p).map_err(SettingsError::Proxy)?),
            None => Proxy::from_env(if secure { "wss" } else { "ws" }, &host)
                .transpose()
                .map_err(SettingsError::Proxy)?,
        };
        let token = self.token(&url)?;
        if token.is_some() && !secure && !relay_url::is_loopback(&host) {
            tracing::warn!("sending the token over unencrypted {scheme}:// to {host}; use a TLS URL so it cannot be read on the way");
        }
        // A static token wins; otherwise the client signs in when the server (an http(s)
        // upstream, or the relay of the tunnel) asks — on the tunnel only when the keyring may
        // be used (--no-keyring: no keyring read and no sign-in state there).
        let oauth =
            if token.is_none() && (upstream == relay_url::Upstream::Http || !self.no_keyring) {
                let mut o = self.oauth.resolve()?;
                // The server's private CA is most often the authorization server's too.
                if o.ca_file.is_none() {
                    o.ca_file.clone_from(&self.ca_file);
                }
                Some(o)
            } else {
                None
            };
        Ok(Options {
            upstream,
            oauth,
            token,
            url,
            headers,
            max_message_size: self.max_message_size.max(1024),
            heartbeat,
            backoff,
            tls,
            proxy,
            affinity: Some(affinity_key()),
        })
    }

    /// Where the token comes from: a file, the environment, or the keyring (in that order).
    fn token(&self, url: &str) -> Result<Option<Secret>, SettingsError> {
        if let Some(path) = &self.token_file {
            let text =
                std::fs::read_to_string(path).map_err(|source| SettingsError::TokenFile {
                    path: path.clone(),
                    source,
                })?;
            let t = text.lines().next().unwrap_or("").trim().to_owned();
            if t.is_empty() {
                return Err(SettingsError::EmptyTokenFile(path.clone()));
            }
            return Ok(Some(Secret::new(t)));
        }
        if let Some(t) = std::env::var(&self.token_env)
            .ok()
            .filter(|t| !t.is_empty())
        {
            return Ok(Some(Secret::new(t)));
        }
        if self.no_keyring {
            return Ok(None);
        }
        let origin = relay_url::origin(url)?;
        match credentials::load(&origin) {
            Ok(t) => Ok(t),
            Err(e) => {
                // A broken keyring should not stop a relay that needs no token.
                tracing::warn!("{e}; connecting without a stored token");
                Ok(None)
            }
        }
    }
}

fn seconds(name: &'static str, v: f64) -> Result<Duration, SettingsError> {
    if v.is_finite() && v > 0.0 && v < 86_400.0 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(SettingsError::Seconds(name))
    }
}

/// A random key for this process: the same on every (re)connect, different per IDE session.
fn affinity_key() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        let n = std::process::id() as u128
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
        b = n.to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse() {
        let (n, v) = parse_header("X-Team:  tools ").expect("valid");
        assert_eq!(n.as_str(), "x-team");
        assert_eq!(v.to_str().ok(), Some("tools"));
        assert!(matches!(
            parse_header("nocolon"),
            Err(HeaderError::NoColon(_))
        ));
        assert!(matches!(
            parse_header("bad name: x"),
            Err(HeaderError::Name(_))
        ));
    }

    #[test]
    fn durations_and_heartbeat_are_checked_before_anything_else() {
        let args = |interval: f64, timeout: f64| ConnectArgs {
            url: Some("ws://127.0.0.1:1/mcp/demo".into()),
            token_env: "MCP_BRIDGE_TEST_NO_SUCH_VAR".into(),
            no_keyring: true,
            max_message_size: 1,
            heartbeat_interval: interval,
            heartbeat_timeout: timeout,
            max_backoff: 5.0,
            ..ConnectArgs::default()
        };
        assert!(matches!(
            args(20.0, 10.0).resolve(),
            Err(SettingsError::Heartbeat)
        ));
        assert!(matches!(
            args(f64::NAN, 10.0).resolve(),
            Err(SettingsError::Seconds("heartbeat-interval"))
        ));
        let opts = args(20.0, 45.0).resolve().expect("valid");
        assert_eq!(opts.max_message_size, 1024, "raised to the floor");
        assert!(matches!(
            ConnectArgs::default().resolve(),
            Err(SettingsError::NoUrl)
        ));
    }

    #[test]
    fn no_keyring_means_no_sign_in_on_the_tunnel_but_not_on_an_http_upstream() {
        let args = |url: &str| ConnectArgs {
            url: Some(url.into()),
            token_env: "MCP_BRIDGE_TEST_NO_SUCH_VAR".into(),
            no_keyring: true,
            max_message_size: 1,
            heartbeat_interval: 20.0,
            heartbeat_timeout: 45.0,
            max_backoff: 5.0,
            ..ConnectArgs::default()
        };
        let tunnel = args("ws://127.0.0.1:1/mcp/demo").resolve().expect("valid");
        assert!(tunnel.oauth.is_none(), "no authorizer, no keyring read");
        let http = args("http://127.0.0.1:1/mcp").resolve().expect("valid");
        assert!(http.oauth.is_some(), "an http(s) upstream still signs in");
    }
}

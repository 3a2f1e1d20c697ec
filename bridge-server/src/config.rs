//! The relay's configuration: the TOML file format, its defaults, and its validation.
//!
//! Parsing and validation happen before any port is bound; every error names the file, the key
//! and, where TOML can tell, the line. Nothing here starts processes or sockets.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use shared::DEFAULT_MAX_MESSAGE_SIZE;

use crate::auth::{AuthConfig, Grant, JwtConfig, TokenEntry};

/// The address the relay listens on when the config does not say.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";

/// Name of the built-in demo tool in the default configuration.
pub const DEMO_TOOL: &str = "demo";

/// A relay configuration that has been checked and can be run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the relay accepts HTTP and WebSocket connections.
    pub listen: SocketAddr,
    /// TLS certificate, key and optional client CA (mutual TLS); plain TCP when unset.
    pub tls: Option<TlsFiles>,
    /// How callers are authenticated.
    pub auth: AuthConfig,
    /// A separate address for `/metrics` (and health); when unset, `/metrics` is on `listen`.
    pub metrics_listen: Option<SocketAddr>,
    /// `Origin` values accepted on upgrade requests that carry one (browsers do; bridge-client
    /// does not). Empty: any request with an `Origin` header is refused.
    pub allowed_origins: Vec<String>,
    /// Limits that apply to every session.
    pub limits: Limits,
    /// The hosted tools, by the name that appears in `/mcp/<name>`.
    pub tools: Vec<ToolConfig>,
}

/// PEM files for the relay's TLS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
    /// CA whose certificates clients must present (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// Relay-wide limits and timeouts.
#[derive(Debug, Clone)]
pub struct Limits {
    /// How long a client may take to send its request headers (slowloris protection).
    pub header_read_timeout: Duration,
    /// After a session ends: how long a tool gets to exit once its stdin is closed, and again
    /// after SIGTERM, before it is killed.
    pub kill_grace: Duration,
    /// How long shutdown lets calls in flight finish before ending sessions by force.
    pub shutdown_grace: Duration,
    /// How long a session and its tool are kept while the client is away.
    pub resume_window: Duration,
    /// Bound on messages kept for a client that has not acknowledged them (count).
    pub resume_buffer_messages: usize,
    /// Bound on messages kept for a client that has not acknowledged them (bytes).
    pub resume_buffer_bytes: usize,
    /// WebSocket ping interval and dead-peer timeout.
    pub heartbeat: shared::conn::Heartbeat,
    /// A session with no message either way for this long is ended (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// Most sessions the relay holds at once, over all tools.
    pub max_sessions: usize,
    /// Most sessions one user holds at once.
    pub max_sessions_per_user: usize,
    /// Most connections still in their TLS or HTTP handshake at once; more are dropped.
    pub max_handshakes: usize,
    /// Largest HTTP request head (request line and headers), in bytes.
    pub max_header_bytes: usize,
}

/// One hosted MCP tool: a command the relay starts once per session, speaking MCP on stdio.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolConfig {
    /// The name in the URL path: `/mcp/<name>`.
    pub name: String,
    /// Program to run (a path, or a name looked up in `PATH`).
    pub command: String,
    /// Arguments to the program.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment for the tool, on top of a small inherited set (PATH, HOME, LANG, …).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory of the tool; the relay's own when unset.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Largest JSON-RPC message, in bytes, accepted from or sent to this tool.
    #[serde(default = "default_max_message_size")]
    pub max_message_size: usize,
    /// Most sessions of this tool at once (each is a process); unlimited but for the relay's
    /// `max_sessions` when unset.
    #[serde(default)]
    pub max_sessions: Option<usize>,
}

fn default_max_message_size() -> usize {
    DEFAULT_MAX_MESSAGE_SIZE
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    listen: Option<String>,
    #[serde(default)]
    tls: Option<RawTls>,
    #[serde(default)]
    auth: Option<RawAuth>,
    #[serde(default)]
    security: RawSecurity,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default, rename = "tool")]
    tools: Vec<ToolConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    mode: String,
    #[serde(default, rename = "token")]
    tokens: Vec<RawToken>,
    jwt: Option<RawJwt>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    user: String,
    sha256: String,
    #[serde(default)]
    tools: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJwt {
    issuer: String,
    audience: String,
    #[serde(default = "default_leeway")]
    leeway_s: u64,
    hs256_secret_env: Option<String>,
    jwks_file: Option<PathBuf>,
    #[serde(default = "default_user_claim")]
    user_claim: String,
    #[serde(default = "default_tools_claim")]
    tools_claim: String,
}

fn default_leeway() -> u64 {
    30
}
fn default_user_claim() -> String {
    "sub".to_owned()
}
fn default_tools_claim() -> String {
    "mcp_tools".to_owned()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecurity {
    #[serde(default)]
    allowed_origins: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_sessions_per_user: Option<usize>,
    max_handshakes: Option<usize>,
    max_header_bytes: Option<usize>,
    header_read_timeout_ms: Option<u64>,
    kill_grace_ms: Option<u64>,
    shutdown_grace_ms: Option<u64>,
    resume_window_ms: Option<u64>,
    resume_buffer_messages: Option<usize>,
    resume_buffer_bytes: Option<usize>,
    heartbeat_interval_ms: Option<u64>,
    heartbeat_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    max_sessions: Option<usize>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            kill_grace: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(10),
            resume_window: Duration::from_secs(60),
            resume_buffer_messages: 1024,
            resume_buffer_bytes: 16 * 1024 * 1024,
            heartbeat: shared::conn::Heartbeat::default(),
            idle_timeout: Some(Duration::from_secs(30 * 60)),
            max_sessions: 1024,
            max_sessions_per_user: 64,
            max_handshakes: 256,
            max_header_bytes: 16 * 1024,
        }
    }
}

/// What is wrong with a configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a key is unknown or has the wrong type.
    #[error("{path}{location}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// ":LINE:COL" where TOML could tell.
        location: String,
        /// TOML's description.
        message: String,
    },
    /// A value is well-formed but not acceptable.
    #[error("{path}{location}: `{key}`: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// ":LINE" of the key, where it could be found.
        location: String,
        /// The dotted key (`tool[2].name`).
        key: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

impl Config {
    /// The built-in default: listen on 127.0.0.1:8787 and host the demo tool, run by `exe`
    /// (this very binary) with the `demo-tool` subcommand.
    pub fn builtin(exe: &Path) -> Config {
        Config {
            listen: DEFAULT_LISTEN
                .parse()
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8787))),
            tls: None,
            auth: AuthConfig::None,
            metrics_listen: None,
            allowed_origins: Vec::new(),
            limits: Limits::default(),
            tools: vec![ToolConfig {
                name: DEMO_TOOL.to_owned(),
                command: exe.to_string_lossy().into_owned(),
                args: vec!["demo-tool".to_owned()],
                env: BTreeMap::new(),
                cwd: None,
                max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
                max_sessions: None,
            }],
        }
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates config text; `path` is used in error messages only.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let location = e
                .span()
                .map(|span| {
                    let (line, col) = line_col(text, span.start);
                    format!(":{line}:{col}")
                })
                .unwrap_or_default();
            ConfigError::Syntax {
                path: path.to_owned(),
                location,
                message: e.message().trim().to_owned(),
            }
        })?;
        let invalid = |key: String, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            location: locate(text, &key)
                .map(|l| format!(":{l}"))
                .unwrap_or_default(),
            key,
            message,
        };
        let listen_text = raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            invalid(
                "listen".into(),
                format!(
                    "`{listen_text}` is not an address: write IP:PORT, e.g. \"127.0.0.1:8787\""
                ),
            )
        })?;
        let defaults = Limits::default();
        let ms = |v: Option<u64>, d: Duration| v.map(Duration::from_millis).unwrap_or(d);
        let limits = Limits {
            header_read_timeout: ms(
                raw.limits.header_read_timeout_ms,
                defaults.header_read_timeout,
            ),
            kill_grace: ms(raw.limits.kill_grace_ms, defaults.kill_grace),
            shutdown_grace: ms(raw.limits.shutdown_grace_ms, defaults.shutdown_grace),
            resume_window: ms(raw.limits.resume_window_ms, defaults.resume_window),
            resume_buffer_messages: raw
                .limits
                .resume_buffer_messages
                .unwrap_or(defaults.resume_buffer_messages),
            resume_buffer_bytes: raw
                .limits
                .resume_buffer_bytes
                .unwrap_or(defaults.resume_buffer_bytes),
            heartbeat: shared::conn::Heartbeat {
                interval: ms(
                    raw.limits.heartbeat_interval_ms,
                    defaults.heartbeat.interval,
                ),
                timeout: ms(raw.limits.heartbeat_timeout_ms, defaults.heartbeat.timeout),
            },
            idle_timeout: match raw.limits.idle_timeout_ms {
                Some(0) => None,
                Some(n) => Some(Duration::from_millis(n)),
                None => defaults.idle_timeout,
            },
            max_sessions: raw.limits.max_sessions.unwrap_or(defaults.max_sessions),
            max_sessions_per_user: raw
                .limits
                .max_sessions_per_user
                .unwrap_or(defaults.max_sessions_per_user),
            max_handshakes: raw
                .limits
                .max_handshakes
                .unwrap_or(defaults.max_handshakes)
                .max(1),
            max_header_bytes: raw
                .limits
                .max_header_bytes
                .unwrap_or(defaults.max_header_bytes)
                .max(8192),
        };
        if limits.heartbeat.interval.is_zero() {
            return Err(invalid(
                "limits.heartbeat_interval_ms".into(),
                "must be above 0".into(),
            ));
        }
        if limits.heartbeat.timeout <= limits.heartbeat.interval {
            return Err(invalid(
                "limits.heartbeat_timeout_ms".into(),
                format!(
                    "{} ms must be longer than heartbeat_interval_ms ({} ms), or live peers would be cut",
                    limits.heartbeat.timeout.as_millis(),
                    limits.heartbeat.interval.as_millis()
                ),
            ));
        }
        if limits.resume_buffer_messages == 0 {
            return Err(invalid(
                "limits.resume_buffer_messages".into(),
                "must be at least 1".into(),
            ));
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_owned()
            } else {
                base.join(p)
            }
        };
        let tls = raw.tls.as_ref().map(|t| TlsFiles {
            cert: resolve(&t.cert),
            key: resolve(&t.key),
            client_ca: t.client_ca.as_deref().map(resolve),
        });
        if let Some(t) = &tls {
            shared::tls::server_config(&t.cert, &t.key, t.client_ca.as_deref())
                .map_err(|e| invalid("tls".into(), e.to_string()))?;
        }
        let auth = match &raw.auth {
            None => AuthConfig::None,
            Some(a) => match a.mode.as_str() {
                "none" => AuthConfig::None,
                "tokens" => {
                    if a.tokens.is_empty() {
                        return Err(invalid(
                            "auth.token".into(),
                            "mode \"tokens\" needs at least one [[auth.token]] with `user`, `sha256` and `tools`".into(),
                        ));
                    }
                    let mut entries = Vec::new();
                    for (i, t) in a.tokens.iter().enumerate() {
                        let Some(sha256) = crate::auth::parse_hash(&t.sha256) else {
                            return Err(invalid(
                                format!("auth.token[{i}].sha256"),
                                "expected `sha256:` and 64 hex digits, as printed by `bridge-server hash-token`".into(),
                            ));
                        };
                        if t.user.trim().is_empty() {
                            return Err(invalid(
                                format!("auth.token[{i}].user"),
                                "is empty".into(),
                            ));
                        }
                        entries.push(TokenEntry {
                            user: t.user.clone(),
                            sha256,
                            grant: Grant::from_names(t.tools.iter().cloned()),
                        });
                    }
                    AuthConfig::Tokens(entries)
                }
                "jwt" => {
                    let Some(j) = &a.jwt else {
                        return Err(invalid(
                            "auth.jwt".into(),
                            "mode \"jwt\" needs an [auth.jwt] table with `issuer` and `audience`"
                                .into(),
                        ));
                    };
                    let hs256_secret = match &j.hs256_secret_env {
                        Some(var) => match std::env::var(var) {
                            Ok(v) if !v.is_empty() => Some(v.into_bytes()),
                            _ => {
                                return Err(invalid(
                                    "auth.jwt.hs256_secret_env".into(),
                                    format!("environment variable `{var}` is not set"),
                                ))
                            }
                        },
                        None => None,
                    };
                    let jwks = match &j.jwks_file {
                        Some(f) => {
                            let f = resolve(f);
                            let text = std::fs::read_to_string(&f).map_err(|e| {
                                invalid(
                                    "auth.jwt.jwks_file".into(),
                                    format!("cannot read {}: {e}", f.display()),
                                )
                            })?;
                            Some(serde_json::from_str(&text).map_err(|e| {
                                invalid(
                                    "auth.jwt.jwks_file".into(),
                                    format!("{} is not a JWKS: {e}", f.display()),
                                )
                            })?)
                        }
                        None => None,
                    };
                    if hs256_secret.is_none() && jwks.is_none() {
                        return Err(invalid(
                            "auth.jwt".into(),
                            "set `hs256_secret_env` (HS256) or `jwks_file` (RS256/ES256)".into(),
                        ));
                    }
                    AuthConfig::Jwt(Box::new(JwtConfig {
                        issuer: j.issuer.clone(),
                        audience: j.audience.clone(),
                        leeway_s: j.leeway_s,
                        hs256_secret,
                        jwks,
                        user_claim: j.user_claim.clone(),
                        tools_claim: j.tools_claim.clone(),
                    }))
                }
                other => {
                    return Err(invalid(
                        "auth.mode".into(),
                        format!("`{other}` is not a mode: use \"none\", \"tokens\" or \"jwt\""),
                    ))
                }
            },
        };
        if matches!(auth, AuthConfig::None) && !listen.ip().is_loopback() {
            return Err(invalid(
                "auth.mode".into(),
                format!(
                    "no authentication is allowed only on a loopback address, and `listen` is {listen}: \
                     configure [auth] with tokens or jwt, or listen on 127.0.0.1"
                ),
            ));
        }
        if raw.tools.is_empty() {
            return Err(invalid(
                "tool".into(),
                "no tools are configured: add at least one [[tool]] table with `name` and `command`"
                    .into(),
            ));
        }
        let mut seen = BTreeMap::new();
        for (i, tool) in raw.tools.iter().enumerate() {
            let key = |field: &str| format!("tool[{i}].{field}");
            if !valid_tool_name(&tool.name) {
                return Err(invalid(
                    key("name"),
                    format!(
                        "`{}` cannot be used in a URL path: use 1-64 letters, digits, `-`, `_` or `.`",
                        tool.name
                    ),
                ));
            }
            if let Some(first) = seen.insert(tool.name.as_str(), i) {
                return Err(invalid(
                    key("name"),
                    format!("`{}` is already the name of tool[{first}]", tool.name),
                ));
            }
            if tool.command.trim().is_empty() {
                return Err(invalid(key("command"), "the command is empty".into()));
            }
            if tool.max_message_size < 1024 {
                return Err(invalid(
                    key("max_message_size"),
                    format!(
                        "{} bytes is too small: use at least 1024",
                        tool.max_message_size
                    ),
                ));
            }
        }
        let metrics_listen = match &raw.metrics.listen {
            Some(text) => Some(text.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    "metrics.listen".into(),
                    format!("`{text}` is not an address: write IP:PORT, e.g. \"127.0.0.1:9090\""),
                )
            })?),
            None => None,
        };
        Ok(Config {
            listen,
            tls,
            auth,
            metrics_listen,
            allowed_origins: raw.security.allowed_origins,
            limits,
            tools: raw.tools,
        })
    }

    /// The tool served at `/mcp/<name>`.
    pub fn tool(&self, name: &str) -> Option<&ToolConfig> {
        self.tools.iter().find(|t| t.name == name)
    }
}

fn valid_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && name != "."
        && name != ".."
}

/// The 1-based line where a dotted key such as `tool[2].name` or `auth.token[0].sha256` is set,
/// found by following table headers; the table's header line if the key itself is absent.
fn locate(text: &str, key: &str) -> Option<usize> {
    let (table, index, field) = match key.rsplit_once('.') {
        Some((t, f)) => {
            let (t, i) = match t.split_once('[') {
                Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
                None => (t, None),
            };
            (t.to_owned(), i, f)
        }
        None => match key.split_once('[') {
            Some((name, rest)) => (name.to_owned(), rest.trim_end_matches(']').parse().ok(), ""),
            None => (String::new(), None, key),
        },
    };
    let mut current = String::new();
    let mut seen = 0usize;
    let mut header_line = None;
    for (n, line) in text.lines().enumerate() {
        let l = line.trim();
        if let Some(name) = l.strip_prefix("[[").and_then(|r| r.strip_suffix("]]")) {
            current = name.trim().to_owned();
            if current == table {
                if index == Some(seen) {
                    header_line = Some(n + 1);
                }
                seen += 1;
            }
            continue;
        }
        if let Some(name) = l.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            current = name.trim().to_owned();
            if current == table && index.is_none() {
                header_line = Some(n + 1);
            }
            continue;
        }
        let in_table = current == table && (index.is_none() || index == Some(seen.wrapping_sub(1)));
        if in_table && !field.is_empty() {
            if let Some((k, _)) = l.split_once('=') {
                if k.trim() == field {
                    return Some(n + 1);
                }
            }
        }
    }
    header_line
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("relay.toml"))
    }

    #[test]
    fn a_full_config_parses() {
        let cfg = parse(
            r#"
listen = "127.0.0.1:9000"
[limits]
kill_grace_ms = 500
[[tool]]
name = "time"
command = "mcp-server-time"
args = ["--local-timezone", "UTC"]
env = { TZ = "UTC" }
cwd = "/tmp"
max_message_size = 65536
"#,
        )
        .expect("valid");
        assert_eq!(cfg.listen.port(), 9000);
        assert_eq!(cfg.limits.kill_grace, Duration::from_millis(500));
        let tool = cfg.tool("time").expect("tool");
        assert_eq!(tool.args, ["--local-timezone", "UTC"]);
        assert_eq!(tool.env.get("TZ").map(String::as_str), Some("UTC"));
        assert_eq!(tool.max_message_size, 65536);
    }

    #[test]
    fn errors_name_the_key_and_line() {
        let err = parse("listen = \"nowhere\"\n[[tool]]\nname='a'\ncommand='b'\n").unwrap_err();
        assert!(err.to_string().contains("`listen`"), "{err}");
        let err = parse("[[tool]]\nname = 'a'\ncomand = 'x'\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("relay.toml:3:"), "{text}");
        assert!(text.contains("comand"), "{text}");
        let err = parse("[[tool]]\nname='a b'\ncommand='x'\n").unwrap_err();
        assert!(
            err.to_string().contains("relay.toml:2: `tool[0].name`"),
            "{err}"
        );
        let err = parse("[[tool]]\nname='a'\ncommand='x'\n[[tool]]\nname='a'\ncommand='y'\n")
            .unwrap_err();
        assert!(
            err.to_string().contains("relay.toml:5: `tool[1].name`"),
            "{err}"
        );
        let err = parse("listen = '127.0.0.1:1'\n").unwrap_err();
        assert!(err.to_string().contains("no tools"), "{err}");
    }
}

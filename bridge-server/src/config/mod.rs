//! The relay's configuration: the TOML file format, its defaults, and its validation.
//!
//! Parsing and validation happen before any port is bound. Every section is checked and every
//! problem collected (one function per section, in the files of this module), so one run
//! reports them all, in file order, each with the file, line, column and key. A file that is not
//! valid TOML is reported with every syntax error the parser finds; the other checks run once it
//! parses. Problems that do not stop the relay (a tool command not installed yet) are warnings.
//! Nothing here starts processes or sockets.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::DeTable;

use shared::DEFAULT_MAX_MESSAGE_SIZE;

use crate::auth::AuthConfig;

mod admin;
mod auth;
mod diag;
mod hosting;
mod limits;
mod read;
mod server;
#[cfg(test)]
mod tests;
mod tools;

pub use diag::{ConfigError, Problem, Severity};
pub use server::check_node_id;

use diag::Problems;
use read::Section;

/// The address the relay listens on when the config does not say.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";

/// Name of the built-in demo tool in the default configuration.
pub const DEMO_TOOL: &str = "demo";

/// The top-level keys of a config file.
const TOP_LEVEL_KEYS: &[&str] = &[
    "listen", "node_id", "cluster", "tls", "auth", "security", "metrics", "admin", "limits", "tool",
];

/// A relay configuration that has been checked and can be run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the relay accepts HTTP and WebSocket connections.
    pub listen: SocketAddr,
    /// This node's name behind a load balancer (`node_id`): every session id starts with it and
    /// a dot, so the balancer can send a Streamable HTTP session's requests to the node that
    /// holds it. `None`: session ids are 32 hex digits.
    pub node_id: Option<String>,
    /// Where the other nodes are (`[cluster]`), to pass on requests for their sessions.
    pub cluster: Cluster,
    /// `[auth] on_revoke`.
    pub on_revoke: OnRevoke,
    /// TLS certificate, key and optional client CA (mutual TLS); plain TCP when unset.
    pub tls: Option<TlsFiles>,
    /// How callers are authenticated.
    pub auth: AuthConfig,
    /// A separate address for `/metrics` (and health); when unset, `/metrics` is on `listen`.
    pub metrics_listen: Option<SocketAddr>,
    /// The session admin API's tokens (their names and hashes), served on `metrics_listen`
    /// only. Empty: the admin API is off.
    pub admin_tokens: Vec<crate::auth::TokenEntry>,
    /// `Origin` values accepted on upgrade requests that carry one (browsers do; bridge-client
    /// does not). Empty: any request with an `Origin` header is refused.
    pub allowed_origins: Vec<String>,
    /// Limits that apply to every session.
    pub limits: Limits,
    /// The hosted tools, by the name that appears in `/mcp/<name>`.
    pub tools: Vec<ToolConfig>,
}

/// What a reload does to a live session whose static token, or its grant, was removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnRevoke {
    /// End the session at once (calls in flight answered with an error).
    #[default]
    End,
    /// Let the call in flight, or the next one, be answered; then end the session.
    NextCall,
}

/// The other relay nodes (`[cluster]`), by node id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cluster {
    /// `peers`: node id → `HOST:PORT`.
    pub peers: BTreeMap<String, String>,
    /// `peer_address`: `HOST:PORT` with `{node}` for the node id, for nodes not in `peers`.
    pub peer_address: Option<String>,
}

impl Cluster {
    /// Where node `node` (a valid node id) listens, if this relay knows.
    pub fn address_of(&self, node: &str) -> Option<String> {
        self.peers.get(node).cloned().or_else(|| {
            self.peer_address
                .as_ref()
                .map(|template| template.replace("{node}", node))
        })
    }

    /// Whether any other node is known.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty() && self.peer_address.is_none()
    }
}

/// A config that is valid, and what is worth a warning in it.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The config, ready to run.
    pub config: Config,
    /// Warnings (e.g. a tool command that cannot be found yet), in file order.
    pub warnings: Vec<Problem>,
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
#[derive(Debug, Clone, PartialEq)]
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
    pub heartbeat: shared::carrier::Heartbeat,
    /// A session with no message either way for this long is ended (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// Most sessions the relay holds at once, over all tools.
    pub max_sessions: usize,
    /// Most sessions one user holds at once.
    pub max_sessions_per_user: usize,
    /// Most connections still in their TLS or HTTP handshake at once. When all are taken, the
    /// oldest handshakes of the source holding the most give way to a newcomer from a source
    /// holding fewer; otherwise the newcomer is closed.
    pub max_handshakes: usize,
    /// Most connections from one source (an IPv4 address, or an IPv6 /64) in their TLS or HTTP
    /// handshake at once; more from that source are closed at once.
    pub max_handshakes_per_source: usize,
    /// Calls (requests) per second one user may make over all sessions and tools; `None`: no
    /// limit.
    pub call_rate: Option<crate::policy::rate::Rate>,
    /// Largest HTTP request head (request line and headers), in bytes.
    pub max_header_bytes: usize,
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
            heartbeat: shared::carrier::Heartbeat::default(),
            idle_timeout: Some(Duration::from_secs(30 * 60)),
            max_sessions: 1024,
            max_sessions_per_user: 64,
            max_handshakes: 256,
            max_handshakes_per_source: 32,
            call_rate: None,
            max_header_bytes: 16 * 1024,
        }
    }
}

/// One hosted MCP tool: a command the relay starts once per session, speaking MCP on stdio.
#[derive(Debug, Clone)]
pub struct ToolConfig {
    /// The name in the URL path: `/mcp/<name>`.
    pub name: String,
    /// Program to run (a path, or a name looked up in `PATH`).
    pub command: String,
    /// Arguments to the program.
    pub args: Vec<String>,
    /// Environment for the tool, on top of a small inherited set (PATH, HOME, LANG, …).
    pub env: BTreeMap<String, String>,
    /// Working directory of the tool; the relay's own when unset.
    pub cwd: Option<PathBuf>,
    /// Largest JSON-RPC message, in bytes, accepted from or sent to this tool.
    pub max_message_size: usize,
    /// Most sessions of this tool at once (each is a process); unlimited but for the relay's
    /// `max_sessions` when unset.
    pub max_sessions: Option<usize>,
    /// Environment values read from files when a session starts (`{user}` allowed in the path);
    /// the value never appears in a log.
    pub env_files: BTreeMap<String, PathBuf>,
    /// Create `cwd` (mode 0700) when a session starts, if it is not there yet.
    pub create_cwd: bool,
    /// Resource limits of each of this tool's processes.
    pub limits: ToolLimits,
    /// Run the tool in a bubblewrap sandbox.
    pub sandbox: Option<Sandbox>,
    /// Calls per second one user may make to this tool; `None`: no limit.
    pub call_rate: Option<crate::policy::rate::Rate>,
    /// Which of the server's own tools each user may see and call.
    pub policy: crate::policy::ToolPolicy,
}

/// Resource limits of one tool process (and whatever it starts). `None`: no limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolLimits {
    /// Memory, in bytes: a cgroup's `memory.max` when the relay has a cgroup to delegate,
    /// else `RLIMIT_DATA`.
    pub memory: Option<u64>,
    /// CPU time in seconds (`RLIMIT_CPU`; the tool gets SIGXCPU, then SIGKILL a second later).
    pub cpu_seconds: Option<u64>,
    /// Processes and threads (a cgroup's `pids.max`; without one, `RLIMIT_NPROC` when the relay
    /// does not run as root).
    pub processes: Option<u64>,
    /// Open files (`RLIMIT_NOFILE`).
    pub open_files: Option<u64>,
    /// Most bytes the tool may write on stdout without a newline before it is ended.
    pub max_unterminated: u64,
}

impl ToolLimits {
    /// The defaults: generous for a real tool (a Node.js server with npx), tight enough that
    /// one runaway tool cannot take the node.
    pub fn defaults(max_message_size: usize) -> ToolLimits {
        ToolLimits {
            memory: Some(2 << 30),
            cpu_seconds: None,
            processes: Some(256),
            open_files: Some(1024),
            max_unterminated: (max_message_size as u64).saturating_mul(4).max(1 << 20),
        }
    }
}

/// A bubblewrap sandbox around a tool: the system read-only, a private `/tmp`, no network
/// unless allowed, and only the tool's `cwd` and `writable` paths writable.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sandbox {
    /// Keep the host's network (off: the tool sees only its own loopback).
    pub network: bool,
    /// More paths to show read-only (templates; absolute).
    pub read_only: Vec<String>,
    /// More paths to show writable (templates; absolute).
    pub writable: Vec<String>,
    /// Paths to hide (an empty folder in their place), e.g. the folder of every user's data.
    pub hide: Vec<String>,
}

impl Config {
    /// The built-in default: listen on 127.0.0.1:8787 and host the demo tool, run by `exe`
    /// (this very binary) with the `demo-tool` subcommand.
    pub fn builtin(exe: &Path) -> Config {
        Config {
            listen: DEFAULT_LISTEN
                .parse()
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8787))),
            node_id: None,
            cluster: Cluster::default(),
            on_revoke: OnRevoke::End,
            tls: None,
            auth: AuthConfig::None,
            metrics_listen: None,
            admin_tokens: Vec::new(),
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
                env_files: BTreeMap::new(),
                create_cwd: false,
                limits: ToolLimits::defaults(DEFAULT_MAX_MESSAGE_SIZE),
                sandbox: None,
                call_rate: None,
                policy: crate::policy::ToolPolicy::default(),
            }],
        }
    }

    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and checks config text; `path` is used in messages, and relative TLS and JWKS
    /// paths are taken from its folder.
    pub fn parse(text: &str, path: &Path) -> Result<Loaded, ConfigError> {
        let mut p = Problems::new(path, text);
        let (doc, syntax) = DeTable::parse_recoverable(text);
        if !syntax.is_empty() {
            // What the parser recovered is a guess: checking it would report problems that are
            // not there. Report the syntax errors, all of them.
            for e in &syntax {
                p.syntax(e.span().unwrap_or(0..0), e.message());
            }
            return Err(p.into_error());
        }
        let root = Section::root(doc.get_ref());
        root.only(TOP_LEVEL_KEYS, &mut p);
        let base = path.parent().unwrap_or(Path::new("."));
        let listen = server::listen(&root, &mut p);
        let node_id = server::node_id(&root, &mut p);
        let cluster = server::cluster(&root, &mut p);
        let on_revoke = auth::on_revoke(&root, &mut p);
        let tls = server::tls(&root, base, &mut p);
        let auth = auth::auth(&root, base, &mut p);
        if let (Some(listen), Some(auth)) = (listen, &auth) {
            server::auth_off_loopback(&root, listen, auth, &mut p);
        }
        if matches!(auth, Some(AuthConfig::Certs(_)))
            && tls.as_ref().is_none_or(|t| t.client_ca.is_none())
        {
            p.error(
                root.span("auth"),
                "auth.mode",
                "mode \"mtls\" needs [tls] with `client_ca`: the CA whose client certificates \
                 the relay accepts",
            );
        }
        let allowed_origins = server::security(&root, &mut p);
        let metrics_listen = server::metrics(&root, &mut p);
        let admin_tokens = admin::admin(&root, metrics_listen, auth.as_ref(), &mut p);
        let limits = limits::limits(&root, &mut p);
        let tools = tools::tools(&root, base, &mut p);
        let config = Config {
            listen: listen.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8787))),
            node_id,
            cluster,
            on_revoke,
            tls,
            auth: auth.unwrap_or(AuthConfig::None),
            metrics_listen,
            admin_tokens,
            allowed_origins,
            limits,
            tools,
        };
        p.finish(config)
            .map(|(config, warnings)| Loaded { config, warnings })
    }

    /// The tool served at `/mcp/<name>`.
    pub fn tool(&self, name: &str) -> Option<&ToolConfig> {
        self.tools.iter().find(|t| t.name == name)
    }
}

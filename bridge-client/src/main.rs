//! The `bridge-client` binary: the command an IDE runs as its MCP stdio server, plus `login` and
//! `logout` to keep the relay token in the OS keyring.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use bridge_client::{credentials, parse_header, relay_url, Backoff, Options, Proxy, Secret};
use shared::conn::Heartbeat;

/// Connects an IDE's MCP stdio session to a tool hosted on an mcp-bridge relay.
///
/// `bridge-client URL` (or `bridge-client connect URL`) is the IDE's command: stdin/stdout carry
/// JSON-RPC, logs go to stderr. `bridge-client login URL` stores the relay token in the OS
/// keyring; `bridge-client logout URL` removes it.
///
/// Tokens are stored per origin: the URL's host and port, with ws:// and http:// counting as one
/// scheme and wss:// and https:// as another; the path is ignored. So `login http://HOST:PORT`
/// serves `ws://HOST:PORT/mcp/TOOL`, and one login serves every tool of a relay.
#[derive(Parser, Debug)]
#[command(version, about, args_conflicts_with_subcommands = true, after_help = EXIT_STATUS)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,

    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the stdio session (the default when a URL is given directly).
    Connect(Box<ConnectArgs>),
    /// Store the token for a relay in the OS keyring (read without echo, or the first line of
    /// stdin when it is not a terminal: `bridge-client login URL < alice.token`).
    Login {
        /// Any URL of the relay: ws://, wss://, http:// or https:// (the token is stored for its
        /// origin: see `bridge-client --help`).
        url: String,
    },
    /// Remove the stored token for a relay.
    Logout {
        /// Any URL of the relay (the same origin rule as login).
        url: String,
    },
}

const EXIT_STATUS: &str = "Exit status: 0 the IDE closed stdin (the session ended normally), or \
login/logout done; 1 the first connection failed (the relay cannot be reached, or refuses), \
writing to stdout failed, or the keyring or the token could not be used; 2 invalid command-line \
arguments (including a URL that is not ws:// or wss://, and an unreadable --token-file).";

/// Exit status for invalid command-line arguments, as clap uses.
const EXIT_USAGE: u8 = 2;

/// Why a command failed: a usage error (exit 2) or anything else (exit 1).
enum Failure {
    Usage(String),
    Other(String),
}

impl From<relay_url::UrlError> for Failure {
    fn from(e: relay_url::UrlError) -> Failure {
        Failure::Usage(e.to_string())
    }
}

#[derive(Args, Debug)]
struct ConnectArgs {
    /// The relay's URL for the tool: ws://HOST:PORT/mcp/TOOL or wss://HOST/mcp/TOOL.
    url: Option<String>,

    /// Extra header for the upgrade request, as 'Name: value' (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    headers: Vec<String>,

    /// Environment variable that holds the relay token; when it is set, it wins over the
    /// keyring.
    #[arg(long, value_name = "VAR", default_value = "MCP_BRIDGE_TOKEN")]
    token_env: String,

    /// Read the relay token from this file instead (first line).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,

    /// Do not look in the OS keyring for a token.
    #[arg(long)]
    no_keyring: bool,

    /// PEM file of a private CA to trust for wss:// (in addition to the system's roots).
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,

    /// PEM client certificate for mutual TLS (with --client-key).
    #[arg(long, value_name = "FILE", requires = "client_key")]
    client_cert: Option<PathBuf>,

    /// PEM private key of the client certificate.
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    client_key: Option<PathBuf>,

    /// HTTP proxy (http://[user:pass@]host:port), or `none`. Default: HTTPS_PROXY / HTTP_PROXY,
    /// honouring NO_PROXY.
    #[arg(long, value_name = "URL")]
    proxy: Option<String>,

    /// Largest JSON-RPC message accepted from the IDE or the relay, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = shared::DEFAULT_MAX_MESSAGE_SIZE)]
    max_message_size: usize,

    /// Seconds between WebSocket pings to the relay.
    #[arg(long, value_name = "SECS", default_value_t = 20.0)]
    heartbeat_interval: f64,

    /// Seconds without any frame from the relay after which the connection is declared dead
    /// (and resumed on a new one).
    #[arg(long, value_name = "SECS", default_value_t = 45.0)]
    heartbeat_timeout: f64,

    /// Largest delay between reconnection attempts, in seconds (they start at 0.1 s and double).
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    max_backoff: f64,

    /// More log output on stderr: -v debug, -vv trace (default: warnings). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Cmd::Login { url }) => finish(login(&url)),
        Some(Cmd::Logout { url }) => finish(logout(&url)),
        Some(Cmd::Connect(args)) => connect(*args),
        None => connect(cli.connect),
    }
}

fn finish(result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(e)) => {
            eprintln!("bridge-client: {e}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(Failure::Other(e)) => {
            eprintln!("bridge-client: {e}");
            ExitCode::FAILURE
        }
    }
}

fn login(url: &str) -> Result<(), Failure> {
    let origin = relay_url::origin(url)?;
    let token = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(format!("Token for {origin}: "))
            .map_err(|e| Failure::Other(format!("cannot read the token: {e}")))?
    } else {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Failure::Other(format!("cannot read the token from stdin: {e}")))?;
        text.lines().next().unwrap_or("").to_owned()
    };
    let token = token.trim();
    if token.is_empty() {
        return Err(Failure::Other(
            "no token given: type it at the prompt, or give it on stdin \
             (`bridge-client login URL < alice.token`)"
                .into(),
        ));
    }
    credentials::store(&origin, &Secret::new(token.to_owned()))
        .map_err(|e| Failure::Other(e.to_string()))?;
    eprintln!(
        "bridge-client: token for {origin} stored in the {}; it serves every {} URL of that host \
         and port",
        credentials::store_name(),
        same_origin_schemes(&origin)
    );
    Ok(())
}

fn logout(url: &str) -> Result<(), Failure> {
    let origin = relay_url::origin(url)?;
    match credentials::delete(&origin).map_err(|e| Failure::Other(e.to_string()))? {
        true => eprintln!(
            "bridge-client: token for {origin} removed from the {}",
            credentials::store_name()
        ),
        false => eprintln!("bridge-client: no token was stored for {origin}"),
    }
    Ok(())
}

/// "ws:// and http://" for a plain origin, "wss:// and https://" for a TLS one.
fn same_origin_schemes(origin: &str) -> &'static str {
    if origin.starts_with("wss://") {
        "wss:// and https://"
    } else {
        "ws:// and http://"
    }
}

/// Where the token comes from: a file, the environment, or the keyring (in that order).
fn token(args: &ConnectArgs, url: &str) -> Result<Option<Secret>, String> {
    if let Some(path) = &args.token_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
        let t = text.lines().next().unwrap_or("").trim().to_owned();
        if t.is_empty() {
            return Err(format!("the token file {} is empty", path.display()));
        }
        return Ok(Some(Secret::new(t)));
    }
    if let Some(t) = std::env::var(&args.token_env)
        .ok()
        .filter(|t| !t.is_empty())
    {
        return Ok(Some(Secret::new(t)));
    }
    if args.no_keyring {
        return Ok(None);
    }
    let origin = relay_url::origin(url).map_err(|e| e.to_string())?;
    match credentials::load(&origin) {
        Ok(t) => Ok(t),
        Err(e) => {
            // A broken keyring should not stop a relay that needs no token.
            tracing::warn!("{e}; connecting without a stored token");
            Ok(None)
        }
    }
}

fn connect(args: ConnectArgs) -> ExitCode {
    init_logging(args.verbose);
    let Some(url) = args.url.clone() else {
        eprintln!(
            "bridge-client: give the relay URL, e.g. `bridge-client ws://127.0.0.1:8787/mcp/demo`"
        );
        return ExitCode::from(EXIT_USAGE);
    };
    let opts = match options(&args, url) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bridge-client: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // One thread is plenty for one IDE session, and saves cross-thread wake-ups on every hop.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bridge-client: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let (input, output) = bridge_client::stdio::open();
        bridge_client::run_until(opts, input, output, stop_signal()).await
    });
    // A terminal's stdin is read on a blocking thread that cannot be interrupted; do not wait
    // for it.
    runtime.shutdown_timeout(Duration::from_millis(50));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bridge-client: {e}");
            ExitCode::FAILURE
        }
    }
}

fn options(args: &ConnectArgs, url: String) -> Result<Options, String> {
    let mut headers = Vec::new();
    for h in &args.headers {
        headers.push(parse_header(h)?);
    }
    let secs = |name: &str, v: f64| -> Result<Duration, String> {
        if v.is_finite() && v > 0.0 && v < 86_400.0 {
            Ok(Duration::from_secs_f64(v))
        } else {
            Err(format!("--{name} must be a number of seconds above 0"))
        }
    };
    let heartbeat = Heartbeat {
        interval: secs("heartbeat-interval", args.heartbeat_interval)?,
        timeout: secs("heartbeat-timeout", args.heartbeat_timeout)?,
    };
    if heartbeat.timeout <= heartbeat.interval {
        return Err("--heartbeat-timeout must be longer than --heartbeat-interval".into());
    }
    let backoff = Backoff {
        initial: Duration::from_millis(100),
        max: secs("max-backoff", args.max_backoff)?,
    };
    relay_url::check_tunnel_url(&url).map_err(|e| e.to_string())?;
    let uri: http::Uri = url
        .parse()
        .map_err(|_| format!("invalid relay URL {url}; expected ws://HOST:PORT/mcp/TOOL"))?;
    let scheme = uri.scheme_str().unwrap_or("").to_owned();
    let host = uri.host().unwrap_or("").to_owned();
    let tls = if scheme == "wss" {
        let client = match (&args.client_cert, &args.client_key) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            _ => None,
        };
        Some(
            shared::tls::client_config(args.ca_file.as_deref(), client)
                .map_err(|e| e.to_string())?,
        )
    } else {
        None
    };
    let proxy = match args.proxy.as_deref() {
        Some("none") => None,
        Some(p) => Some(Proxy::parse(p)?),
        None => Proxy::from_env(&scheme, &host).transpose()?,
    };
    let token = token(args, &url)?;
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if token.is_some() && scheme == "ws" && !loopback {
        tracing::warn!("sending the relay token over unencrypted ws:// to {host}; use wss:// so it cannot be read on the way");
    }
    Ok(Options {
        token,
        url,
        headers,
        max_message_size: args.max_message_size.max(1024),
        heartbeat,
        backoff,
        tls,
        proxy,
        affinity: Some(affinity_key()),
    })
}

/// Resolves at the first SIGINT, SIGTERM or SIGHUP: how hosts end their stdio servers
/// (Claude Code sends SIGINT, Gemini CLI SIGTERM, without closing stdin first).
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let kinds = [
            SignalKind::interrupt(),
            SignalKind::terminate(),
            SignalKind::hangup(),
        ];
        let mut streams: Vec<_> = kinds.into_iter().filter_map(|k| signal(k).ok()).collect();
        if streams.is_empty() {
            return std::future::pending().await;
        }
        let waits = streams.iter_mut().map(|s| Box::pin(s.recv()));
        let _ = futures_util::future::select_all(waits).await;
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
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

fn init_logging(verbose: u8) {
    use tracing_subscriber::prelude::*;
    // The same levels as bridge-server's -v and -vv; the default is quieter here, as the
    // IDE shows every line in its MCP log.
    let default = match verbose {
        0 => "warn",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .with_filter(filter)
        .with_filter(shared::no_secret_traces());
    tracing_subscriber::registry().with(layer).init();
}

//! The `bridge-client` binary: the command an IDE runs as its MCP stdio server, plus `login` and
//! `logout` to keep the relay token in the OS keyring.

use std::io::{IsTerminal, Read};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use bridge_client::oauth::{self, Authorizer, LoginOutcome, OAuthArgs};
use bridge_client::settings::ConnectArgs;
use bridge_client::{credentials, relay_url, Secret};

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
    /// Sign in ahead of time. For an http(s):// MCP server that asks for OAuth (a 401 naming
    /// its authorization server): the OAuth 2.1 sign-in in a browser (or --device), tokens in
    /// the OS keyring. Otherwise — a relay's ws:// or wss:// URL, or a server that takes a
    /// static token — store the token in the OS keyring (read without echo, or the first line
    /// of stdin when it is not a terminal: `bridge-client login URL < alice.token`).
    Login {
        /// The MCP server's URL (https://host/mcp), or any URL of the relay: ws://, wss://,
        /// http:// or https:// (a static token is stored for its origin: see
        /// `bridge-client --help`).
        url: String,

        /// Check the stored OAuth sign-in instead: make one authenticated request (refreshing
        /// or signing in again when the server refuses the token) and say what is stored.
        #[arg(long)]
        check: bool,

        #[command(flatten)]
        oauth: OAuthArgs,
    },
    /// Remove the stored token for a relay, or the OAuth tokens (and the registered client)
    /// for an MCP server.
    Logout {
        /// Any URL of the relay (the same origin rule as login), or the MCP server's URL.
        url: String,

        /// PEM file of a private CA to trust for the authorization server, where OAuth tokens
        /// are revoked (RFC 7009) before they are forgotten
        #[arg(long, value_name = "FILE")]
        oauth_ca_file: Option<std::path::PathBuf>,
    },
}

const EXIT_STATUS: &str = "Exit status: 0 the IDE closed stdin (the session ended normally), or \
login/logout done; 1 the first connection failed (the relay cannot be reached, or refuses), \
writing to stdout failed, or the keyring or the token could not be used; 2 invalid command-line \
arguments (including a URL that is not ws://, wss://, https:// or a loopback http://, and an \
unreadable --token-file).";

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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Cmd::Login { url, check, oauth }) => finish(login(&url, check, &oauth)),
        Some(Cmd::Logout { url, oauth_ca_file }) => finish(logout(&url, oauth_ca_file.as_deref())),
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

/// True for the URLs an OAuth sign-in may be for.
fn is_http(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Other(format!("cannot start the async runtime: {e}")))
}

fn login(url: &str, check: bool, oauth: &OAuthArgs) -> Result<(), Failure> {
    if check {
        return oauth_check(url, oauth);
    }
    // A relay's ws(s):// URL names the same resource as its http(s):// one.
    let http = relay_url::as_http(url);
    if is_http(&http) && oauth_login(&http, oauth)? {
        return Ok(());
    }
    static_login(url)
}

/// The OAuth sign-in when the server asks for one; false when it does not (then a static
/// token is read instead).
fn oauth_login(url: &str, args: &OAuthArgs) -> Result<bool, Failure> {
    let opts = args.resolve().map_err(|e| Failure::Usage(e.to_string()))?;
    let auth = match Authorizer::new(url, opts) {
        Ok(a) => a,
        // Plain http to a remote host: never an OAuth sign-in, but a relay may take a token.
        Err(oauth::AuthError::BadUrl(_)) => return Ok(false),
        Err(e) => return Err(Failure::Other(e.to_string())),
    };
    let outcome = runtime()?.block_on(async {
        match auth.challenge().await {
            Ok(Some(c)) => auth.login_with(&c).await.map(Some),
            Ok(None) => Ok(None),
            Err(e) => {
                eprintln!(
                    "bridge-client: note: {e}; no OAuth sign-in there, reading a static token"
                );
                Ok(None)
            }
        }
    });
    let store = credentials::store_name();
    match outcome.map_err(|e| Failure::Other(e.to_string()))? {
        None => Ok(false),
        Some(LoginOutcome::SignedIn { issuer, resource }) => {
            eprintln!(
                "bridge-client: signed in to {resource} with {issuer}; tokens stored in the {store}"
            );
            Ok(true)
        }
        Some(LoginOutcome::Reused { issuer, resource }) => {
            eprintln!(
                "bridge-client: another bridge-client signed in to {resource} with {issuer} \
                 meanwhile; its tokens (in the {store}) serve this one too"
            );
            Ok(true)
        }
    }
}

fn oauth_check(url: &str, args: &OAuthArgs) -> Result<(), Failure> {
    let opts = args.resolve().map_err(|e| Failure::Usage(e.to_string()))?;
    let auth = Authorizer::new(url, opts).map_err(|e| Failure::Usage(e.to_string()))?;
    let r = runtime()?
        .block_on(auth.check())
        .map_err(|e| Failure::Other(e.to_string()))?;
    let expiry = match r.expires_in {
        Some(s) => format!("access token valid for {s} s"),
        None => "access token expiry unknown".into(),
    };
    eprintln!(
        "bridge-client: signed in to {} with {}: the server accepted the token ({expiry}; refresh token: {}; this check refreshed {} time(s) and signed in {} time(s))",
        r.resource,
        r.issuer,
        if r.has_refresh_token { "yes" } else { "no" },
        r.refreshes,
        r.sign_ins
    );
    Ok(())
}

fn static_login(url: &str) -> Result<(), Failure> {
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

fn logout(url: &str, oauth_ca_file: Option<&std::path::Path>) -> Result<(), Failure> {
    let origin = relay_url::origin(url)?;
    let http = relay_url::as_http(url);
    let signed_out = if is_http(&http) && oauth::parse_server(&http).is_ok() {
        runtime()?
            .block_on(oauth::logout(&http, oauth_ca_file))
            .map_err(|e| Failure::Other(e.to_string()))?
    } else {
        None
    };
    if let Some(r) = &signed_out {
        match &r.revocation {
            Some((ep, Ok(()))) => {
                eprintln!("bridge-client: the tokens were revoked at {ep}")
            }
            Some((ep, Err(e))) => eprintln!(
                "bridge-client: warning: the tokens could not be revoked at {ep} ({e}); they \
                 are forgotten here, and expire at the server in their own time"
            ),
            None => eprintln!(
                "bridge-client: {} offers no token revocation; the tokens expire at the server \
                 in their own time",
                r.binding.issuer
            ),
        }
        eprintln!(
            "bridge-client: signed out of {url}: the tokens from {} for {} and the client \
             registered for them were removed from the {}",
            r.binding.issuer,
            r.binding.resource,
            credentials::store_name()
        );
    }
    match credentials::delete(&origin).map_err(|e| Failure::Other(e.to_string()))? {
        true => eprintln!(
            "bridge-client: token for {origin} removed from the {}",
            credentials::store_name()
        ),
        false if signed_out.is_none() => {
            eprintln!("bridge-client: no token was stored for {origin}")
        }
        false => {}
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

fn connect(args: ConnectArgs) -> ExitCode {
    init_logging(args.verbose);
    let opts = match args.resolve() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bridge-client: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // One thread is plenty for one IDE session: the session is one task.
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}

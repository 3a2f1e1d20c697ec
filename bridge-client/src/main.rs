//! The `bridge-client` binary: the command an IDE runs as its MCP stdio server.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use bridge_client::{parse_header, Backoff, Options, Secret};
use shared::conn::Heartbeat;

/// Connects an IDE's MCP stdio session to a tool hosted on an mcp-bridge relay.
///
/// stdin/stdout carry JSON-RPC to and from the IDE; logs go to stderr.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The relay's URL for the tool: ws://HOST:PORT/mcp/TOOL.
    url: String,

    /// Extra header for the upgrade request, as 'Name: value' (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    headers: Vec<String>,

    /// Environment variable that holds the relay token (sent as `Authorization: Bearer`).
    #[arg(long, value_name = "VAR", default_value = "MCP_BRIDGE_TOKEN")]
    token_env: String,

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

    /// More log output on stderr (-v info, -vv debug). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.verbose);
    let mut headers = Vec::new();
    for h in &args.headers {
        match parse_header(h) {
            Ok(pair) => headers.push(pair),
            Err(e) => {
                eprintln!("bridge-client: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let token = std::env::var(&args.token_env)
        .ok()
        .filter(|t| !t.is_empty())
        .map(Secret::new);
    let secs = |name: &str, v: f64| -> Result<Duration, String> {
        if v.is_finite() && v > 0.0 && v < 86_400.0 {
            Ok(Duration::from_secs_f64(v))
        } else {
            Err(format!("--{name} must be a number of seconds above 0"))
        }
    };
    let timing = (|| -> Result<_, String> {
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
        Ok((heartbeat, backoff))
    })();
    let (heartbeat, backoff) = match timing {
        Ok(t) => t,
        Err(e) => {
            eprintln!("bridge-client: {e}");
            return ExitCode::from(2);
        }
    };
    let opts = Options {
        url: args.url,
        headers,
        token,
        max_message_size: args.max_message_size.max(1024),
        heartbeat,
        backoff,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bridge-client: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(bridge_client::run(
        opts,
        tokio::io::stdin(),
        tokio::io::stdout(),
    ));
    // stdin is read on a blocking thread that cannot be interrupted; do not wait for it.
    runtime.shutdown_timeout(Duration::from_millis(50));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bridge-client: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

//! The `bridge-server` binary: parse arguments, set up logging, load the config, bind, run.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use bridge_server::{Config, ShutdownHandle};

/// mcp-bridge relay: serves hosted MCP tools to bridge-client (and any WebSocket MCP client).
///
/// With no --config it listens on 127.0.0.1:8787 and hosts the built-in demo tool at /mcp/demo.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Relay config file (TOML). Without it, the built-in default is used.
    #[arg(long, short = 'c', value_name = "FILE", global = true)]
    config: Option<PathBuf>,

    /// Listen address, overriding the config's `listen` (e.g. 127.0.0.1:0 for any free port).
    #[arg(long, value_name = "IP:PORT")]
    listen: Option<std::net::SocketAddr>,

    /// More log output (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    /// Log format on stderr: `human` (default) or `json` (one object per line, with the
    /// session's id, user and tool on every line of a session).
    #[arg(long, value_name = "FORMAT", default_value = "human", global = true)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Check a config file and report every problem with its key and line; exit 0 if it is valid.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Read a token from stdin and print the hashed form to put in the config (`sha256 = …`).
    ///
    /// Example: `head -c 32 /dev/urandom | base64 | tee token.txt | bridge-server hash-token`
    HashToken,
    /// Run the built-in demo MCP tool on stdin/stdout (this is what the relay starts for /mcp/demo).
    #[command(hide = true)]
    DemoTool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.verbose, args.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bridge-server: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(real_main(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bridge-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn real_main(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(Cmd::DemoTool) => {
            bridge_server::demo_tool::serve(tokio::io::stdin(), tokio::io::stdout()).await?;
            return Ok(ExitCode::SUCCESS);
        }
        Some(Cmd::HashToken) => {
            let mut token = String::new();
            std::io::stdin()
                .read_line(&mut token)
                .context("cannot read the token from stdin")?;
            let token = token.trim_end_matches(['\r', '\n']);
            if token.is_empty() {
                anyhow::bail!("no token on stdin: pipe the token in, e.g. `echo -n TOKEN | bridge-server hash-token`");
            }
            // The hash is the command's output, for the config file: stdout is right here.
            #[allow(clippy::print_stdout)]
            {
                println!("{}", bridge_server::auth::hash_token(token));
            }
            return Ok(ExitCode::SUCCESS);
        }
        Some(Cmd::CheckConfig { file }) => {
            return Ok(match Config::load(&file) {
                Ok(cfg) => {
                    eprintln!(
                        "{}: ok ({} tool(s): {})",
                        file.display(),
                        cfg.tools.len(),
                        cfg.tools
                            .iter()
                            .map(|t| t.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(64)
                }
            });
        }
        None => {}
    }
    let mut config = match &args.config {
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("bridge-server: invalid config: {e}");
                return Ok(ExitCode::from(64));
            }
        },
        None => {
            let exe = std::env::current_exe().context("cannot find this program's own path")?;
            Config::builtin(&exe)
        }
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let tools: Vec<String> = config.tools.iter().map(|t| t.name.clone()).collect();
    tracing::info!(tools = %tools.join(","), "bridge-server listening on {addr}");
    if args.config.is_none() {
        eprintln!(
            "bridge-server: built-in demo config; connect with: bridge-client ws://{addr}/mcp/demo"
        );
    }
    let shutdown = ShutdownHandle::new();
    tokio::spawn(on_signals(shutdown.clone()));
    bridge_server::run(listener, config, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

/// First SIGINT or SIGTERM: drain. Second: end everything now.
async fn on_signals(shutdown: ShutdownHandle) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot install signal handlers; SIGTERM will end the relay abruptly");
        return;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    tracing::info!("signal received: draining (send it again to stop at once)");
    shutdown.drain();
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    tracing::warn!("second signal: ending every session now");
    shutdown.force();
}

fn init_logging(verbose: u8, format: LogFormat) {
    use tracing_subscriber::prelude::*;
    let default = match verbose {
        0 => "info",
        1 => "debug,hyper=info",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let base = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let layer = match format {
        LogFormat::Json => base
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
        LogFormat::Human => base
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(
            layer
                .with_filter(filter)
                .with_filter(shared::no_secret_traces()),
        )
        .init();
}

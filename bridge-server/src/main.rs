//! The `bridge-server` binary: parse arguments, set up logging, load the config, bind, run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use bridge_server::log_batch::{self, BatchedStderr};
use bridge_server::{Config, ConfigError, Severity, ShutdownHandle};

/// Exit status for a config the relay refuses (EX_USAGE-like; systemd does not restart on it).
const EXIT_INVALID_CONFIG: u8 = 64;

/// mcp-bridge relay: serves hosted MCP tools to bridge-client (and any WebSocket MCP client).
///
/// With no --config it listens on 127.0.0.1:8787 and hosts the built-in demo tool at /mcp/demo.
#[derive(Parser, Debug)]
#[command(version, about, after_help = EXIT_STATUS)]
struct Args {
    /// Relay config file (TOML). Without it, the built-in default is used.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,

    /// Listen address, overriding the config's `listen` (e.g. 127.0.0.1:0 for any free port).
    #[arg(long, value_name = "IP:PORT")]
    listen: Option<std::net::SocketAddr>,

    /// This node's name behind a load balancer, overriding the config's `node_id` (e.g. the pod
    /// name): every session id starts with it, so the balancer can route by it.
    #[arg(long, value_name = "NAME", env = "MCP_BRIDGE_NODE_ID", value_parser = node_id)]
    node_id: Option<String>,

    /// More log output on stderr: -v debug, -vv trace (default: info). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    /// Log format on stderr: `human` (default) or `json` (one object per line, with the
    /// session's id, user and tool on every line of a session).
    #[arg(long, value_name = "FORMAT", default_value = "human", global = true)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Option<Cmd>,
}

const EXIT_STATUS: &str = "Exit status: 0 done (the relay drained after SIGTERM or SIGINT; \
check-config found no error, warnings allowed); 1 the relay could not start or run (e.g. the \
address is taken), or a token could not be made; 2 invalid command-line arguments; 64 invalid \
config (nothing was bound). `sessions` has its own: see `bridge-server sessions --help`.";

const SESSIONS_EXIT_STATUS: &str = "Exit status: 0 done (listed, shown, or ended with the \
tool reaped); 1 the relay could not be reached, answered something unexpected, or did not reap \
the tool in time; 2 invalid arguments, or no readable admin token; 3 the relay refused the \
token, or its admin API is off; 4 no such live session (or the id names several, or the \
session is already ending).";

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Check config files: report every problem, in file order, as FILE:LINE:COLUMN with its
    /// key and what to do; exit 0 if every file is valid (warnings allowed), 64 if not.
    ///
    /// Warnings are for what the relay starts with but cannot serve yet, such as a tool whose
    /// command is not found in PATH (each connection to that tool is refused with HTTP 502
    /// until it is installed).
    #[command(after_help = "Examples: bridge-server check-config relay.toml; \
bridge-server check-config -c relay.toml (the same)")]
    CheckConfig {
        /// The config files to check.
        #[arg(value_name = "FILE", required_unless_present = "config")]
        files: Vec<PathBuf>,
        /// A config file to check, as given to the relay (the same as FILE; repeatable).
        #[arg(long, short = 'c', value_name = "FILE")]
        config: Vec<PathBuf>,
    },
    /// Make a new random token: write it to FILE and print the hashed form for the config.
    ///
    /// FILE is created with mode 0600 and is never overwritten; if anything fails, no file is
    /// left behind and nothing is printed. Give FILE to the token's user over a safe channel;
    /// they store it with `bridge-client login URL < FILE`.
    NewToken {
        /// Where to write the token (must not exist yet).
        file: PathBuf,
    },
    /// Read a token from stdin (its first line) and print the hashed form to put in the config
    /// (`sha256 = …`).
    ///
    /// Example: `bridge-server hash-token < alice.token`
    HashToken,
    /// List the relay's live sessions, show one, or end one, through the session admin API on
    /// the relay's metrics listener (`[metrics] listen`, with an `[[admin.token]]`).
    ///
    /// The token is the first line of --token-file, else MCP_BRIDGE_ADMIN_TOKEN. Ending a
    /// session tells its client why (bridge-client opens a new session), answers its calls in
    /// flight with an error, and ends and reaps its tool.
    #[command(after_help = SESSIONS_EXIT_STATUS)]
    Sessions {
        /// Show this session only: its id, or its first 8 or more digits (as listed).
        #[arg(value_name = "ID", conflicts_with = "end")]
        id: Option<String>,
        /// End this session (its id, or its first 8 or more digits), and wait until its tool
        /// is reaped.
        #[arg(long, value_name = "ID")]
        end: Option<String>,
        /// The relay's metrics listener (its `[metrics] listen` address).
        #[arg(long, value_name = "URL", env = "MCP_BRIDGE_ADMIN_URL", default_value = bridge_server::admin_cli::DEFAULT_ADMIN_URL)]
        admin_url: String,
        /// A file whose first line is the admin token (default: MCP_BRIDGE_ADMIN_TOKEN).
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// Print the relay's JSON answer instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run the built-in demo MCP tool on stdin/stdout: what the built-in config hosts at
    /// /mcp/demo; use it in a [[tool]] table (`command = "bridge-server"`,
    /// `args = ["demo-tool"]`) to try things out.
    DemoTool,
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    reject_unused_options(&mut args);
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
    let result = runtime.block_on(real_main(args));
    // What its tasks log as they are dropped is logged too; then the lines still waiting go
    // out before anything else is said.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    log_batch::flush();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bridge-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--listen` and `--config` are for running the relay: with a subcommand they would be
/// ignored, so they are refused (exit 2) — except `--config FILE check-config`, which checks FILE.
fn reject_unused_options(args: &mut Args) {
    use clap::CommandFactory;
    let Some(cmd) = &mut args.command else {
        return;
    };
    if let Cmd::CheckConfig { config, .. } = cmd {
        if let Some(file) = args.config.take() {
            config.insert(0, file);
        }
    }
    let unused = match (&args.listen, &args.config) {
        (Some(_), _) => Some("--listen"),
        (None, Some(_)) => Some("--config"),
        (None, None) => None,
    };
    if let Some(option) = unused {
        Args::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                format!("{option} is for running the relay; the subcommand does not use it"),
            )
            .exit();
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
                anyhow::bail!(
                    "no token on stdin: give it a file with the token, e.g. \
                     `bridge-server hash-token < alice.token`, or make a new one with \
                     `bridge-server new-token alice.token`"
                );
            }
            print_hash(&bridge_server::auth::hash_token(token));
            return Ok(ExitCode::SUCCESS);
        }
        Some(Cmd::NewToken { file }) => {
            let hash = new_token(&file)?;
            eprintln!(
                "bridge-server: wrote a new token to {} (mode 0600); its hash, for `sha256` in \
                 [[auth.token]]:",
                file.display()
            );
            print_hash(&hash);
            return Ok(ExitCode::SUCCESS);
        }
        Some(Cmd::Sessions {
            id,
            end,
            admin_url,
            token_file,
            json,
        }) => return Ok(sessions(id, end, &admin_url, token_file.as_deref(), json).await),
        Some(Cmd::CheckConfig { files, config }) => {
            let mut valid = true;
            for file in config.iter().chain(&files) {
                valid &= check_config(file);
            }
            return Ok(if valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_INVALID_CONFIG)
            });
        }
        None => {}
    }
    let mut config = match &args.config {
        Some(path) => match Config::load(path) {
            Ok(loaded) => {
                for warning in &loaded.warnings {
                    tracing::warn!("{warning}");
                }
                loaded.config
            }
            Err(e) => {
                match &e {
                    ConfigError::Read { .. } => eprintln!("bridge-server: {e}"),
                    _ => eprintln!("{e}"),
                }
                eprintln!(
                    "bridge-server: invalid config {}; the relay did not start",
                    path.display()
                );
                return Ok(ExitCode::from(EXIT_INVALID_CONFIG));
            }
        },
        None => {
            let exe = std::env::current_exe().context("cannot find this program's own path")?;
            Config::builtin(&exe)
        }
    };
    let reloading = args.config.clone().map(|path| bridge_server::Reload {
        path,
        listen: args.listen,
        node_id: args.node_id.clone(),
    });
    match &reloading {
        Some(r) => r.apply_overrides(&mut config),
        None => {
            if let Some(listen) = args.listen {
                config.listen = listen;
            }
            if let Some(node) = args.node_id {
                config.node_id = Some(node);
            }
        }
    }
    if let Err(why) = bridge_server::preflight(&config) {
        log_batch::flush();
        eprintln!("bridge-server: {why}; the relay did not start");
        return Ok(ExitCode::from(EXIT_INVALID_CONFIG));
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let tools: Vec<String> = config.tools.iter().map(|t| t.name.clone()).collect();
    tracing::info!(tools = %tools.join(","), "bridge-server listening on {addr}");
    if args.config.is_none() {
        log_batch::flush();
        eprintln!(
            "bridge-server: built-in demo config; connect with: bridge-client ws://{addr}/mcp/demo"
        );
    }
    let shutdown = ShutdownHandle::new();
    tokio::spawn(on_signals(shutdown.clone()));
    bridge_server::run_reloading(listener, config, reloading, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

/// Checks one config file and reports on stderr: every problem, then a summary line.
fn check_config(file: &Path) -> bool {
    match Config::load(file) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("{w}");
            }
            let tools: Vec<&str> = loaded
                .config
                .tools
                .iter()
                .map(|t| t.name.as_str())
                .collect();
            eprintln!(
                "{}: ok ({} tool(s): {}){}",
                file.display(),
                tools.len(),
                tools.join(", "),
                count(loaded.warnings.len(), "; ", "warning")
            );
            true
        }
        Err(e @ ConfigError::Read { .. }) => {
            eprintln!("bridge-server: {e}");
            false
        }
        Err(e) => {
            eprintln!("{e}");
            let all = e.problems();
            let errors = all.iter().filter(|p| p.severity == Severity::Error).count();
            eprintln!(
                "{}: {errors} error(s){}: the relay would not start with this file",
                file.display(),
                count(all.len() - errors, ", ", "warning")
            );
            false
        }
    }
}

/// "; 2 warning(s)", or nothing for none.
fn count(n: usize, lead: &str, what: &str) -> String {
    match n {
        0 => String::new(),
        n => format!("{lead}{n} {what}(s)"),
    }
}

/// Writes a new random token to `file` (created, mode 0600, never overwritten); its hash.
/// On any failure no file is left behind.
fn new_token(file: &Path) -> anyhow::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let token = bridge_server::auth::NewToken::generate()
        .map_err(|e| anyhow::anyhow!("cannot make a random token: {e}"))?;
    let mut out = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => anyhow::bail!(
            "{} already exists: new-token never overwrites a file; choose another name, or \
             remove the old file first",
            file.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", file.display())),
    };
    let written = out
        .write_all(format!("{}\n", token.expose()).as_bytes())
        .and_then(|()| out.sync_all());
    if let Err(e) = written {
        drop(out);
        let _ = std::fs::remove_file(file);
        return Err(e).with_context(|| format!("cannot write the token to {}", file.display()));
    }
    Ok(bridge_server::auth::hash_token(token.expose()))
}

/// `bridge-server sessions`: one admin API request; the answer on stdout, an error on stderr.
#[allow(clippy::print_stdout)]
async fn sessions(
    id: Option<String>,
    end: Option<String>,
    admin_url: &str,
    token_file: Option<&Path>,
    json: bool,
) -> ExitCode {
    use bridge_server::admin_cli::{self, Action};
    let action = match (id, end) {
        (_, Some(id)) => Action::End(id),
        (Some(id), None) => Action::Show(id),
        (None, None) => Action::List,
    };
    let answer =
        match admin_cli::read_token(token_file, std::env::var("MCP_BRIDGE_ADMIN_TOKEN").ok()) {
            Ok(token) => admin_cli::call(admin_url, &token, &action).await,
            Err(e) => Err(e),
        };
    match answer {
        Ok(v) if json => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(v) => {
            match action {
                Action::List => print!("{}", admin_cli::render_list(&v)),
                _ => print!("{}", admin_cli::render_session(&v)),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bridge-server: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// The hash is the command's output, for the config file: stdout is right here.
#[allow(clippy::print_stdout)]
fn print_hash(hash: &str) {
    println!("{hash}");
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

/// Logs to stderr in batches (see `log_batch`; `log_batch::flush` at exit). A panic flushes
/// what waits before it is reported.
fn init_logging(verbose: u8, format: LogFormat) {
    use tracing_subscriber::prelude::*;
    let writer = BatchedStderr::start();
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        log_batch::flush();
        report(info);
    }));
    // The same levels as bridge-client's -v and -vv; the default is one step louder here
    // (a relay's operator wants its start-up and audit lines).
    let default = match verbose {
        0 => "info",
        1 => "debug,hyper=info",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let base = tracing_subscriber::fmt::layer().with_writer(writer);
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

/// `--node-id`: checked as the config's `node_id` is.
fn node_id(name: &str) -> Result<String, String> {
    bridge_server::config::check_node_id(name).map(|()| name.to_owned())
}

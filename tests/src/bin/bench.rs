//! The whole-chain benchmark: IDE → bridge-client → WebSocket → relay → tool, each figure next
//! to the direct baseline (the same IDE driver talking to the same tool over a plain stdio pipe)
//! measured in the same run. Prints a table; checks nothing (targets are read off the table).
//!
//! Run: `cargo build --release --workspace --bins && target/release/bench` (or `scripts/bench.sh`).
//! `BENCH_QUICK=1` shrinks every count for a smoke run.

#![allow(clippy::unwrap_used, clippy::print_stdout, unreachable_pub)]

use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use mcp_bridge_tests::pki::Pki;
use mcp_bridge_tests::{bin, demo_tool, tool_table, Ide, Relay};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

struct Scale {
    seq: usize,
    big64: usize,
    big1m: usize,
    pipelined: usize,
    sessions: usize,
    per_session: usize,
    starts: usize,
    idle: [usize; 3],
}

fn scale() -> Scale {
    if std::env::var_os("BENCH_QUICK").is_some() {
        Scale {
            seq: 200,
            big64: 20,
            big1m: 5,
            pipelined: 2_000,
            sessions: 10,
            per_session: 50,
            starts: 5,
            idle: [1, 10, 50],
        }
    } else {
        Scale {
            seq: 5_000,
            big64: 300,
            big1m: 30,
            pipelined: 100_000,
            sessions: 100,
            per_session: 500,
            starts: 30,
            idle: [1, 100, 1000],
        }
    }
}

/// A stdio MCP server as the IDE sees it: bridge-client to a relay, or the demo tool directly.
#[derive(Clone)]
enum Target {
    Direct,
    Chain { url: String, extra: Vec<String> },
}

impl Target {
    fn open(&self) -> Result<Ide> {
        match self {
            Target::Direct => Ide::spawn(
                Command::new(bin("bridge-server"))
                    .arg("demo-tool")
                    .env("RUST_LOG", "warn"),
            ),
            Target::Chain { url, extra } => {
                let mut cmd = Command::new(bin("bridge-client"));
                cmd.arg(url).arg("--no-keyring").args(extra);
                Ide::spawn(&mut cmd)
            }
        }
    }
}

fn call(id: u64, text: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": text}}})
}

fn pct(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() - 1) * p / 100]
}

/// Sequential round trips of one payload size: p50, p90, p99.
fn sequential(target: &Target, n: usize, size: usize) -> Result<[Duration; 3]> {
    let mut ide = target.open()?;
    ide.initialize()?;
    let text = "x".repeat(size);
    // Warm up the path.
    for i in 0..(n / 10).max(5) {
        ide.request(
            json!(i),
            "tools/call",
            json!({"name": "echo", "arguments": {"text": text}}),
        )?;
    }
    let line = call(0, &text).to_string();
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        ide.send_raw(line.as_bytes())?;
        let r = ide.recv(Duration::from_secs(30))?;
        times.push(t.elapsed());
        if r.get("result").is_none() {
            bail!("error answer: {r}");
        }
    }
    times.sort();
    Ok([pct(&times, 50), pct(&times, 90), pct(&times, 99)])
}

/// Messages per second through one session with `window` requests in flight.
fn pipelined(ide: &mut Ide, total: usize, window: usize) -> Result<f64> {
    let line = call(1, "x").to_string();
    let (mut sent, mut got) = (0, 0);
    let t = Instant::now();
    while got < total {
        while sent < total && sent - got < window {
            ide.send_raw(line.as_bytes())?;
            sent += 1;
        }
        ide.recv(Duration::from_secs(30))?;
        got += 1;
    }
    Ok(total as f64 / t.elapsed().as_secs_f64())
}

fn one_session_throughput(target: &Target, total: usize, window: usize) -> Result<f64> {
    let mut ide = target.open()?;
    ide.initialize()?;
    pipelined(&mut ide, total / 10, window)?; // warm-up
    pipelined(&mut ide, total, window)
}

/// Aggregate messages per second over `sessions` sessions at once (16 in flight each).
fn aggregate(target: &Target, sessions: usize, per: usize) -> Result<f64> {
    let mut ides = Vec::new();
    for _ in 0..sessions {
        let mut ide = target.open()?;
        ide.initialize()?;
        ides.push(ide);
    }
    let start = Arc::new(std::sync::Barrier::new(sessions + 1));
    let handles: Vec<_> = ides
        .into_iter()
        .map(|mut ide| {
            let start = start.clone();
            thread::spawn(move || -> Result<()> {
                start.wait();
                pipelined(&mut ide, per, 16)?;
                Ok(())
            })
        })
        .collect();
    start.wait();
    let t = Instant::now();
    for h in handles {
        h.join()
            .map_err(|_| anyhow::anyhow!("session thread panicked"))??;
    }
    Ok((sessions * per) as f64 / t.elapsed().as_secs_f64())
}

/// Process start to the first `initialize` response, median of `n`.
fn startup(target: &Target, n: usize) -> Result<Duration> {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}}})
    .to_string();
    let mut times = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let mut ide = target.open()?;
        ide.send_raw(init.as_bytes())?;
        ide.recv(Duration::from_secs(10))?;
        times.push(t.elapsed());
        ide.close_stdin();
        ide.wait(Duration::from_secs(5))?;
    }
    times.sort();
    Ok(pct(&times, 50))
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS")
}

/// An upgrade request for a new `mcp-bridge.v1` session.
fn v1_request(url: &str) -> Result<tokio_tungstenite::tungstenite::handshake::client::Request> {
    let mut req = url.into_client_request()?;
    req.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("mcp-bridge.v1"),
    );
    Ok(req)
}

/// Opens `n` idle sessions with `connect` (plain or TLS) straight from this process, returns the
/// relay's RSS once every one is welcomed (no errors allowed), then ends them on purpose.
async fn idle_sessions<S, F, Fut>(relay: &Relay, n: usize, connect: F) -> Result<u64>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<tokio_tungstenite::WebSocketStream<S>>>
        + Send
        + 'static,
{
    let mut tasks = Vec::new();
    for _ in 0..n {
        let connecting = connect();
        tasks.push(tokio::spawn(async move {
            let mut ws = connecting.await?;
            let first = tokio::time::timeout(Duration::from_secs(30), ws.next())
                .await?
                .context("closed")??;
            if first.into_data().first() != Some(&3) {
                bail!("no welcome");
            }
            Ok::<_, anyhow::Error>(ws)
        }));
        if tasks.len() % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut open = Vec::new();
    for t in tasks {
        open.push(t.await??);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss = rss_kib(relay.pid())?;
    for ws in &mut open {
        end_session(ws).await;
    }
    Ok(rss)
}

/// Ends a v1 session on purpose (so the relay does not keep it for a resume).
async fn end_session<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::SinkExt;
    let end = shared::tunnel::encode_control(&shared::tunnel::Control::End {
        reason: "bench done".into(),
    });
    let _ = ws
        .send(tokio_tungstenite::tungstenite::Message::Binary(end))
        .await;
    let _ = ws.close(None).await;
}

fn us(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e6)
}

fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let want = hard.max(65_536);
        let _ = setrlimit(Resource::RLIMIT_NOFILE, want, want)
            .or_else(|_| setrlimit(Resource::RLIMIT_NOFILE, hard, hard));
    }
}

fn main() -> Result<()> {
    raise_fd_limit();
    let s = scale();
    let pki = Pki::new()?;
    let limits = "[limits]\nmax_sessions = 5000\nmax_sessions_per_user = 5000\nmax_handshakes = 5000\nmax_handshakes_per_source = 5000\nkill_grace_ms = 500\n";
    let tools = [
        demo_tool("demo", ""),
        tool_table("idle", std::path::Path::new("/bin/cat"), &[], ""),
    ]
    .join("\n");
    let plain = Relay::start_config(
        &format!("listen = \"127.0.0.1:0\"\n{limits}\n{tools}"),
        &[(
            "RUST_LOG",
            std::env::var("BENCH_RELAY_LOG")
                .unwrap_or("info".into())
                .as_str(),
        )],
    )?;
    let tls = Relay::start_config(
        &format!(
            "listen = \"127.0.0.1:0\"\n{limits}[tls]\ncert = \"{}\"\nkey = \"{}\"\n\n{tools}",
            pki.path("server.pem"),
            pki.path("server.key")
        ),
        &[(
            "RUST_LOG",
            std::env::var("BENCH_RELAY_LOG")
                .unwrap_or("info".into())
                .as_str(),
        )],
    )?;
    let direct = Target::Direct;
    let chain = Target::Chain {
        url: plain.url("demo"),
        extra: vec![],
    };
    let chain_tls = Target::Chain {
        url: format!("wss://127.0.0.1:{}/mcp/demo", tls.addr.port()),
        extra: vec!["--ca-file".into(), pki.path("ca.pem")],
    };

    println!(
        "mcp-bridge benchmark ({} cores, release build, loopback)\n",
        thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!("| measure | direct (stdio) | chain (ws) | added | chain (wss/TLS) | added |");
    println!("|---|---|---|---|---|---|");
    for (label, n, size) in [
        ("small", s.seq, 10),
        ("64 KiB", s.big64, 64 * 1024),
        ("1 MiB", s.big1m, 1024 * 1024),
    ] {
        let d = sequential(&direct, n, size)?;
        let c = sequential(&chain, n, size)?;
        let t = sequential(&chain_tls, n, size)?;
        for (i, p) in ["p50", "p90", "p99"].iter().enumerate() {
            let add = |x: Duration| us(x.saturating_sub(d[i]));
            println!(
                "| round trip {label} {p} (µs) | {} | {} | {} | {} | {} |",
                us(d[i]),
                us(c[i]),
                add(c[i]),
                us(t[i]),
                add(t[i])
            );
        }
    }
    for window in [64, 256] {
        let d = one_session_throughput(&direct, s.pipelined, window)?;
        let c = one_session_throughput(&chain, s.pipelined, window)?;
        let t = one_session_throughput(&chain_tls, s.pipelined, window)?;
        println!(
            "| pipelined, 1 session, {window} in flight (msg/s) | {d:.0} | {c:.0} | | {t:.0} | |"
        );
    }
    let d = aggregate(&direct, s.sessions, s.per_session)?;
    let c = aggregate(&chain, s.sessions, s.per_session)?;
    let t = aggregate(&chain_tls, s.sessions, s.per_session)?;
    println!(
        "| aggregate, {} sessions (msg/s) | {d:.0} | {c:.0} | | {t:.0} | |",
        s.sessions
    );
    let d = startup(&direct, s.starts)?;
    let c = startup(&chain, s.starts)?;
    let t = startup(&chain_tls, s.starts)?;
    println!(
        "| start to first initialize response, p50 (ms) | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
        d.as_secs_f64() * 1e3,
        c.as_secs_f64() * 1e3,
        c.saturating_sub(d).as_secs_f64() * 1e3,
        t.as_secs_f64() * 1e3,
        t.saturating_sub(d).as_secs_f64() * 1e3
    );

    // Relay memory with idle sessions (relay process only; tools are `cat`).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!("\n| idle sessions | relay RSS (ws) | per session | relay RSS (wss) | per session |");
    println!("|---|---|---|---|---|");
    let base_plain = rss_kib(plain.pid())?;
    let base_tls = rss_kib(tls.pid())?;
    for n in s.idle {
        let url = plain.url("idle");
        let rp = rt.block_on(idle_sessions(&plain, n, || {
            let url = url.clone();
            async move { Ok(tokio_tungstenite::connect_async(v1_request(&url)?).await?.0) }
        }))?;
        rt.block_on(async { tokio::time::sleep(Duration::from_millis(1500)).await });
        let per = |rss: u64, base: u64| (rss.saturating_sub(base) as f64) / n as f64;
        let rt_tls = rt.block_on(idle_tls(&tls, &pki, n))?;
        rt.block_on(async { tokio::time::sleep(Duration::from_millis(1500)).await });
        println!(
            "| {n} | {:.1} MiB | {:.1} KiB | {:.1} MiB | {:.1} KiB |",
            rp as f64 / 1024.0,
            per(rp, base_plain),
            rt_tls as f64 / 1024.0,
            per(rt_tls, base_tls)
        );
        plain.wait_no_children(Duration::from_secs(60))?;
        tls.wait_no_children(Duration::from_secs(60))?;
    }
    println!("\n(idle-session RSS is the relay process only, after all sessions were welcomed; per session = (RSS − RSS before) / sessions)");
    Ok(())
}

/// Idle sessions over TLS, through bridge-client's own TLS settings (rustls, the test CA).
async fn idle_tls(relay: &Relay, pki: &Pki, n: usize) -> Result<u64> {
    let config = shared::tls::client_config(Some(std::path::Path::new(&pki.path("ca.pem"))), None)?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let addr = relay.addr;
    idle_sessions(relay, n, move || {
        let connector = connector.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?;
            let tls = connector.connect(name, tcp).await?;
            let req = v1_request(&format!("wss://127.0.0.1:{}/mcp/idle", addr.port()))?;
            Ok(tokio_tungstenite::client_async(req, tls).await?.0)
        }
    })
    .await
}

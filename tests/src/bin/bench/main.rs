//! The whole-chain benchmark: IDE → bridge-client → WebSocket → relay → tool, each figure next
//! to the direct baseline (the same IDE driver talking to the same tool over a plain stdio pipe)
//! measured in the same run. Prints a table; checks nothing (targets are read off the table).
//!
//! Run: `cargo build --release --workspace --bins && target/release/bench` (or `scripts/bench.sh`).
//! `BENCH_QUICK=1` shrinks every count for a smoke run; `BENCH_ONLY=http-shims` runs only the
//! table of shims before a Streamable HTTP server (bridge-client vs mcp-remote, remote.rs);
//! `BENCH_ONLY=http-pipelined` only the direct rate and the relay's Streamable HTTP rows with
//! 64 calls in flight (with `BENCH_HTTP=h1` or `h2` for one of them, `BENCH_HTTP_TOTAL=N`
//! calls, e.g. to profile the relay meanwhile). `BENCH_RELAY_LOG` is the relays' `RUST_LOG`
//! (default `info`: audit lines on), `BENCH_RELAY_THREADS` their worker threads (default 2),
//! `MCP_BRIDGE_LOG_FLUSH_MS` their log batching (default the relay's own, 50 ms).
//! Besides latency, throughput, start-up and memory it prints the CPU time each process
//! (bridge-client or the bench's HTTP client, relay, tool) spends per message.

#![allow(clippy::unwrap_used, clippy::print_stdout, unreachable_pub)]

mod h2;
mod http;
mod idle;
mod measure;
mod remote;
mod target;

use std::thread;
use std::time::Duration;

use anyhow::Result;
use mcp_bridge_tests::pki::Pki;
use mcp_bridge_tests::{cpu_time, demo_tool, tool_table, Relay};

use measure::{aggregate, one_session_throughput, sequential, startup};
use target::{CpuPerOp, Target, PROCESSES};

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

/// Table rows: the CPU time per message of each process, direct and through both chains.
fn cpu_rows(what: &str, d: &CpuPerOp, c: &CpuPerOp, t: &CpuPerOp) {
    let cell = |x: Option<Duration>| x.map_or("–".to_owned(), us);
    for (i, name) in PROCESSES.iter().enumerate() {
        println!(
            "| CPU per {what}: {name} (µs) | {} | {} | | {} | |",
            cell(d.0[i]),
            cell(c.0[i]),
            cell(t.0[i])
        );
    }
    let add = |x: &CpuPerOp| us(x.total().saturating_sub(d.total()));
    println!(
        "| CPU per {what}: all processes (µs) | {} | {} | {} | {} | {} |",
        us(d.total()),
        us(c.total()),
        add(c),
        us(t.total()),
        add(t)
    );
}

/// Table rows: the relay's Streamable HTTP carrier with 64 calls in flight in one session
/// (HTTP/1.1 over 64 connections, HTTP/2 on one), next to the direct rate `direct`, with the
/// CPU time the relay and the session's tool spent per call.
fn http_pipelined_rows(relay: &Relay, direct: f64, total: usize) -> Result<()> {
    type Run = fn(std::net::SocketAddr, u32, &str, usize, usize) -> Result<(f64, CpuPerOp)>;
    let runs: [(&str, Run); 2] = [
        (
            "Streamable HTTP, 1 session, 64 in flight over 64 connections",
            http::pipelined,
        ),
        (
            "Streamable HTTP/2, 1 session, 64 in flight on 1 connection",
            h2::pipelined,
        ),
    ];
    let total = std::env::var("BENCH_HTTP_TOTAL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(total);
    let per_call = |before: Option<Duration>, after: Option<Duration>| {
        after
            .zip(before)
            .map(|(b, a)| b.saturating_sub(a) / u32::try_from(total).unwrap_or(u32::MAX))
    };
    let cell = |x: Option<Duration>| x.map_or("–".to_owned(), us);
    let (me, relay_cpu) = (cpu_time(std::process::id()), cpu_time(relay.pid()));
    let floor = h2::healthz(relay.addr, total, 64)?;
    println!(
        "| HTTP/2 floor: GET /healthz, 64 in flight on 1 connection, no session (req/s) | {direct:.0} | {floor:.0} | {:.2} × direct | – | – |",
        floor / direct
    );
    println!(
        "| HTTP/2 floor: CPU per request, HTTP client / relay (µs) | | {} / {} | | | |",
        cell(per_call(me, cpu_time(std::process::id()))),
        cell(per_call(relay_cpu, cpu_time(relay.pid())))
    );
    let pick = std::env::var("BENCH_HTTP").unwrap_or_default();
    for (label, run) in runs {
        if (pick == "h1" && label.contains("HTTP/2")) || (pick == "h2" && !label.contains("HTTP/2"))
        {
            continue;
        }
        let me = cpu_time(std::process::id());
        let (rate, cpu) = run(relay.addr, relay.pid(), "demo", total, 64)?;
        // The bench's own CPU: its HTTP client (start-up and the session's opening included).
        let client = per_call(me, cpu_time(std::process::id()));
        println!(
            "| {label} (msg/s) | {direct:.0} | {rate:.0} | {:.2} × direct | – | – |",
            rate / direct
        );
        println!(
            "| {label}: CPU per call, HTTP client / relay / tool (µs) | | {} / {} / {} | | | |",
            cell(client),
            cell(cpu.0[1]),
            cell(cpu.0[2])
        );
    }
    Ok(())
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
    let relay_log = std::env::var("BENCH_RELAY_LOG").unwrap_or("info".into());
    let relay_threads = std::env::var("BENCH_RELAY_THREADS").unwrap_or("2".into());
    // The relay's own default batching of its log (the test harness turns it off), unless
    // MCP_BRIDGE_LOG_FLUSH_MS is given to compare.
    let relay_log_flush = std::env::var("MCP_BRIDGE_LOG_FLUSH_MS").unwrap_or("50".into());
    let start = |tls: &str| {
        Relay::start_config(
            &format!("listen = \"127.0.0.1:0\"\n{limits}{tls}\n{tools}"),
            &[
                ("RUST_LOG", relay_log.as_str()),
                ("TOKIO_WORKER_THREADS", relay_threads.as_str()),
                ("MCP_BRIDGE_LOG_FLUSH_MS", relay_log_flush.as_str()),
            ],
        )
    };
    let plain = start("")?;
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    if only == "http-shims" {
        return remote::table(&plain, s.seq, s.starts);
    }
    if only == "http-pipelined" {
        let (d, _) = one_session_throughput(&Target::Direct, s.pipelined, 64)?;
        return http_pipelined_rows(&plain, d, s.pipelined / 5);
    }
    let tls = start(&format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        pki.path("server.pem"),
        pki.path("server.key")
    ))?;
    let direct = Target::Direct;
    let chain = Target::Chain {
        url: plain.url("demo"),
        extra: vec![],
        relay: plain.pid(),
    };
    let chain_tls = Target::Chain {
        url: format!("wss://127.0.0.1:{}/mcp/demo", tls.addr.port()),
        extra: vec!["--ca-file".into(), pki.path("ca.pem")],
        relay: tls.pid(),
    };

    println!(
        "mcp-bridge benchmark ({} cores, release build, loopback)\n",
        thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!("| measure | direct (stdio) | chain (ws) | added | chain (wss/TLS) | added |");
    println!("|---|---|---|---|---|---|");
    let mut cpu_small = None;
    let mut direct_small = None;
    for (label, n, size) in [
        ("small", s.seq, 10),
        ("64 KiB", s.big64, 64 * 1024),
        ("1 MiB", s.big1m, 1024 * 1024),
    ] {
        let (d, d_cpu) = sequential(&direct, n, size)?;
        let (c, c_cpu) = sequential(&chain, n, size)?;
        let (t, t_cpu) = sequential(&chain_tls, n, size)?;
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
        cpu_small.get_or_insert((d_cpu, c_cpu, t_cpu));
        direct_small.get_or_insert(d);
    }
    let mut cpu_pipelined = None;
    let mut direct_pipelined_64 = None;
    for window in [64, 256] {
        let (d, d_cpu) = one_session_throughput(&direct, s.pipelined, window)?;
        if window == 64 {
            direct_pipelined_64 = Some(d);
        }
        let (c, c_cpu) = one_session_throughput(&chain, s.pipelined, window)?;
        let (t, t_cpu) = one_session_throughput(&chain_tls, s.pipelined, window)?;
        println!(
            "| pipelined, 1 session, {window} in flight (msg/s) | {d:.0} | {c:.0} | {:.2} × direct | {t:.0} | {:.2} × direct |",
            c / d,
            t / d
        );
        cpu_pipelined.get_or_insert((d_cpu, c_cpu, t_cpu));
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
    // The relay's Streamable HTTP carrier: what an HTTP host (no bridge-client) sees.
    let h = http::sequential(plain.addr, "demo", s.seq)?;
    if let Some(d) = direct_small {
        for (i, p) in ["p50", "p90", "p99"].iter().enumerate() {
            // (Over plain HTTP only: the bench's raw client speaks no TLS.)
            println!(
                "| Streamable HTTP (keep-alive), small {p} (µs) | {} | {} | {} | – | – |",
                us(d[i]),
                us(h[i]),
                us(h[i].saturating_sub(d[i]))
            );
        }
    }
    if let Some(d) = direct_pipelined_64 {
        http_pipelined_rows(&plain, d, s.pipelined / 5)?;
    }
    if let Some((d, c, t)) = cpu_small {
        cpu_rows("small round trip", &d, &c, &t);
    }
    if let Some((d, c, t)) = cpu_pipelined {
        cpu_rows("message, 64 in flight", &d, &c, &t);
    }
    println!(
        "\n(CPU: user + sys from /proc/<pid>/stat over the measured run (warm-up excluded), \
         divided by its round trips; {} round trips small, {} messages pipelined; one clock \
         tick is 10 ms at 100 Hz, so short runs are coarse)",
        s.seq, s.pipelined
    );

    // Relay memory with idle sessions (relay process only; tools are `cat`).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!("\n| idle sessions | relay RSS (ws) | per session | relay RSS (wss) | per session |");
    println!("|---|---|---|---|---|");
    let base_plain = idle::rss_kib(plain.pid())?;
    let base_tls = idle::rss_kib(tls.pid())?;
    for n in s.idle {
        let rp = rt.block_on(idle::idle_plain(&plain, n))?;
        rt.block_on(async { tokio::time::sleep(Duration::from_millis(1500)).await });
        let per = |rss: u64, base: u64| (rss.saturating_sub(base) as f64) / n as f64;
        let rt_tls = rt.block_on(idle::idle_tls(&tls, &pki, n))?;
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
    remote::table(&plain, s.seq, s.starts)
}

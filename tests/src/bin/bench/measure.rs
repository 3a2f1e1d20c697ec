//! The measurements on a [`Target`]: sequential round trips (percentiles), pipelined and
//! aggregate throughput, start-up time; the first two also with the CPU time each process
//! spent per message. Not the table (main.rs).

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use mcp_bridge_tests::Ide;
use serde_json::{json, Value};

use crate::target::{CpuMark, CpuPerOp, Target};

fn call(id: u64, text: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": text}}})
}

fn pct(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() - 1) * p / 100]
}

/// Sequential round trips of one payload size: p50, p90, p99, and the CPU time per round trip.
pub(crate) fn sequential(
    target: &Target,
    n: usize,
    size: usize,
) -> Result<([Duration; 3], CpuPerOp)> {
    let (mut ide, procs) = target.open_initialized()?;
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
    let cpu = CpuMark::now(procs);
    for _ in 0..n {
        let t = Instant::now();
        ide.send_raw(line.as_bytes())?;
        let r = ide.recv(Duration::from_secs(30))?;
        times.push(t.elapsed());
        if r.get("result").is_none() {
            bail!("error answer: {r}");
        }
    }
    let cpu = cpu.per_op(n);
    times.sort();
    Ok(([pct(&times, 50), pct(&times, 90), pct(&times, 99)], cpu))
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

/// Messages per second through one session with `window` in flight, and the CPU time per
/// message.
pub(crate) fn one_session_throughput(
    target: &Target,
    total: usize,
    window: usize,
) -> Result<(f64, CpuPerOp)> {
    let (mut ide, procs) = target.open_initialized()?;
    pipelined(&mut ide, total / 10, window)?; // warm-up
    let cpu = CpuMark::now(procs);
    let rate = pipelined(&mut ide, total, window)?;
    Ok((rate, cpu.per_op(total)))
}

/// Aggregate messages per second over `sessions` sessions at once (16 in flight each).
pub(crate) fn aggregate(target: &Target, sessions: usize, per: usize) -> Result<f64> {
    let mut ides = Vec::new();
    for _ in 0..sessions {
        let mut ide = target.open()?;
        ide.initialize()?;
        ides.push(ide);
    }
    let start = Arc::new(Barrier::new(sessions + 1));
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
        h.join().map_err(|_| anyhow!("session thread panicked"))??;
    }
    Ok((sessions * per) as f64 / t.elapsed().as_secs_f64())
}

/// Process start to the first `initialize` response, median of `n`.
pub(crate) fn startup(target: &Target, n: usize) -> Result<Duration> {
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

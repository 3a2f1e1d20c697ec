//! Shims in front of a Streamable HTTP server, side by side in one run: bridge-client (stdio in,
//! HTTP out) and mcp-remote 0.15.1 (the same, on the system's Node), both before the relay's
//! Streamable HTTP carrier hosting the demo tool, with that server driven directly (one
//! kept-alive HTTP/1.1 session, http.rs) as the baseline. Added round-trip latency, the ratio of
//! the two shims' additions, the CPU each shim spends per round trip, and start (process spawn)
//! to the first `initialize` answer. The three paths take turns, a slice of the round trips
//! each, so that load from elsewhere on a shared machine falls on all three alike. Not the
//! tunnel rows (main.rs).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use mcp_bridge_tests::{repo_root, Ide, Relay, TempDir};
use serde_json::json;

use crate::http::{self, pct, HttpSession};
use crate::measure::startup;
use crate::target::{CpuMark, CpuPerOp, Target};

/// How many turns the paths take.
const TURNS: usize = 20;

/// A shim's session and its round-trip times.
struct Shim {
    ide: Ide,
    cpu: CpuMark,
    times: Vec<Duration>,
}

impl Shim {
    fn open(t: &Target, warm: usize) -> Result<Shim> {
        let (mut ide, procs) = t.open_initialized()?;
        for _ in 0..warm {
            round_trip(&mut ide)?;
        }
        Ok(Shim {
            ide,
            cpu: CpuMark::now(procs),
            times: Vec::new(),
        })
    }

    fn turn(&mut self, n: usize) -> Result<()> {
        for _ in 0..n {
            self.times.push(round_trip(&mut self.ide)?);
        }
        Ok(())
    }

    /// p50, p90, p99 and the CPU per round trip since the warm-up.
    fn result(mut self) -> ([Duration; 3], CpuPerOp) {
        let cpu = self.cpu.per_op(self.times.len());
        self.times.sort();
        let t = &self.times;
        ([pct(t, 50), pct(t, 90), pct(t, 99)], cpu)
    }
}

fn round_trip(ide: &mut Ide) -> Result<Duration> {
    let line = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": "echo", "arguments": {"text": "x".repeat(10)}}})
    .to_string();
    let t = Instant::now();
    ide.send_raw(line.as_bytes())?;
    let r = ide.recv(Duration::from_secs(30))?;
    let elapsed = t.elapsed();
    if r.get("result").is_none() {
        bail!("error answer: {r}");
    }
    Ok(elapsed)
}

fn us(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e6)
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

/// mcp-remote's entry script among the installed peers, if they are installed.
fn mcp_remote() -> Option<PathBuf> {
    let p = repo_root().join(".peers/node/node_modules/mcp-remote/dist/proxy.js");
    p.exists().then_some(p)
}

/// Prints the table. Run it last: mcp-remote leaves its sessions for the relay's idle timeout.
pub(crate) fn table(relay: &Relay, seq: usize, starts: usize) -> Result<()> {
    let url = format!("http://127.0.0.1:{}/mcp/demo", relay.addr.port());
    let bridge = Target::Chain {
        url: url.clone(),
        extra: vec![],
        relay: relay.pid(),
    };
    let home = TempDir::new();
    let remote = mcp_remote().map(|script| Target::McpRemote {
        script,
        url,
        home: home.path().to_path_buf(),
        relay: relay.pid(),
    });

    let warm = (seq / 10).max(5);
    let mut direct = HttpSession::open(relay.addr, "demo")?;
    for _ in 0..warm {
        direct.call()?;
    }
    let mut b = Shim::open(&bridge, warm)?;
    let mut r = remote.as_ref().map(|t| Shim::open(t, warm)).transpose()?;
    let mut d_times = Vec::with_capacity(seq);
    let per_turn = seq.div_ceil(TURNS);
    for _ in 0..TURNS {
        for _ in 0..per_turn {
            d_times.push(direct.call()?);
        }
        b.turn(per_turn)?;
        if let Some(r) = &mut r {
            r.turn(per_turn)?;
        }
    }
    direct.close();
    d_times.sort();
    let direct = [pct(&d_times, 50), pct(&d_times, 90), pct(&d_times, 99)];
    let (b, b_cpu) = b.result();
    let r = r.map(Shim::result);
    let direct_start = http::start_to_answer(relay.addr, "demo", starts)?;
    let b_start = startup(&bridge, starts)?;
    let r_start = remote.as_ref().map(|t| startup(t, starts)).transpose()?;

    println!(
        "\n| Streamable HTTP server | direct (HTTP) | bridge-client | added | mcp-remote | added | \
         bridge-client added / mcp-remote added |"
    );
    println!("|---|---|---|---|---|---|---|");
    let none = || "–".to_owned();
    for (i, p) in ["p50", "p90", "p99"].iter().enumerate() {
        let b_add = b[i].saturating_sub(direct[i]);
        let r_add = r.map(|(r, _)| r[i].saturating_sub(direct[i]));
        println!(
            "| round trip small {p} (µs) | {} | {} | {} | {} | {} | {} |",
            us(direct[i]),
            us(b[i]),
            us(b_add),
            r.map_or_else(none, |(r, _)| us(r[i])),
            r_add.map_or_else(none, us),
            r_add.map_or_else(none, |ra| format!(
                "{:.3}",
                b_add.as_secs_f64() / ra.as_secs_f64().max(1e-9)
            )),
        );
    }
    let shim_cpu = |c: &CpuPerOp| c.0[0].map_or_else(none, us);
    println!(
        "| CPU per small round trip: the shim (µs) | | {} | | {} | | |",
        shim_cpu(&b_cpu),
        r.map_or_else(none, |(_, c)| shim_cpu(&c))
    );
    println!(
        "| start to first initialize answer, p50 (ms) | {} | {} | {} | {} | {} | |",
        ms(direct_start),
        ms(b_start),
        ms(b_start.saturating_sub(direct_start)),
        r_start.map_or_else(none, ms),
        r_start.map_or_else(none, |r| ms(r.saturating_sub(direct_start))),
    );
    let n = per_turn * TURNS;
    let missing = if remote.is_none() {
        "; not installed here: scripts/install-peers.sh"
    } else {
        ""
    };
    println!(
        "\n(direct: the bench's raw HTTP/1.1 client, one kept-alive session, each call a POST \
         answered by a JSON body (or SSE when slower than 50 ms); start: a new connection's initialize (direct) or process spawn to the \
         initialize answer (shims), {starts} starts; {n} round trips each, the three taking \
         {TURNS} turns; mcp-remote runs on the system's node with --transport http-only --allow-http --silent{missing})"
    );
    Ok(())
}

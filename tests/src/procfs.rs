//! What /proc says about a process: its children and their states, whether it is alive, its
//! memory, its CPU time. Linux only, read-only; never starts or signals anything (process.rs).

use std::time::Duration;

/// The fields of `/proc/<pid>/stat` after `comm` (which may hold spaces and parens), starting
/// with field 3, the state.
fn stat_tail(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rfind(')')?;
    Some(stat[after + 1..].to_owned())
}

/// Direct children of `pid` from /proc, with their state letter (`Z` = zombie).
pub fn children_of(pid: u32) -> Vec<(u32, char)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(child_pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Some(tail) = stat_tail(child_pid) else {
            continue;
        };
        // state ppid ...
        let mut fields = tail.split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid = fields.next().and_then(|s| s.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push((child_pid, state));
        }
    }
    out
}

/// Whether a process exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    stat_tail(pid)
        .map(|tail| tail.trim_start().starts_with('Z'))
        .is_some_and(|zombie| !zombie)
}

/// A `kB` field of `/proc/<pid>/status` (VmRSS, VmHWM, …), in bytes.
pub fn proc_status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kib * 1024)
    })
}

/// Bytes as MiB, for messages.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The CPU time a process has used so far, user + system (fields 14 and 15 of
/// `/proc/<pid>/stat`, in clock ticks); `None` once it is gone. Its resolution is one tick
/// (10 ms at the usual 100 Hz): measure over many operations.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let tail = stat_tail(pid)?;
    let fields: Vec<&str> = tail.split_whitespace().collect();
    // Field 3 (state) is index 0, so fields 14 and 15 are 11 and 12.
    let tick = |i: usize| fields.get(i)?.parse::<u64>().ok();
    let ticks = tick(11)? + tick(12)?;
    Some(Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64))
}

/// Clock ticks per second, `sysconf(_SC_CLK_TCK)` (asked once).
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .and_then(|t| u64::try_from(t).ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

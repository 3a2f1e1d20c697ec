//! The standard `process_*` metrics of the relay process itself (CPU time, resident and
//! virtual memory, open and allowed file descriptors, start time), read from `/proc/self` on
//! each scrape, under the names every Prometheus client library uses. Only the relay: its tool
//! processes are not counted here (their limits are `[tool.limits]`). Off Linux, or where
//! `/proc` cannot be read, the metrics are left out rather than reported as zero.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Reads `/proc/self` when scraped.
#[derive(Debug)]
pub(crate) struct ProcessCollector {
    /// Clock ticks per second (`/proc` counts CPU time in them).
    ticks: f64,
    /// Bytes per memory page (`/proc/self/stat` counts resident memory in them).
    page: f64,
    /// When the process started, in seconds since the epoch (fixed for its life).
    start_time: Option<f64>,
}

impl ProcessCollector {
    pub(crate) fn new() -> ProcessCollector {
        use nix::unistd::{sysconf, SysconfVar};
        let conf = |v, default: f64| match sysconf(v) {
            Ok(Some(n)) if n > 0 => n as f64,
            _ => default,
        };
        let ticks = conf(SysconfVar::CLK_TCK, 100.0);
        let page = conf(SysconfVar::PAGE_SIZE, 4096.0);
        let start_time = read_stat().and_then(|s| {
            let boot = boot_time()?;
            Some(boot + s.start_ticks as f64 / ticks)
        });
        ProcessCollector {
            ticks,
            page,
            start_time,
        }
    }
}

/// The fields of `/proc/self/stat` used here.
#[derive(Debug, PartialEq)]
struct Stat {
    utime: u64,
    stime: u64,
    start_ticks: u64,
    vsize: u64,
    rss_pages: u64,
}

fn read_stat() -> Option<Stat> {
    parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) may hold spaces and parentheses, so
/// the fields are counted from its last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    // `rest` starts at field 3 (state): field n is at index n - 3.
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    let num = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime: num(14)?,
        stime: num(15)?,
        start_ticks: num(22)?,
        vsize: num(23)?,
        rss_pages: num(24)?,
    })
}

/// The system's boot time, seconds since the epoch (`btime` in `/proc/stat`).
fn boot_time() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<f64>().ok())
}

fn open_fds() -> Option<u64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}

fn max_fds() -> Option<u64> {
    use nix::sys::resource::{getrlimit, Resource};
    getrlimit(Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _)| soft)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut gauge = |name: &str, help: &str, value: f64| {
            let g = ConstGauge::new(value);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
        };
        let stat = read_stat();
        if let Some(s) = &stat {
            gauge(
                "process_resident_memory_bytes",
                "Resident memory size of the relay process in bytes",
                s.rss_pages as f64 * self.page,
            )?;
            gauge(
                "process_virtual_memory_bytes",
                "Virtual memory size of the relay process in bytes",
                s.vsize as f64,
            )?;
        }
        if let Some(t) = self.start_time {
            gauge(
                "process_start_time_seconds",
                "Start time of the relay process since the Unix epoch in seconds",
                t,
            )?;
        }
        if let Some(n) = open_fds() {
            gauge(
                "process_open_fds",
                "Open file descriptors of the relay process",
                n as f64,
            )?;
        }
        if let Some(n) = max_fds() {
            gauge(
                "process_max_fds",
                "The relay process's limit of open file descriptors",
                n as f64,
            )?;
        }
        if let Some(s) = &stat {
            let c = ConstCounter::new((s.utime + s.stime) as f64 / self.ticks);
            c.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time of the relay process in seconds",
                None,
                c.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        // A command name with a space and a parenthesis, as a tool may name itself.
        let line = "4242 (my (odd) relay) S 1 4242 4242 0 -1 4194560 1 0 0 0 \
                    250 75 0 0 20 0 9 0 123456 104857600 2560 18446744073709551615";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                utime: 250,
                stime: 75,
                start_ticks: 123456,
                vsize: 104857600,
                rss_pages: 2560,
            })
        );
        assert_eq!(parse_stat("4242 (cut short) S 1"), None);
    }

    #[test]
    fn this_process_reports_memory_and_cpu() {
        let m = crate::metrics::Metrics::new();
        let text = m.encode();
        for name in [
            "process_resident_memory_bytes ",
            "process_cpu_seconds_total ",
            "process_open_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(name)),
                "{name} missing from:\n{text}"
            );
        }
        assert!(
            !text.contains("mcp_bridge_process_"),
            "process metrics must not carry the relay's prefix"
        );
    }
}

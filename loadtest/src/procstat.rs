//! CPU and memory of a process, read from `/proc/PID/stat` and `/proc/PID/status`.
//!
//! CPU is user plus system time in seconds (clock ticks at the kernel's usual 100 Hz); memory is
//! the resident set size. Reading a process that has exited gives `None`, never an error.

use serde::{Deserialize, Serialize};

/// Clock ticks per second of `/proc/PID/stat` on Linux.
const TICKS_PER_SEC: f64 = 100.0;

/// One reading of one process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcSample {
    /// User plus system CPU seconds since the process started.
    pub cpu_seconds: f64,
    /// Resident set size in bytes.
    pub rss_bytes: u64,
}

/// Parses the CPU seconds from the text of `/proc/PID/stat`.
pub fn parse_stat_cpu(stat: &str) -> Option<f64> {
    // The command name is in parentheses and may hold spaces: count fields after the last `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the whole line (utime, stime) are 12 and 13 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SEC)
}

/// Parses `VmRSS` (in kB) from the text of `/proc/PID/status`, in bytes.
pub fn parse_status_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Reads process `pid`, or `None` if it is gone.
pub fn sample(pid: u32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(ProcSample {
        cpu_seconds: parse_stat_cpu(&stat)?,
        rss_bytes: parse_status_rss(&status)?,
    })
}

/// Reads this process.
pub fn sample_self() -> ProcSample {
    sample(std::process::id()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_the_name() {
        let stat = "42 (my proc) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 100 1000 200";
        assert_eq!(parse_stat_cpu(stat), Some(3.0));
    }

    #[test]
    fn parses_rss() {
        let status = "Name:\tx\nVmPeak:\t  100 kB\nVmRSS:\t    2048 kB\n";
        assert_eq!(parse_status_rss(status), Some(2 * 1024 * 1024));
    }

    #[test]
    fn samples_this_process() {
        let s = sample_self();
        assert!(s.rss_bytes > 0);
        assert!(sample(u32::MAX).is_none());
    }
}

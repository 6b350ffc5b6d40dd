//! CPU and memory of a process or thread, read from `/proc` with the `procfs` crate.
//!
//! CPU is user plus system time in seconds (clock ticks at the kernel's `_SC_CLK_TCK`); memory
//! is the resident set size (`VmRSS`). Reading a process that has exited gives `None`, never an
//! error.

use procfs::FromRead;
use procfs::process::{Process, Stat};
use serde::{Deserialize, Serialize};

/// One reading of one process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcSample {
    /// User plus system CPU seconds since the process started.
    pub cpu_seconds: f64,
    /// Resident set size in bytes.
    pub rss_bytes: u64,
}

/// User plus system CPU seconds of a `/proc/.../stat`.
fn cpu_seconds(stat: &Stat) -> f64 {
    (stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64
}

/// Reads process `pid`, or `None` if it is gone.
pub fn sample(pid: u32) -> Option<ProcSample> {
    let process = Process::new(i32::try_from(pid).ok()?).ok()?;
    let stat = process.stat().ok()?;
    let rss_kib = process.status().ok()?.vmrss?;
    Some(ProcSample {
        cpu_seconds: cpu_seconds(&stat),
        rss_bytes: rss_kib * 1024,
    })
}

/// Reads this process.
pub fn sample_self() -> ProcSample {
    sample(std::process::id()).unwrap_or_default()
}

/// CPU seconds of the calling thread, or 0 if `/proc/thread-self` cannot be read.
pub fn thread_cpu_seconds() -> f64 {
    Stat::from_file("/proc/thread-self/stat").map_or(0.0, |stat| cpu_seconds(&stat))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    /// Burns CPU on this thread until its CPU time passes `after`, or fails at the deadline.
    fn spin_until_thread_cpu_passes(after: f64) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut x = 0u64;
        loop {
            for i in 0..1_000_000u64 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
            }
            let now = thread_cpu_seconds();
            if now > after {
                return now;
            }
            assert!(Instant::now() < deadline, "thread CPU stuck at {now} s");
        }
    }

    #[test]
    fn samples_this_process_and_thread() {
        let before = sample_self();
        assert!(before.rss_bytes > 0);
        // The kernel's own count of this process's resident pages, in another file.
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        let resident_pages: u64 = statm
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or_default();
        let statm_bytes = resident_pages * procfs::page_size();
        assert!(
            before.rss_bytes.abs_diff(statm_bytes) < 64 << 20,
            "VmRSS {} vs statm {statm_bytes}",
            before.rss_bytes
        );

        let thread_before = thread_cpu_seconds();
        let thread_after = spin_until_thread_cpu_passes(thread_before + 0.05);
        let after = sample_self();
        assert!(after.cpu_seconds >= before.cpu_seconds + (thread_after - thread_before) - 0.02);
    }

    #[test]
    fn a_process_that_is_gone_gives_none() {
        assert!(sample(u32::MAX).is_none());
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id();
        child.wait().expect("wait for true");
        assert!(sample(pid).is_none());
    }
}

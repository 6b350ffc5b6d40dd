//! The report of a `run`: what was measured, as JSON, and as a Markdown summary with every speed
//! figure next to its same-run baseline and their ratio.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::churn::ChurnReport;
use crate::stats::{Summary, ratio};

/// CPU and memory of one process over one window.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Usage {
    /// CPU seconds used in the window.
    pub cpu_seconds: f64,
    /// Resident memory at the end of the window, bytes.
    pub rss_bytes: u64,
    /// Wall seconds of the window.
    pub seconds: f64,
}

/// Everything a run measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    /// Scenario name and sizes.
    pub scenario: serde_json::Value,
    /// Cores on the machine.
    pub cores: usize,
    /// Seed writes and seconds.
    pub seed_writes: u64,
    /// Seconds the seed took.
    pub seed_seconds: f64,
    /// Connect storm: all agents synced after this many seconds.
    pub storm_seconds: f64,
    /// Connect storm, by the wall clock of the orchestrator (1 s resolution), seconds.
    pub storm_wall_seconds: f64,
    /// Connect storm: time to sync per agent, ms.
    pub storm_sync_ms: Summary,
    /// Connect storm: bytes received per agent.
    pub storm_bytes_per_agent: Summary,
    /// Snapshots the server encoded (from its metric).
    pub snapshots_encoded: f64,
    /// The TCP baseline sending the same snapshot bytes to as many sockets, seconds.
    pub storm_tcp_seconds: f64,
    /// Server RSS with no agent, bytes.
    pub server_rss_idle: u64,
    /// Server RSS with every agent synced, one second after the connect storm, bytes.
    pub server_rss_agents: u64,
    /// Server RSS with every agent connected, after the steady churn window, bytes: the
    /// storm's transient buffers are gone by then.
    #[serde(default)]
    pub server_rss_steady: u64,
    /// (agents synced, server RSS bytes) during the connect storm.
    pub memory_curve: Vec<(u32, u64)>,
    /// The churn of the steady window.
    pub churn: ChurnReport,
    /// Fan-out latency, µs.
    pub fanout_us: Summary,
    /// End-to-end latency through cattail, µs.
    pub e2e_us: Summary,
    /// TCP baseline latency replaying the same messages, µs.
    pub tcp_latency_us: Summary,
    /// Server usage over the steady window.
    pub server: Usage,
    /// Messages the server sent to agents in the steady window.
    pub server_deliveries: f64,
    /// Updates the server deduplicated in the steady window.
    pub deduplicated: f64,
    /// TCP baseline deliveries and sender CPU seconds.
    pub tcp_deliveries: u64,
    /// CPU seconds of the TCP baseline's sender.
    pub tcp_cpu_seconds: f64,
    /// Probe agents whose caches matched the API server, and how many there were.
    pub probes_consistent: (u32, u32),
    /// Details of probe mismatches.
    pub probe_details: Vec<String>,
    /// Reconnect after a server restart: seconds until all synced again.
    pub restart_seconds: f64,
    /// Reconnect: bytes per agent.
    pub restart_bytes_per_agent: Summary,
    /// API server with no watcher but the churn.
    pub apiserver_alone: Usage,
    /// API server while cattail serves the agents.
    pub apiserver_cattail: Usage,
    /// API server with direct watchers instead.
    pub apiserver_direct: Usage,
    /// Direct agents and their end-to-end latency, µs.
    pub direct_agents: u32,
    /// End-to-end latency of the direct agents, µs.
    pub direct_e2e_us: Summary,
    /// The loadtest process itself at the end.
    pub loadtest: Usage,
    /// Agent-side errors, a few of them.
    pub errors: Vec<String>,
}

fn ms(us: u64) -> String {
    format!("{:.1} ms", us as f64 / 1_000.0)
}

fn x(r: Option<f64>) -> String {
    r.map_or_else(|| "n/a".into(), |r| format!("{r:.2}×"))
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

/// Per second of a usage window.
fn cpu_rate(u: &Usage) -> f64 {
    if u.seconds > 0.0 {
        u.cpu_seconds / u.seconds
    } else {
        0.0
    }
}

impl Report {
    /// Server CPU µs per delivery, and the TCP baseline's.
    pub fn cpu_per_delivery_us(&self) -> (f64, f64) {
        let cattail = self.server.cpu_seconds * 1e6 / self.server_deliveries.max(1.0);
        let tcp = self.tcp_cpu_seconds * 1e6 / (self.tcp_deliveries.max(1) as f64);
        (cattail, tcp)
    }

    /// Server memory per agent at steady state (after the churn window), bytes; right after
    /// the storm when no steady sample was taken.
    pub fn memory_per_agent(&self, agents: u32) -> f64 {
        let with_agents = if self.server_rss_steady > 0 {
            self.server_rss_steady
        } else {
            self.server_rss_agents
        };
        (with_agents as f64 - self.server_rss_idle as f64) / f64::from(agents.max(1))
    }

    /// The Markdown summary.
    pub fn markdown(&self, agents: u32) -> String {
        let mut m = String::new();
        let (cpu, tcp_cpu) = self.cpu_per_delivery_us();
        let _ = writeln!(
            m,
            "# cattail-loadtest report\n\nScenario: `{}`. Machine: {} cores, shared. Ratios compare with a baseline measured in the same run.\n",
            self.scenario, self.cores
        );
        let _ = writeln!(
            m,
            "| measure | cattail | baseline | ratio |\n| --- | --- | --- | --- |"
        );
        let _ = writeln!(
            m,
            "| fan-out p50 / p99 / max (vs TCP, same messages, {agents} sockets) | {} / {} / {} | {} / {} / {} | p99 {} |",
            ms(self.fanout_us.p50),
            ms(self.fanout_us.p99),
            ms(self.fanout_us.max),
            ms(self.tcp_latency_us.p50),
            ms(self.tcp_latency_us.p99),
            ms(self.tcp_latency_us.max),
            x(ratio(
                self.fanout_us.p99 as f64,
                self.tcp_latency_us.p99 as f64
            ))
        );
        let _ = writeln!(
            m,
            "| end-to-end p50 / p99 (1 light agent in {}; vs direct watches, {} agents) | {} / {} | {} / {} | p99 {} |",
            crate::agents::STAMP_SAMPLE,
            self.direct_agents,
            ms(self.e2e_us.p50),
            ms(self.e2e_us.p99),
            ms(self.direct_e2e_us.p50),
            ms(self.direct_e2e_us.p99),
            x(ratio(self.e2e_us.p99 as f64, self.direct_e2e_us.p99 as f64))
        );
        let _ = writeln!(
            m,
            "| server CPU per delivery (vs TCP sender) | {cpu:.2} µs | {tcp_cpu:.2} µs | {} |",
            x(ratio(cpu, tcp_cpu))
        );
        let _ = writeln!(
            m,
            "| connect storm, all {agents} synced (vs TCP sending the same snapshot bytes) | {:.2} s | {:.2} s | {} |",
            self.storm_seconds,
            self.storm_tcp_seconds,
            x(ratio(self.storm_seconds, self.storm_tcp_seconds))
        );
        let _ = writeln!(
            m,
            "| API server CPU/s during churn (cattail vs {} direct agents) | {:.3} | {:.3} | {} |",
            self.direct_agents,
            cpu_rate(&self.apiserver_cattail),
            cpu_rate(&self.apiserver_direct),
            x(ratio(
                cpu_rate(&self.apiserver_cattail),
                cpu_rate(&self.apiserver_direct)
            ))
        );
        let growth = |u: &Usage| cpu_rate(u) - cpu_rate(&self.apiserver_alone);
        let _ = writeln!(
            m,
            "| API server CPU/s growth over churn alone ({:.3}) | {:.3} | {:.3} | {} |",
            cpu_rate(&self.apiserver_alone),
            growth(&self.apiserver_cattail),
            growth(&self.apiserver_direct),
            x(ratio(
                growth(&self.apiserver_cattail),
                growth(&self.apiserver_direct)
            ))
        );
        let _ = writeln!(
            m,
            "| API server RSS (cattail vs direct; alone {}) | {} | {} | {} |",
            mib(self.apiserver_alone.rss_bytes),
            mib(self.apiserver_cattail.rss_bytes),
            mib(self.apiserver_direct.rss_bytes),
            x(ratio(
                self.apiserver_cattail.rss_bytes as f64,
                self.apiserver_direct.rss_bytes as f64
            ))
        );
        let _ = writeln!(m, "\n| other | value |\n| --- | --- |");
        let _ = writeln!(
            m,
            "| seed | {} writes in {:.1} s |",
            self.seed_writes, self.seed_seconds
        );
        let _ = writeln!(
            m,
            "| churn (seed {}) | {} writes in {:.1} s ({} errors); {} changed the projection, {:.0} updates deduplicated |",
            self.churn.seed,
            self.churn.total(),
            self.churn.seconds,
            self.churn.errors,
            self.churn
                .projection_changes
                .map_or_else(|| "unknown".to_owned(), |c| c.to_string()),
            self.deduplicated
        );
        let _ = writeln!(
            m,
            "| server RSS idle / {agents} agents just after the storm / {agents} agents after churn / per agent (after churn) | {} / {} / {} / {:.1} KiB |",
            mib(self.server_rss_idle),
            mib(self.server_rss_agents),
            mib(self.server_rss_steady),
            self.memory_per_agent(agents) / 1024.0
        );
        let _ = writeln!(
            m,
            "| server CPU in the churn window | {:.2} s over {:.1} s, {:.0} deliveries |",
            self.server.cpu_seconds, self.server.seconds, self.server_deliveries
        );
        let _ = writeln!(
            m,
            "| storm: sync p50 / p99 per agent; bytes per agent p50 | {} / {} ms; {} B |",
            self.storm_sync_ms.p50, self.storm_sync_ms.p99, self.storm_bytes_per_agent.p50
        );
        let _ = writeln!(
            m,
            "| snapshots encoded (server metric) | {} |",
            self.snapshots_encoded
        );
        let _ = writeln!(
            m,
            "| restart: all re-synced after; bytes per agent p50 / max | {:.2} s; {} / {} B |",
            self.restart_seconds,
            self.restart_bytes_per_agent.p50,
            self.restart_bytes_per_agent.max
        );
        let _ = writeln!(
            m,
            "| probes consistent with the API server | {} of {} |",
            self.probes_consistent.0, self.probes_consistent.1
        );
        let _ = writeln!(
            m,
            "| loadtest process (agents run in a child) | {:.1} CPU s, {} |",
            self.loadtest.cpu_seconds,
            mib(self.loadtest.rss_bytes)
        );
        for e in self.errors.iter().chain(&self.probe_details) {
            let _ = writeln!(m, "\n- note: {e}");
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_delivery_and_per_agent_math() {
        let report = Report {
            server: Usage {
                cpu_seconds: 2.0,
                rss_bytes: 0,
                seconds: 10.0,
            },
            server_deliveries: 1_000_000.0,
            tcp_cpu_seconds: 0.5,
            tcp_deliveries: 1_000_000,
            server_rss_idle: 10 << 20,
            server_rss_agents: 20 << 20,
            ..Report::default()
        };
        assert_eq!(report.cpu_per_delivery_us(), (2.0, 0.5));
        assert_eq!(report.memory_per_agent(1024), 10_240.0);
        let md = report.markdown(1024);
        assert!(
            md.contains("| server CPU per delivery (vs TCP sender) | 2.00 µs | 0.50 µs | 4.00× |"),
            "{md}"
        );
    }
}

//! A tiny `cattail-loadtest run` against the real testenv: it must finish, write every report
//! file, and hold sane numbers (agents synced, latencies recorded, probes consistent).

#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn a_tiny_run_writes_a_sane_report() {
    let out = tempfile::tempdir().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_cattail-loadtest"))
        .args([
            "run",
            "--scenario",
            "small",
            "--duration",
            "3s",
            "--agents",
            "20",
            "--direct-agents",
            "10",
            "--churn-seed",
            "77",
            // As production serves: TLS, probes (cattail-client) and light agents alike.
            "--tls",
            "--out",
        ])
        .arg(out.path())
        .env("RUST_BACKTRACE", "0")
        .status()
        .unwrap();
    assert!(status.success(), "run failed: {status}");
    for file in ["report.json", "report.md", "latency.svg", "memory.svg"] {
        let len = std::fs::metadata(out.path().join(file)).unwrap().len();
        assert!(len > 100, "{file} is {len} bytes");
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("report.json")).unwrap()).unwrap();
    assert!(report["seed_writes"].as_u64().unwrap() >= 1_930, "{report}");
    assert!(
        report["fanout_us"]["count"].as_u64().unwrap() > 0,
        "{report}"
    );
    assert!(report["e2e_us"]["count"].as_u64().unwrap() > 0, "{report}");
    assert!(
        report["fanout_us"]["p50"].as_u64().unwrap() < 10_000_000,
        "{report}"
    );
    assert!(report["storm_seconds"].as_f64().unwrap() > 0.0, "{report}");
    assert!(
        report["server_rss_agents"].as_u64().unwrap() > 1 << 20,
        "{report}"
    );
    assert!(report["tcp_deliveries"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(
        report["probes_consistent"][0], report["probes_consistent"][1],
        "{report}"
    );
    assert!(report["churn"]["errors"].as_u64().unwrap() == 0, "{report}");
    // The window through cattail was planned from the seed given (mixed per window), and the
    // server saw its writes change the projection: seeded values are never written before.
    let seed = report["churn"]["seed"].as_u64().unwrap();
    assert_eq!(seed, cattail_loadtest::churn::mix64(77 ^ 1), "{report}");
    let changes = report["churn"]["projection_changes"].as_u64().unwrap();
    let writes: u64 = report["churn"]["writes"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert!(changes > 0 && writes > 0, "{report}");
    let md = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(md.contains("server CPU per delivery"), "{md}");
    assert!(md.contains("changed the projection"), "{md}");
    assert_eq!(report["scenario"]["tls"], true, "{report}");
}

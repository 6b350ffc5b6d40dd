//! `cattail-loadtest cost` end to end, small: the in-memory server, light agents in their own
//! process, the replay, and (where valgrind is installed) the instruction count.

#![allow(clippy::unwrap_used)]

use std::process::Command;

fn cost(extra: &[&str]) -> serde_json::Value {
    let out = tempfile::tempdir().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_cattail-loadtest"))
        .args(["cost", "--agents", "10", "--writes", "30", "--rate", "30", "--out"])
        .arg(out.path())
        .args(extra)
        .env("RUST_BACKTRACE", "0")
        .status()
        .unwrap();
    assert!(status.success(), "cost failed: {status}");
    serde_json::from_slice(&std::fs::read(out.path().join("report.json")).unwrap()).unwrap()
}

#[test]
fn a_replay_delivers_what_it_counts() {
    let report = cost(&[]);
    let replay = &report["replay"];
    assert_eq!(replay["writes"], 30, "{report}");
    let deliveries = replay["deliveries"].as_u64().unwrap();
    let messages = replay["messages"].as_u64().unwrap();
    // Seed 1's first 30 writes reach agents; each change goes out in a message of its own,
    // or a few together when the agents fall behind, never more messages than deliveries.
    assert!(deliveries > 10, "{report}");
    assert!(messages > 0 && messages <= deliveries, "{report}");
    let bytes = report["bytes_per_delivery"].as_f64().unwrap();
    assert!((50.0..5_000.0).contains(&bytes), "{report}");
    assert!(report["instructions"].is_null(), "{report}");
}

#[test]
fn under_callgrind_the_instructions_of_the_replay_are_counted() {
    if Command::new("valgrind").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "valgrind is missing: CI must install it (Debian package valgrind)"
        );
        eprintln!("SKIPPED: valgrind is not installed");
        return;
    }
    let report = cost(&["--callgrind"]);
    let instructions = report["instructions"].as_u64().unwrap();
    let per = report["instructions_per_delivery"].as_f64().unwrap();
    assert!(instructions > 1_000_000, "{report}");
    assert!(per > 1_000.0, "{report}");
}

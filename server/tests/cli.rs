//! The `cattail` binary as operators run it: config errors at start-up, readiness on the
//! admin port against the real API server, and a clean stop on SIGTERM.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cattail_testenv::TestEnv;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn cattail() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cattail"))
}

/// `cattail check-config --config path`.
fn check_config(path: &std::path::Path) -> std::process::Output {
    cattail()
        .arg("check-config")
        .arg("--config")
        .arg(path)
        .output()
        .unwrap()
}

/// Both `check-config` and `serve` refuse the config file at `path`, saying `says`.
fn refused_at_start(path: &std::path::Path, says: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    for args in [
        vec!["check-config"],
        vec!["serve", "--kubeconfig", "/nonexistent"],
    ] {
        let out = cattail()
            .args(&args)
            .arg("--config")
            .arg(path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} {text:?} should fail");
        assert!(stderr.contains(says), "{args:?} {text:?}: {stderr}");
    }
}

#[test]
fn a_bad_config_fails_at_start_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        "resources:\n  - resource: v1/pods\n    fields: [\"spec..nodeName\"]\n",
    )
    .unwrap();
    refused_at_start(&path, "resources[0].fields");
    std::fs::write(
        &path,
        "resources:\n  - resource: v1/pods\n    colour: blue\n",
    )
    .unwrap();
    let out = check_config(&path);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("colour"));

    // The defaults print as a config that loads again.
    let out = cattail().arg("check-config").output().unwrap();
    assert!(out.status.success());
    std::fs::write(&path, &out.stdout).unwrap();
    let again = check_config(&path);
    assert_eq!(again.stdout, out.stdout);
}

#[test]
fn a_bad_serving_setting_fails_at_start_naming_the_field_and_its_range() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let cases = [
        ("fanout:\n  digest_buckets: 1000\n", "fanout.digest_buckets"),
        ("fanout:\n  zstd_level: 40\n", "fanout.zstd_level"),
        (
            "fanout:\n  max_message_bytes: 1048576\n  snapshot_chunk_bytes: 1048576\n",
            "fanout.snapshot_chunk_bytes",
        ),
        ("fanout:\n  write_timeout: 0s\n", "fanout.write_timeout"),
        (
            "fanout:\n  agents_per_node: 65\n",
            "fanout.agents_per_node: 65 is out of range: use 0 to 64",
        ),
        (
            "fanout:\n  target_slack_percent: 2000\n",
            "fanout.target_slack_percent: 2000 is out of range",
        ),
        (
            "grpc:\n  queue: 0\n",
            "grpc.queue: 0 is out of range: use 1 to 64",
        ),
        (
            "grpc:\n  initial_stream_window_bytes: 1000\n",
            "grpc.initial_stream_window_bytes",
        ),
        ("grpc:\n  keepalive_interval: soon\n", "keepalive_interval"),
        ("watch:\n  page_size: 0\n", "watch.page_size"),
    ];
    for (yaml, says) in cases {
        std::fs::write(&path, yaml).unwrap();
        refused_at_start(&path, says);
    }
    // Good values load, and print back as set.
    std::fs::write(
        &path,
        "fanout:\n  write_timeout: 45s\n  zstd_level: 5\ngrpc:\n  keepalive_interval: off\n  queue: 2\nwatch:\n  page_size: 250\n",
    )
    .unwrap();
    let out = check_config(&path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    for line in [
        "write_timeout: 45s",
        "zstd_level: 5",
        "keepalive_interval: off",
        "queue: 2",
        "page_size: 250",
    ] {
        assert!(stdout.contains(line), "{line} in {stdout}");
    }
}

#[test]
fn serve_refuses_to_start_without_tls_unless_plaintext_is_asked_for() {
    let out = cattail()
        .args([
            "serve",
            "--kubeconfig",
            "/nonexistent",
            "--listen=127.0.0.1:0",
        ])
        .env_remove("CATTAIL_INSECURE_PLAINTEXT")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for part in [
        "no TLS certificate",
        "--tls-cert-file",
        "--tls-key-file",
        "--insecure-plaintext",
    ] {
        assert!(stderr.contains(part), "{part:?} missing from: {stderr}");
    }

    // With plaintext asked for, TLS is no longer what stops it: the kubeconfig is.
    let out = cattail()
        .args([
            "serve",
            "--kubeconfig",
            "/nonexistent",
            "--listen=127.0.0.1:0",
        ])
        .env("CATTAIL_INSECURE_PLAINTEXT", "true")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("no TLS certificate"), "{stderr}");
    assert!(stderr.contains("/nonexistent"), "{stderr}");
}

#[test]
fn bad_tls_settings_fail_at_start_naming_the_file_or_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "tls:\n  max_handshakes: 0\n").unwrap();
    let missing = dir.path().join("missing.pem");
    let missing = missing.to_str().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let garbage = garbage.to_str().unwrap();
    let cases: [(Vec<&str>, &str); 5] = [
        (vec!["--tls-cert-file", missing], "tls.key_file"),
        (
            vec!["--tls-cert-file", missing, "--tls-key-file", missing],
            "cannot read the TLS certificate file",
        ),
        (
            vec!["--tls-cert-file", garbage, "--tls-key-file", garbage],
            "holds no PEM `CERTIFICATE`",
        ),
        (
            vec!["--config", config.to_str().unwrap(), "--insecure-plaintext"],
            "tls.max_handshakes",
        ),
        (
            vec![
                "--tls-cert-file",
                garbage,
                "--tls-key-file",
                garbage,
                "--insecure-plaintext",
            ],
            "drop --insecure-plaintext",
        ),
    ];
    for (flags, expected) in cases {
        let out = cattail()
            .args([
                "serve",
                "--kubeconfig",
                "/nonexistent",
                "--listen=127.0.0.1:0",
            ])
            .args(&flags)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{flags:?} should fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{flags:?}: {stderr}");
    }
}

#[test]
fn a_drain_period_not_shorter_than_the_grace_period_fails_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "fanout:\n  drain_period: 45s\n").unwrap();
    let config = format!("--config={}", config.display());
    let cases: [&[&str]; 3] = [
        &["--drain-period=30s"],
        &["--drain-period=20s", "--shutdown-grace=10s"],
        &[&config],
    ];
    // `serve` with a kubeconfig that does not exist, so it stops at the first check it fails.
    let serve = |flags: &[&str]| {
        cattail()
            .args([
                "serve",
                "--kubeconfig",
                "/nonexistent",
                "--insecure-plaintext",
            ])
            .args(flags)
            .output()
            .unwrap()
    };
    for flags in cases {
        let out = serve(flags);
        assert!(!out.status.success(), "{flags:?} should fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("must be shorter than --shutdown-grace"),
            "{flags:?}: {stderr}"
        );
    }
    // Within the grace period, the drain is not what stops it: the kubeconfig is. Nor is the
    // default drain period with a short grace period: it shrinks to fit.
    let short: [&[&str]; 2] = [&["--drain-period=29s", &config], &["--shutdown-grace=5s"]];
    for flags in short {
        let out = serve(flags);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("/nonexistent"), "{flags:?}: {stderr}");
    }
}

#[test]
fn a_bad_flag_is_a_clear_error() {
    let out = cattail()
        .args(["serve", "--listen", "not-an-address"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `path` on 127.0.0.1:`port`: (status line, body), or None if nothing listens.
fn get(port: u16, path: &str) -> Option<(String, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_owned(), body.to_owned()))
}

#[tokio::test]
async fn serve_gets_ready_and_stops_on_sigterm() {
    let env = TestEnv::start().await.unwrap();
    let (grpc, admin) = (free_port(), free_port());
    let mut child = cattail()
        .arg("serve")
        .arg("--kubeconfig")
        .arg(env.kubeconfig_path())
        .arg(format!("--listen=127.0.0.1:{grpc}"))
        .arg(format!("--admin-listen=127.0.0.1:{admin}"))
        .arg("--insecure-plaintext")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some((status, body)) = get(admin, "/readyz")
            && status.contains("200")
        {
            assert_eq!(body, "InSync");
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "cattail exited");
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, metrics) = get(admin, "/metrics").unwrap();
    assert!(status.contains("200"));
    assert!(metrics.contains("cattail_in_sync 1"), "{metrics}");
    assert!(metrics.contains("cattail_agents_at_head 0"), "{metrics}");
    // `/status` without an Accept header stays JSON, with the watches and the (empty) fleet.
    let (status, body) = get(admin, "/status").unwrap();
    assert!(status.contains("200"), "{status}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["syncStatus"], "InSync", "{json}");
    assert_eq!(json["watches"]["v1/pods"]["connected"], true, "{json}");
    assert_eq!(json["fleet"]["agents"], 0, "{json}");
    let (_, livez) = get(admin, "/livez").unwrap();
    assert_eq!(livez, "ok");

    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "cattail did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
}

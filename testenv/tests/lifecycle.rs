//! The launcher's promises: clear errors on bad input, crashes reported instead of
//! hung on, and no process left behind however it is stopped.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cattail_testenv::{ControlPlane, Error, Options, ReadyInfo, TestEnv, ensure_binary};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Whether a process exists (and is not a zombie).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// The processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1));
        if ppid == Some(&pid.to_string()) {
            found.push(child);
        }
    }
    found
}

fn wait_gone(pids: &[u32], within: Duration) {
    let deadline = Instant::now() + within;
    while pids.iter().any(|p| alive(*p)) {
        assert!(
            Instant::now() < deadline,
            "still running after {within:?}: {pids:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn drop_stops_everything() {
    let env = TestEnv::start().await.unwrap();
    let pid = env.pid();
    let kids = children(pid);
    assert!(
        !kids.is_empty(),
        "kube-controller-manager should run as a child"
    );
    let dir = env.dir().to_owned();
    drop(env);
    let mut all = kids;
    all.push(pid);
    wait_gone(&all, Duration::from_secs(30));
    assert!(!dir.exists(), "the temp dir is removed on drop");
}

#[tokio::test]
async fn a_crash_is_reported_with_the_log() {
    let mut env = TestEnv::start().await.unwrap();
    let pid = env.pid();
    let kids = children(pid);
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let err = loop {
        if let Err(e) = env.check_running() {
            break e;
        }
        assert!(Instant::now() < deadline, "the crash was not noticed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let text = err.to_string();
    assert!(matches!(err, Error::Exited { .. }), "{text}");
    assert!(
        text.contains("while running") && text.contains("testenv.log"),
        "{text}"
    );
    // The controller-manager child dies with its parent (Pdeathsig).
    wait_gone(&kids, Duration::from_secs(10));
}

#[tokio::test]
async fn a_port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let options = Options {
        apiserver_port: port,
        ..Options::default()
    };
    let err = TestEnv::start_with(options).await.unwrap_err().to_string();
    assert!(
        err.contains(&format!("port {port} on 127.0.0.1 is in use")),
        "{err}"
    );
    assert!(err.contains("before it was ready"), "{err}");
}

#[test]
fn an_unwritable_dir_is_a_clear_error() {
    let binary = ensure_binary().unwrap().binary;
    // Even root cannot create directories under /proc.
    let err = ControlPlane::spawn(
        &binary,
        "/proc/cattail-testenv".as_ref(),
        &Options::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("/proc/cattail-testenv"), "{err}");

    // The Go binary checks too, for people who run it directly.
    let out = Command::new(&binary)
        .args(["up", "--dir", "/proc/cattail-testenv"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("data dir /proc/cattail-testenv is not usable"),
        "{stderr}"
    );

    let out = Command::new(&binary).arg("up").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--dir is required"));
}

/// Starts `cattail-testenv up` and returns it with its ready line.
fn launch_cli(dir: &std::path::Path) -> (std::process::Child, ReadyInfo) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cattail-testenv"))
        .arg("up")
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let info: ReadyInfo = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    assert!(info.kubeconfig.exists(), "{info:?}");
    assert!(info.server.starts_with("https://127.0.0.1:"), "{info:?}");
    (child, info)
}

#[test]
fn cli_stops_cleanly_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let (mut cli, info) = launch_cli(dir.path());
    let kids = children(info.pid);
    kill(Pid::from_raw(cli.id() as i32), Signal::SIGINT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = cli.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "cattail-testenv up did not stop on SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    let mut all = kids;
    all.push(info.pid);
    wait_gone(&all, Duration::from_secs(10));
}

#[test]
fn a_killed_launcher_leaves_no_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let (mut cli, info) = launch_cli(dir.path());
    let kids = children(info.pid);
    cli.kill().unwrap();
    cli.wait().unwrap();
    let mut all = kids;
    all.push(info.pid);
    wait_gone(&all, Duration::from_secs(60));
}

//! h2spec, the HTTP/2 conformance suite (written by others), against `cattail serve` over h2c on
//! both gRPC transports, then over TLS (a certificate made here, `h2spec -t -k`), with a real
//! kube-apiserver from testenv behind the server.
//!
//! On the native transport the set of failing case ids must equal the exceptions documented in
//! docs/PROTOCOL.md section 2.1, exactly (today: none): a new failure fails the test, and so
//! does a case that starts passing while still listed. The tonic transport's failures are
//! races between hyper answering and h2spec's next frame, so which of them fail varies from run
//! to run: there every failure must be among the documented ones. Each id here must appear in
//! that section, so the lists and their reasons cannot drift apart.
//!
//! h2spec is a Go program (`.ci/run` installs it). `CATTAIL_H2SPEC_BIN` names one, else `h2spec`
//! is looked for on PATH. Without it the test is skipped with a loud message, except under CI
//! (`CI` set), where it fails.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cattail_testenv::TestEnv;

/// Cases native fails, each explained in docs/PROTOCOL.md 2.1: exactly these fail.
const NATIVE_EXCEPTIONS: &[&str] = &[];
/// Cases the tonic transport (hyper and h2) may fail, explained in docs/PROTOCOL.md 2.1: the
/// first two and `5.1.2/1` always, the others in some runs.
const TONIC_EXCEPTIONS: &[&str] = &[
    "generic/2/2",
    "generic/2/3",
    "http2/3.5/2",
    "http2/5.1.2/1",
    "http2/6.9.1/3",
    "http2/8.1/1",
    "http2/8.1.2.1/3",
    "http2/8.1.2.6/1",
    "http2/8.1.2.6/2",
];
/// How long `cattail serve` may take to list the cluster and report ready.
const READY_WITHIN: Duration = Duration::from_secs(60);
/// How long one h2spec run may take (each case waits at most its own 5 s timeout).
const H2SPEC_WITHIN: Duration = Duration::from_secs(300);

/// The h2spec binary, if there is one.
fn h2spec() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CATTAIL_H2SPEC_BIN") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("h2spec"))
        .find(|candidate| candidate.is_file())
}

/// A `cattail serve` process, killed when dropped.
struct Served {
    child: Child,
    grpc: u16,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `cattail serve` on `transport`, once its `/readyz` says it is in sync. Ports are picked free
/// and then bound by the server, so another process may take one in between: a server that
/// exits before it is ready is started again on new ports, a few times.
fn serve(env: &TestEnv, transport: &str, tls: Option<&Path>) -> Served {
    let log_dir = tempfile::tempdir().unwrap();
    for attempt in 1..=3 {
        let (grpc, admin) = (free_port(), free_port());
        let log = log_dir.path().join(format!("serve-{attempt}.log"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_cattail"));
        command
            .arg("serve")
            .arg("--kubeconfig")
            .arg(env.kubeconfig_path())
            .arg(format!("--listen=127.0.0.1:{grpc}"))
            .arg(format!("--admin-listen=127.0.0.1:{admin}"))
            .arg(format!("--grpc-transport={transport}"));
        match tls {
            Some(dir) => command
                .arg("--tls-cert-file")
                .arg(dir.join("tls.crt"))
                .arg("--tls-key-file")
                .arg(dir.join("tls.key")),
            None => command.arg("--insecure-plaintext"),
        };
        let child = command
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut served = Served { child, grpc };
        let deadline = Instant::now() + READY_WITHIN;
        while !ready(admin) {
            if served.child.try_wait().unwrap().is_some() {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: String = text.lines().rev().take(5).collect::<Vec<_>>().join("\n");
                eprintln!("cattail serve --grpc-transport={transport} exited: {tail}");
                break;
            }
            assert!(Instant::now() < deadline, "cattail serve never got ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        if served.child.try_wait().unwrap().is_none() {
            return served;
        }
    }
    panic!("cattail serve --grpc-transport={transport} exited three times; see above");
}

/// Whether `/readyz` on the admin port answers 200.
fn ready(admin: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", admin)) else {
        return false;
    };
    let mut text = String::new();
    write!(stream, "GET /readyz HTTP/1.0\r\nHost: x\r\n\r\n").is_ok()
        && stream.read_to_string(&mut text).is_ok()
        && text
            .lines()
            .next()
            .is_some_and(|line| line.contains(" 200 "))
}

/// One h2spec case as its JUnit report gives it.
#[derive(Debug)]
struct Case {
    /// As h2spec numbers it on its command line: `http2/5.1.1/2`.
    id: String,
    description: String,
    /// The failure or error text, when the case did not pass.
    failure: Option<String>,
    /// h2spec found the case does not apply (it needs a response body, say).
    skipped: bool,
}

/// Runs h2spec against `port` and reads its JUnit report.
fn run_h2spec(binary: &PathBuf, port: u16, tls: bool) -> Vec<Case> {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("h2spec.xml");
    let mut command = Command::new(binary);
    command
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-o", "5", "-j"])
        .arg(&report);
    if tls {
        // TLS, without verifying the test certificate.
        command.args(["-t", "-k"]);
    }
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + H2SPEC_WITHIN;
    // h2spec exits non-zero when a case fails; the report is what counts.
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("h2spec took longer than {H2SPEC_WITHIN:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let xml = std::fs::read_to_string(&report).unwrap();
    parse_report(&xml)
}

/// The cases of an h2spec JUnit report, numbered within their group as h2spec numbers them.
fn parse_report(xml: &str) -> Vec<Case> {
    let document = roxmltree::Document::parse(xml).unwrap();
    let mut cases = Vec::new();
    for suite in document
        .descendants()
        .filter(|node| node.has_tag_name("testsuite"))
    {
        let group = suite.attribute("package").unwrap();
        let in_suite = suite
            .children()
            .filter(|node| node.has_tag_name("testcase"));
        for (index, case) in in_suite.enumerate() {
            let failure = case
                .children()
                .find(|node| node.has_tag_name("failure") || node.has_tag_name("error"))
                .map(|node| node.text().unwrap_or_default().trim().to_owned());
            cases.push(Case {
                id: format!("{group}/{}", index + 1),
                description: case.attribute("classname").unwrap_or_default().to_owned(),
                failure,
                skipped: case.children().any(|node| node.has_tag_name("skipped")),
            });
        }
    }
    cases
}

/// How a transport's failures are held to its documented exceptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// The failures are exactly the exceptions.
    Exact,
    /// Every failure is an exception (the transport's failures vary from run to run).
    Within,
}

/// Runs the suite on one transport and checks its failures against `exceptions`: what is wrong,
/// if anything, so that every run is reported before the test fails.
fn conformance(
    env: &TestEnv,
    binary: &PathBuf,
    transport: &str,
    exceptions: &[&str],
    check: Check,
    tls: Option<&Path>,
) -> Option<String> {
    let served = serve(env, transport, tls);
    let cases = run_h2spec(binary, served.grpc, tls.is_some());
    let transport = if tls.is_some() {
        format!("{transport} over TLS")
    } else {
        transport.to_owned()
    };
    // h2spec 2.2.1 has 145 cases; fewer means the run broke, not the server.
    assert_eq!(cases.len(), 145, "{transport}: not every h2spec case ran");
    let failed: BTreeSet<&str> = cases
        .iter()
        .filter(|case| case.failure.is_some())
        .map(|case| case.id.as_str())
        .collect();
    let expected: BTreeSet<&str> = exceptions.iter().copied().collect();
    let unexpected: Vec<String> = cases
        .iter()
        .filter(|case| case.failure.is_some() && !expected.contains(case.id.as_str()))
        .map(|case| {
            format!(
                "{} {}: {}",
                case.id,
                case.description,
                case.failure.as_deref().unwrap_or_default()
            )
        })
        .collect();
    let now_passing: Vec<&&str> = match check {
        Check::Exact => expected.difference(&failed).collect(),
        Check::Within => Vec::new(),
    };
    let skipped = cases.iter().filter(|case| case.skipped).count();
    println!(
        "h2spec on {transport}: {} cases, {} passed, {skipped} skipped, {} failed: {failed:?}",
        cases.len(),
        cases.len() - failed.len() - skipped,
        failed.len()
    );
    (!unexpected.is_empty() || !now_passing.is_empty()).then(|| {
        format!(
            "{transport}: failures not documented in docs/PROTOCOL.md 2.1:\n{}\n\
             documented exceptions that now pass (remove them): {now_passing:?}",
            unexpected.join("\n")
        )
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn h2spec_passes_on_both_transports_but_for_the_documented_exceptions() {
    let Some(binary) = h2spec() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "h2spec is not installed, and CI must run it: .ci/run installs it with go install"
        );
        eprintln!(
            "\n\n!!! SKIPPED: h2spec is not on PATH (install it with `go install \
             github.com/summerwind/h2spec/cmd/h2spec@v2.2.1`, or set CATTAIL_H2SPEC_BIN) !!!\n\n"
        );
        return;
    };
    let protocol =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOL.md"))
            .unwrap();
    for id in NATIVE_EXCEPTIONS {
        assert!(
            TONIC_EXCEPTIONS.contains(id),
            "{id}: the native transport may not fail a case the tonic transport passes"
        );
    }
    for id in NATIVE_EXCEPTIONS.iter().chain(TONIC_EXCEPTIONS) {
        assert!(
            protocol.contains(&format!("`{id}`")),
            "{id} is not explained in docs/PROTOCOL.md 2.1"
        );
    }
    let env = TestEnv::start().await.unwrap();
    let tls = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(tls.path().join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(tls.path().join("tls.key"), key.serialize_pem()).unwrap();
    let tls = Some(tls.path());
    let runs = [
        ("native", NATIVE_EXCEPTIONS, Check::Exact, None),
        ("native", NATIVE_EXCEPTIONS, Check::Exact, tls),
        ("tonic", TONIC_EXCEPTIONS, Check::Within, None),
        ("tonic", TONIC_EXCEPTIONS, Check::Within, tls),
    ];
    let problems: Vec<String> = tokio::task::block_in_place(|| {
        runs.into_iter()
            .filter_map(|(transport, exceptions, check, tls)| {
                conformance(&env, &binary, transport, exceptions, check, tls)
            })
            .collect()
    });
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

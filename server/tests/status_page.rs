//! `/status` end to end: a real hub, gRPC server and admin endpoint on loopback, 1,000 agents
//! streaming over the generated client, and the page rendered by a real headless Chromium
//! (Debian's `chromium` package; `.ci/run` installs it), with a screenshot in
//! `target/status-page.png`. Also: each agent is listed with its transport and resume mode
//! until it leaves, on both transports; odd `Accept` headers and queries never get a 500.
//!
//! The hub is fed directly, as in fanout_grpc.rs, not from Kubernetes: the fleet view is about
//! agents and revisions, and publishing exact revisions is what puts agents at known lags.
//! `CATTAIL_CHROMIUM_BIN` names a browser, else `chromium` is looked for on PATH. Without one
//! the Chromium test is skipped with a loud message, except under CI (`CI` set), where it fails.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

#[macro_use]
mod fanout_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cattail_server::admin::{self, StatusSource};
use fanout_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Agents in the fleet test.
const AGENTS: usize = 1000;
/// Streams per connection (the server's default `max_concurrent_streams` is 100).
const STREAMS_PER_CONNECTION: usize = 100;
/// Agents that stop acking at the first revision: more than 10 behind at the end.
const FAR: usize = 40;
/// Agents that stop acking 6 revisions later: 6 behind at the end.
const NEAR: usize = 60;
/// The agent id that must come out escaped.
const SCRIPT_ID: &str = "<script>alert(1)</script>";
/// How long the browser may take for one page.
const BROWSER_WITHIN: Duration = Duration::from_secs(90);

/// The browser, if there is one.
fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CATTAIL_CHROMIUM_BIN") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| [dir.join("chromium"), dir.join("chromium-browser")])
        .find(|candidate| candidate.is_file())
}

/// One HTTP/1.1 request to the admin endpoint: (status code, headers, body).
async fn get(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .expect("the admin endpoint answers in time")
        .unwrap();
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, head.to_ascii_lowercase(), body.to_owned())
}

async fn status_json(addr: SocketAddr) -> serde_json::Value {
    let (code, head, body) = get(addr, "/status", &[("Accept", "application/json")]).await;
    assert_eq!(code, 200, "{body}");
    assert!(head.contains("content-type: application/json"), "{head}");
    serde_json::from_str(&body).unwrap()
}

/// Polls `/status` until `done` holds for its JSON; returns that JSON.
async fn status_until(
    addr: SocketAddr,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + WAIT * 3;
    loop {
        let status = status_json(addr).await;
        if done(&status) {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: never happened; last fleet: {}",
            status["fleet"]["lag"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The admin endpoint of `server`'s hub on a port of its own.
async fn admin_endpoint(server: &TestServer) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let source = StatusSource::new(server.hub.clone(), Vec::new());
    tokio::spawn(admin::serve(
        listener,
        server.hub.sync_status(),
        admin::metrics_handle(),
        source,
        server.shutdown.clone(),
    ));
    addr
}

/// An agent that reads everything and acks each complete revision up to `ack_until`.
async fn run_agent(mut agent: TestAgent, ack_until: u64, stop: CancellationToken) {
    let mut acked = 0;
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => return,
            message = agent.next() => message,
        };
        let Ok(Some(message)) = message else { return };
        agent.apply(&message);
        if agent.revision != acked && agent.revision <= ack_until {
            acked = agent.revision;
            agent.ack(acked).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_a_thousand_agents_in_chromium() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is not installed, and CI must run it: .ci/run installs it with apt-get"
        );
        eprintln!(
            "\n\n!!! SKIPPED: chromium is not on PATH (apt-get install chromium, or set \
             CATTAIL_CHROMIUM_BIN) !!!\n\n"
        );
        return;
    };
    let mut server = TestServer::start(config()).await;
    let first = server.apply(&[], &[namespace("ns-0", 1)]);
    let admin = admin_endpoint(&server).await;
    let stop = CancellationToken::new();
    let mut channels = Vec::new();
    for _ in 0..AGENTS.div_ceil(STREAMS_PER_CONNECTION) {
        channels.push(server.channel().await);
    }
    let mut agents = tokio::task::JoinSet::new();
    for i in 0..AGENTS {
        let node = format!("node-{i:04}");
        let mut hello = hello(&node, &[("v1/pods", true), ("v1/namespaces", false)]);
        hello.agent_version = format!("1.{}.0", i % 3);
        let ack_until = if i < FAR {
            first
        } else if i < FAR + NEAR {
            first + 6
        } else {
            u64::MAX
        };
        if i == 0 {
            hello.agent_id = SCRIPT_ID.into();
        }
        let channel = channels[i / STREAMS_PER_CONNECTION].clone();
        let agent = TestAgent::connect_over(channel, hello).await.unwrap();
        agents.spawn(run_agent(agent, ack_until, stop.clone()));
    }
    status_until(admin, "every agent at the head", |s| {
        s["fleet"]["lag"]["at_head"] == AGENTS
    })
    .await;
    for version in 1..=6 {
        server.apply(&[], &[namespace(&format!("ns-{version}"), version)]);
    }
    status_until(admin, "all but the far agents at the head", |s| {
        s["fleet"]["lag"]["at_head"] == AGENTS - FAR
    })
    .await;
    for version in 7..=12 {
        server.apply(&[], &[namespace(&format!("ns-{version}"), version)]);
    }
    let head = first + 12;
    let status = status_until(admin, "the near agents 6 behind", |s| {
        s["fleet"]["lag"]["at_head"] == AGENTS - FAR - NEAR
            && s["fleet"]["lag"]["behind_1_to_10"] == NEAR
    })
    .await;

    // The JSON: counts, and the slowest first, bounded.
    let fleet = &status["fleet"];
    assert_eq!(fleet["head"], head);
    assert_eq!(fleet["agents"], AGENTS);
    assert_eq!(fleet["lag"]["behind_more"], FAR);
    assert_eq!(status["connected_agents"], AGENTS);
    assert_eq!(status["syncStatus"], "InSync");
    assert!(fleet["oldest_lag_seconds"].as_f64().unwrap() > 0.0);
    let slowest = fleet["slowest"].as_array().unwrap();
    assert_eq!(slowest.len(), 50, "the default top");
    for (i, row) in slowest.iter().enumerate() {
        let lag = if i < FAR { 12 } else { 6 };
        assert_eq!(row["lag_revisions"], lag, "{row}");
        assert_eq!(row["lag_basis"], "acked", "{row}");
        assert_eq!(row["acked_revision"], head - lag, "{row}");
        assert_eq!(row["transport"], "native", "{row}");
        assert_eq!(row["resume_mode"], "snapshot", "{row}");
        assert!(row["bytes_sent"].as_u64().unwrap() > 0, "{row}");
        let node: usize = row["node"].as_str().unwrap()["node-".len()..]
            .parse()
            .unwrap();
        assert!(node < FAR + NEAR, "only agents that stopped acking: {row}");
    }
    assert!(slowest.iter().any(|row| row["agent_id"] == SCRIPT_ID));
    let (_, _, few) = get(admin, "/status?format=json&top=3", &[]).await;
    let few: serde_json::Value = serde_json::from_str(&few).unwrap();
    assert_eq!(few["fleet"]["slowest"].as_array().unwrap().len(), 3);

    // The gauges, refreshed at the scrape.
    let (_, _, metrics) = get(admin, "/metrics", &[]).await;
    assert!(
        metrics.contains(&format!("cattail_agents_at_head {}", AGENTS - FAR - NEAR)),
        "{metrics}"
    );
    let oldest: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("cattail_agent_oldest_lag_seconds "))
        .expect("cattail_agent_oldest_lag_seconds is exported")
        .parse()
        .unwrap();
    assert!(oldest > 0.0, "{oldest}");

    // The page is bounded whatever the number of agents: 50 rows of at most 3 x 253 bytes of
    // agent text each, escaped.
    let started = std::time::Instant::now();
    let (code, _, page) = get(admin, "/status", &[("Accept", "text/html")]).await;
    assert_eq!(code, 200);
    assert!(page.len() < 64 * 1024, "{} bytes", page.len());
    eprintln!(
        "/status with {AGENTS} agents: {} bytes of HTML in {:?}",
        page.len(),
        started.elapsed()
    );

    // The page, in a real browser.
    let url = format!("http://{admin}/status");
    let dom = run_browser(&browser, &["--dump-dom", &url]).await;
    assert!(dom.contains(r#"<b id="at-head">900</b>"#), "{dom}");
    assert!(dom.contains(r#"<b id="behind-near">60</b>"#), "{dom}");
    assert!(dom.contains(r#"<b id="behind-far">40</b>"#), "{dom}");
    assert!(
        dom.contains(r#"<span id="agent-count">1000</span>"#),
        "{dom}"
    );
    assert_eq!(dom.matches(r#"<tr class="agent""#).count(), 50, "{dom}");
    assert!(dom.contains(r#"<tr class="agent" data-lag="12">"#), "{dom}");
    assert!(
        dom.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "the agent id is shown as text: {dom}"
    );
    assert!(
        !dom.contains("<script"),
        "no script from an agent id: {dom}"
    );
    assert!(
        dom.contains(r#"id="sync-status" class="ok">InSync"#),
        "{dom}"
    );

    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("status-page.png");
    let _ = std::fs::remove_file(&screenshot);
    let shot = format!("--screenshot={}", screenshot.display());
    run_browser(&browser, &[&shot, "--window-size=1500,2400", &url]).await;
    let png = std::fs::read(&screenshot).expect("chromium wrote the screenshot");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!((width, height), (1500, 2400), "the window's size");
    assert!(
        png.len() > 50_000,
        "a page with content: {} bytes",
        png.len()
    );
    eprintln!("status page screenshot: {}", screenshot.display());

    stop.cancel();
    server.shutdown.cancel();
    while agents.join_next().await.is_some() {}
}

/// Runs headless Chromium with `args`; returns what it printed.
async fn run_browser(browser: &Path, args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut command = tokio::process::Command::new(browser);
    command
        .args([
            "--headless",
            // Tests run as root in CI, where Chromium's sandbox cannot start.
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .kill_on_drop(true);
    let output = tokio::time::timeout(BROWSER_WITHIN, command.output())
        .await
        .expect("chromium finished in time")
        .unwrap();
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

on_both_transports!(an_agent_is_listed_with_its_transport_and_resume_mode_until_it_leaves);

async fn an_agent_is_listed_with_its_transport_and_resume_mode_until_it_leaves(
    transport: cattail_server::grpc::Transport,
) {
    let mut server = TestServer::start_on(config(), transport).await;
    let admin = admin_endpoint(&server).await;
    server.apply(&[], &[namespace("a", 1)]);
    let subscriptions = &[("v1/namespaces", false)];
    let mut first = TestAgent::connect(&server, hello("n1", subscriptions))
        .await
        .unwrap();
    first.synced().await;
    let status = status_until(admin, "the agent listed", |s| s["fleet"]["agents"] == 1).await;
    let row = &status["fleet"]["slowest"][0];
    assert_eq!(row["transport"], transport.to_string(), "{row}");
    assert_eq!(row["resume_mode"], "snapshot", "{row}");
    assert_eq!(row["agent_id"], "agent-n1", "{row}");
    assert_eq!(row["node"], "n1", "{row}");
    assert_eq!(row["version"], "test", "{row}");
    let resume = first.resume_hello(false);
    drop(first);
    status_until(admin, "the agent gone", |s| s["fleet"]["agents"] == 0).await;

    server.apply(&[], &[namespace("b", 1)]);
    let mut again = TestAgent::connect(&server, resume).await.unwrap();
    again.synced().await;
    let status = status_until(admin, "the agent back", |s| s["fleet"]["agents"] == 1).await;
    assert_eq!(status["fleet"]["slowest"][0]["resume_mode"], "deltas");
    drop(again);
    status_until(admin, "the agent gone again", |s| s["fleet"]["agents"] == 0).await;
    server.shutdown.cancel();
}

/// A request (target, headers) and what it must get: a status code, and `json`, `html` or a
/// message in the body.
type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], u16, &'a str);

#[tokio::test]
async fn odd_accept_headers_and_queries_get_sensible_answers() {
    let server = TestServer::start(config()).await;
    let admin = admin_endpoint(&server).await;
    let long = "text/html;q=0.1,".repeat(1000);
    let cases: &[Case<'_>] = &[
        ("/status", &[], 200, "json"),
        ("/status", &[("Accept", "*/*")], 200, "json"),
        ("/status", &[("Accept", "text/html,*/*;q=0.8")], 200, "html"),
        (
            "/status",
            &[("Accept", "text/html;q=0.1, application/json;q=0.9")],
            200,
            "json",
        ),
        ("/status", &[("Accept", "text/*")], 200, "html"),
        ("/status", &[("Accept", "garbage;;;q=x, ,/,")], 200, "json"),
        ("/status", &[("Accept", "text/html;q=7")], 200, "json"),
        ("/status", &[("Accept", &long)], 200, "json"),
        (
            "/status",
            &[("Accept", "image/png"), ("Accept", "text/html")],
            200,
            "html",
        ),
        (
            "/status?format=html",
            &[("Accept", "application/json")],
            200,
            "html",
        ),
        (
            "/status?format=json&x=%zz&&=",
            &[("Accept", "text/html")],
            200,
            "json",
        ),
        ("/status?top=2&top=5", &[], 200, "json"),
        ("/status?format=xml", &[], 400, "format=html or format=json"),
        ("/status?top=lots", &[], 400, "top=0 to top=200"),
        ("/status?%FF%FE=%FF", &[], 200, "json"),
    ];
    for (target, headers, code, expect) in cases {
        let (got, head, body) = get(admin, target, headers).await;
        assert_eq!(got, *code, "{target} {headers:?}: {body}");
        match *expect {
            "json" => {
                assert!(head.contains("content-type: application/json"), "{target}");
                let json: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert!(json["fleet"]["lag"].is_object(), "{target}: {json}");
            }
            "html" => {
                assert!(head.contains("content-type: text/html"), "{target}");
                assert!(body.starts_with("<!DOCTYPE html>"), "{target}: {body}");
                assert!(body.contains("No agent is connected"), "{target}");
            }
            message => assert!(body.contains(message), "{target}: {body}"),
        }
        assert!(head.contains("vary: accept"), "{target}: {head}");
    }
}

//! The agent against the real API server from testenv, in both modes at once: one agent on
//! an in-process cattail server (default profile, no auth), one directly on the API server.
//! A fixed small scenario changes labels, namespaces, pod IPs and phases, pods and policies;
//! after each change both agents must hold exactly the hand-written expected state within
//! one second of the API server accepting the change.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cattail_client::Client;
use cattail_server::serve::{ServeOptions, serve};
use cattail_testenv::TestEnv;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use netpol_agent::agent;
use netpol_agent::ipsets::NodeState;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The agents' node.
const NODE: &str = "node-1";
/// Starting things: the control plane, the server's first sync, the agents' first lists.
const START: Duration = Duration::from_secs(90);
/// What the issue asks: the sets are right within a second of each change.
const WITHIN: Duration = Duration::from_secs(1);

async fn create<K>(api: &Api<K>, value: Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    api.create(
        &PostParams::default(),
        &serde_json::from_value(value).unwrap(),
    )
    .await
    .unwrap();
}

async fn patch<K>(api: &Api<K>, name: &str, value: Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(name, &PatchParams::default(), &Patch::Merge(&value))
        .await
        .unwrap();
}

/// Reports a pod's IP (or phase) as a kubelet would.
async fn status(pods: &Api<Pod>, name: &str, value: Value) {
    pods.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": value})),
    )
    .await
    .unwrap();
}

fn pod(name: &str, node: &str, labels: Value, host_network: bool) -> Value {
    json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"nodeName": node, "hostNetwork": host_network,
                 "containers": [{"name": "c", "image": "x"}]},
    })
}

async fn run_pod(pods: &Api<Pod>, name: &str, node: &str, labels: Value, ip: &str) {
    create(pods, pod(name, node, labels, false)).await;
    status(
        pods,
        name,
        json!({"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}),
    )
    .await;
}

/// Two namespaces, six pods (one without an IP yet, one host-networked), three policies.
async fn seed(client: &kube::Client) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    create(
        &namespaces,
        json!({"metadata": {"name": "prod", "labels": {"team": "prod", "env": "prod"}}}),
    )
    .await;
    create(
        &namespaces,
        json!({"metadata": {"name": "dev", "labels": {"team": "dev"}}}),
    )
    .await;
    let prod: Api<Pod> = Api::namespaced(client.clone(), "prod");
    let dev: Api<Pod> = Api::namespaced(client.clone(), "dev");
    run_pod(&prod, "web-1", NODE, json!({"app": "web"}), "10.1.0.1").await;
    run_pod(&prod, "db-1", "node-2", json!({"app": "db"}), "10.1.0.2").await;
    run_pod(&dev, "web-2", "node-2", json!({"app": "web"}), "10.2.0.1").await;
    run_pod(&dev, "client", NODE, json!({"app": "client"}), "10.2.0.2").await;
    // Not endpoints: no IP yet, and the node's own network.
    create(&prod, pod("db-2", NODE, json!({"app": "db"}), false)).await;
    create(&prod, pod("host", NODE, json!({"app": "web"}), true)).await;
    status(
        &prod,
        "host",
        json!({"phase": "Running", "podIP": "192.168.0.1", "podIPs": [{"ip": "192.168.0.1"}]}),
    )
    .await;

    let prod_policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), "prod");
    create(&prod_policies, json!({"metadata": {"name": "web"}, "spec": {
        "podSelector": {"matchLabels": {"app": "web"}},
        "ingress": [{"from": [
            {"podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["db", "client"]}]}},
            {"namespaceSelector": {"matchLabels": {"team": "dev"}}},
            {"namespaceSelector": {"matchExpressions": [{"key": "env", "operator": "DoesNotExist"}]},
             "podSelector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]}},
            {"ipBlock": {"cidr": "10.99.0.0/16", "except": ["10.99.1.0/24"]}},
        ]}],
        "egress": [{"to": [{"podSelector": {}}]}],
    }})).await;
    create(&prod_policies, json!({"metadata": {"name": "db"}, "spec": {
        "podSelector": {"matchLabels": {"app": "db"}},
        "ingress": [{"from": [
            {"podSelector": {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}},
            {"namespaceSelector": {},
             "podSelector": {"matchLabels": {"app": "web"},
                             "matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}},
        ]}],
    }})).await;
    let dev_policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), "dev");
    create(
        &dev_policies,
        json!({"metadata": {"name": "deny"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}),
    )
    .await;
}

fn owned<'a>(strings: &'a [&str]) -> impl Iterator<Item = String> + 'a {
    strings.iter().map(|s| (*s).to_owned())
}

/// What node-1 must hold: its endpoints' policies and the flat sets.
#[derive(Debug, PartialEq)]
struct Expected {
    endpoints: BTreeMap<String, BTreeSet<String>>,
    sets: BTreeMap<String, Vec<String>>,
}

fn expected(endpoints: &[(&str, &[&str])], sets: &[(&str, &[&str])]) -> Expected {
    Expected {
        endpoints: endpoints
            .iter()
            .map(|(pod, policies)| ((*pod).to_owned(), owned(policies).collect()))
            .collect(),
        sets: sets
            .iter()
            .map(|(set, members)| ((*set).to_owned(), owned(members).collect()))
            .collect(),
    }
}

fn held(state: &NodeState) -> Expected {
    assert!(state.errors.is_empty(), "{:?}", state.errors);
    Expected {
        endpoints: state.endpoints.clone(),
        sets: state.flat_sets(),
    }
}

/// One agent running `agent::run` in-process.
struct RunningAgent {
    mode: &'static str,
    states: watch::Receiver<Arc<NodeState>>,
    task: tokio::task::JoinHandle<agent::Result<()>>,
}

fn start_agent(mode: &'static str, client: Client, shutdown: CancellationToken) -> RunningAgent {
    let (state, states) = watch::channel(Arc::new(NodeState::default()));
    let task = tokio::spawn(async move { agent::run(client, NODE, state, shutdown).await });
    RunningAgent { mode, states, task }
}

/// Waits until every agent holds `want`, failing after `limit`; returns how long each took
/// since `issued`, when the change was sent to the API server.
async fn converge(
    agents: &[RunningAgent],
    want: &Expected,
    limit: Duration,
    step: &str,
    issued: Instant,
) -> Vec<Duration> {
    // Each agent's watch channel wakes the wait on every new state: no polling.
    let waits = agents.iter().map(|agent| {
        let mut states = agent.states.clone();
        async move {
            let reached = tokio::time::timeout(limit, states.wait_for(|state| held(state) == *want));
            match reached.await {
                Ok(Ok(_)) => issued.elapsed(),
                Ok(Err(_)) => panic!("step {step:?}: the {} agent stopped", agent.mode),
                Err(_) => panic!(
                    "step {step:?}: the {} agent does not hold the expected state after {limit:?}\n got: {:#?}\nwant: {want:#?}",
                    agent.mode,
                    held(&agent.states.borrow())
                ),
            }
        }
    });
    futures::future::join_all(waits).await
}

/// The scenario's steps: a change is issued, then checked within [`WITHIN`] of the API server
/// accepting it; the times reported run from when it was issued.
struct Steps<'a> {
    agents: &'a [RunningAgent],
    /// When the current step's change started: the end of the previous check.
    issued: Instant,
    report: Vec<(&'static str, Vec<Duration>)>,
}

impl Steps<'_> {
    async fn check(&mut self, want: &Expected, step: &'static str) {
        let took = converge(self.agents, want, WITHIN, step, self.issued).await;
        self.report.push((step, took));
        self.issued = Instant::now();
    }
}

/// The `netpol-agent` binary, its stdout lines collected as they come.
struct AgentProcess {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

fn spawn_binary(args: &[&str], kubeconfig: &std::path::Path) -> AgentProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_netpol-agent"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let collected = Arc::clone(&lines);
    tokio::spawn(async move {
        while let Ok(Some(line)) = stdout.next_line().await {
            collected.lock().unwrap().push(line);
        }
    });
    AgentProcess { child, lines }
}

/// The state the printed lines describe, replayed in order; empty sets are left out.
fn replay(lines: &[String]) -> Expected {
    let mut endpoints = BTreeMap::new();
    let mut sets: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in lines {
        let change: Value = serde_json::from_str(line).unwrap();
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_owned())
                .collect()
        };
        if let Some(pod) = change["pod"].as_str() {
            match change["policies"].is_null() {
                true => endpoints.remove(pod),
                false => endpoints.insert(
                    pod.to_owned(),
                    strings(&change["policies"]).into_iter().collect(),
                ),
            };
        } else if let Some(rule) = change["rule"].as_str() {
            let set = sets
                .entry(format!("{} {rule}", change["policy"].as_str().unwrap()))
                .or_default();
            set.extend(strings(&change["added"]));
            for removed in strings(&change["removed"]) {
                set.remove(&removed);
            }
        } else {
            panic!("an error line: {line}");
        }
    }
    Expected {
        endpoints,
        sets: sets
            .into_iter()
            .filter(|(_, set)| !set.is_empty())
            .map(|(key, set)| (key, set.into_iter().collect()))
            .collect(),
    }
}

/// `GET /state` of a `--listen` address, as JSON.
async fn get_state(addr: &str) -> Option<Value> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(b"GET /state HTTP/1.0\r\nhost: test\r\n\r\n")
        .await
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    Some(serde_json::from_str(body).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_modes_hold_exactly_the_expected_sets_within_a_second_of_each_change() {
    tokio::time::timeout(Duration::from_secs(240), scenario())
        .await
        .expect("the whole scenario took over 240 s");
}

async fn scenario() {
    let env = TestEnv::start().await.unwrap();
    let client = env.client();
    seed(&client).await;

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    // The default profile, with its `exclude:` rules, and no `auth:`: agents may list every
    // node's pods.
    let server = tokio::spawn({
        let (client, shutdown) = (client.clone(), shutdown.clone());
        let metrics = cattail_server::admin::metrics_handle();
        async move {
            serve(
                ServeOptions::default(),
                client,
                listener,
                None,
                metrics,
                shutdown,
                Some(ready_tx),
            )
            .await
            .unwrap();
        }
    });
    let _handle = ready_rx.await.unwrap();

    let agents = [
        start_agent(
            "cattail",
            Client::new([endpoint.clone()])
                .agent_id("netpol-test")
                .node_name(NODE),
            shutdown.child_token(),
        ),
        start_agent(
            "direct",
            Client::direct(client.clone()),
            shutdown.child_token(),
        ),
    ];

    // The binary too, in both modes; the direct one serves its state.
    let listen = {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        free.local_addr().unwrap().to_string()
    };
    let kubeconfig = env.kubeconfig_path();
    let binaries = [
        spawn_binary(&["--endpoint", &endpoint, "--node-name", NODE], kubeconfig),
        spawn_binary(
            &["--direct", "--node-name", NODE, "--listen", &listen],
            kubeconfig,
        ),
    ];

    // A reader that went away (`| head -0`): the first lines fail, and the binary says so
    // and exits instead of computing for no one.
    let mut orphan = Command::new(env!("CARGO_BIN_EXE_netpol-agent"))
        .args(["--endpoint", &endpoint, "--node-name", NODE])
        .env("RUST_LOG", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    drop(orphan.stdout.take());
    let orphan = tokio::time::timeout(START, orphan.wait_with_output())
        .await
        .expect("a binary without a reader keeps running")
        .unwrap();
    let stderr = String::from_utf8_lossy(&orphan.stderr);
    assert!(!orphan.status.success(), "{stderr}");
    assert!(stderr.contains("cannot write to stdout"), "{stderr}");

    let prod: Api<Pod> = Api::namespaced(client.clone(), "prod");
    let dev: Api<Pod> = Api::namespaced(client.clone(), "dev");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let dev_policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), "dev");

    // Step 0: db-2 (no IP) and host (hostNetwork) are not endpoints, in either mode.
    let mut want = expected(
        &[("dev/client", &["dev/deny"]), ("prod/web-1", &["prod/web"])],
        &[
            ("prod/web egress[0].to[0]", &["10.1.0.1/32", "10.1.0.2/32"]),
            ("prod/web ingress[0].from[0]", &["10.1.0.2/32"]),
            (
                "prod/web ingress[0].from[1]",
                &["10.2.0.1/32", "10.2.0.2/32"],
            ),
            (
                "prod/web ingress[0].from[2]",
                &["10.2.0.1/32", "10.2.0.2/32"],
            ),
            (
                "prod/web ingress[0].from[3]",
                &["10.99.0.0/16", "except 10.99.1.0/24"],
            ),
        ],
    );
    converge(&agents, &want, START, "initial", Instant::now()).await;
    let mut steps = Steps {
        agents: &agents,
        issued: Instant::now(),
        report: Vec::new(),
    };

    // Each step: a change, then what node-1 must hold after it.
    patch(
        &prod,
        "db-1",
        json!({"metadata": {"labels": {"app": "cache"}}}),
    )
    .await;
    want.sets
        .insert("prod/web ingress[0].from[0]".into(), vec![]);
    steps.check(&want, "label db-1 app=cache").await;

    patch(
        &namespaces,
        "dev",
        json!({"metadata": {"labels": {"env": "dev"}}}),
    )
    .await;
    want.sets
        .insert("prod/web ingress[0].from[2]".into(), vec![]);
    steps.check(&want, "label namespace dev").await;

    status(
        &prod,
        "db-2",
        json!({"phase": "Running", "podIP": "10.1.0.3", "podIPs": [{"ip": "10.1.0.3"}]}),
    )
    .await;
    want = expected(
        &[
            ("dev/client", &["dev/deny"]),
            ("prod/db-2", &["prod/db"]),
            ("prod/web-1", &["prod/web"]),
        ],
        &[
            (
                "prod/db ingress[0].from[0]",
                &["10.1.0.2/32", "10.1.0.3/32"],
            ),
            (
                "prod/db ingress[0].from[1]",
                &["10.1.0.1/32", "10.2.0.1/32"],
            ),
            (
                "prod/web egress[0].to[0]",
                &["10.1.0.1/32", "10.1.0.2/32", "10.1.0.3/32"],
            ),
            ("prod/web ingress[0].from[0]", &["10.1.0.3/32"]),
            (
                "prod/web ingress[0].from[1]",
                &["10.2.0.1/32", "10.2.0.2/32"],
            ),
            ("prod/web ingress[0].from[2]", &[]),
            (
                "prod/web ingress[0].from[3]",
                &["10.99.0.0/16", "except 10.99.1.0/24"],
            ),
        ],
    );
    steps.check(&want, "db-2 gets an IP").await;

    prod.delete("web-1", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    // No web pod left on node-1: prod/web's sets are not needed any more.
    want = expected(
        &[("dev/client", &["dev/deny"]), ("prod/db-2", &["prod/db"])],
        &[
            (
                "prod/db ingress[0].from[0]",
                &["10.1.0.2/32", "10.1.0.3/32"],
            ),
            ("prod/db ingress[0].from[1]", &["10.2.0.1/32"]),
        ],
    );
    steps.check(&want, "delete web-1").await;

    patch(
        &dev,
        "web-2",
        json!({"metadata": {"labels": {"tier": "front"}}}),
    )
    .await;
    want.sets
        .insert("prod/db ingress[0].from[1]".into(), vec![]);
    steps.check(&want, "label web-2 tier").await;

    status(&prod, "db-2", json!({"phase": "Succeeded"})).await;
    want = expected(&[("dev/client", &["dev/deny"])], &[]);
    steps.check(&want, "db-2 succeeds").await;

    patch(
        &dev_policies,
        "deny",
        json!({"spec": {"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]}}),
    )
    .await;
    want.sets.insert(
        "dev/deny ingress[0].from[0]".into(),
        vec!["10.0.0.0/8".into()],
    );
    steps.check(&want, "policy gets a rule").await;

    // A new policy whose peers are in a namespace that does not exist yet.
    create(
        &dev_policies,
        json!({"metadata": {"name": "from-qa"}, "spec": {
            "podSelector": {"matchLabels": {"app": "client"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "qa"}}}]}],
        }}),
    )
    .await;
    want.endpoints.insert(
        "dev/client".into(),
        ["dev/deny".into(), "dev/from-qa".into()].into(),
    );
    want.sets
        .insert("dev/from-qa ingress[0].from[0]".into(), vec![]);
    steps.check(&want, "create a policy").await;

    create(
        &namespaces,
        json!({"metadata": {"name": "qa", "labels": {"team": "qa"}}}),
    )
    .await;
    let qa: Api<Pod> = Api::namespaced(client.clone(), "qa");
    run_pod(&qa, "web-3", "node-2", json!({"app": "web"}), "10.3.0.1").await;
    want.sets.insert(
        "dev/from-qa ingress[0].from[0]".into(),
        vec!["10.3.0.1/32".into()],
    );
    steps.check(&want, "namespace qa and a pod").await;

    patch(
        &namespaces,
        "qa",
        json!({"metadata": {"labels": {"team": "other"}}}),
    )
    .await;
    want.sets
        .insert("dev/from-qa ingress[0].from[0]".into(), vec![]);
    steps.check(&want, "relabel namespace qa").await;

    dev_policies
        .delete("from-qa", &DeleteParams::default())
        .await
        .unwrap();
    want.endpoints
        .insert("dev/client".into(), ["dev/deny".into()].into());
    want.sets.remove("dev/from-qa ingress[0].from[0]");
    steps.check(&want, "delete the policy").await;

    for (step, took) in &steps.report {
        eprintln!(
            "{step:>22}: cattail {:>6.2} ms, direct {:>6.2} ms",
            took[0].as_secs_f64() * 1e3,
            took[1].as_secs_f64() * 1e3
        );
    }

    // The binaries printed lines that replay to the same final state, and went through the
    // first one (prod/web's ipBlock) on the way; the direct one serves what the in-process
    // agents hold.
    let final_state = expected(
        &[("dev/client", &["dev/deny"])],
        &[("dev/deny ingress[0].from[0]", &["10.0.0.0/8"])],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    for (binary, mode) in binaries.iter().zip(["cattail", "direct"]) {
        loop {
            let lines = binary.lines.lock().unwrap().clone();
            if replay(&lines) == final_state {
                let block = r#"{"policy":"prod/web","rule":"ingress[0].from[3]","added":["10.99.0.0/16"],"removed":[],"except":["10.99.1.0/24"]}"#;
                assert!(lines.iter().any(|l| l == block), "{mode}: {lines:#?}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the {mode} binary printed {lines:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let served = get_state(&listen)
        .await
        .expect("the direct binary serves /state");
    assert_eq!(
        served,
        serde_json::to_value(&**agents[1].states.borrow()).unwrap()
    );
    assert_eq!(served["endpoints"], json!({"dev/client": ["dev/deny"]}));

    // SIGTERM: the binaries stop cleanly.
    for (mut binary, mode) in binaries.into_iter().zip(["cattail", "direct"]) {
        let pid = nix::unistd::Pid::from_raw(binary.child.id().unwrap().try_into().unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let exit = tokio::time::timeout(Duration::from_secs(10), binary.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the {mode} binary ignored SIGTERM"))
            .unwrap();
        assert!(exit.success(), "the {mode} binary exited with {exit}");
    }
    shutdown.cancel();
    for agent in agents {
        agent.task.await.unwrap().unwrap();
    }
    server.await.unwrap();
}

//! Shared pieces of the end-to-end tests: a real control plane, the real server in-process,
//! long-lived agents that keep a local copy, and the expected state computed from the API.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cattail_client::{Client, Event, Subscription, SubscriptionEvent};
use cattail_server::config::{FieldPath, ResourceConfig, ServerConfig};
use cattail_server::k8s::project::Projection;
use cattail_server::k8s::watch::resolve;
use cattail_server::serve::{ServeOptions, serve};
use futures::StreamExt;
use kube::api::{Api, DynamicObject, ListParams};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub(crate) const WAIT: Duration = Duration::from_secs(90);

/// The tests read process-wide metrics, so they run one at a time.
pub(crate) static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// (resource, namespace, name) -> projected object.
pub(crate) type State = BTreeMap<(String, String, String), Value>;

/// The server's config in these tests: the default profile plus a CRD.
pub(crate) fn config() -> ServerConfig {
    let mut config = ServerConfig::default();
    let widgets = ResourceConfig::new("example.com/v1/widgets".parse().unwrap())
        .with_field(FieldPath::parse("spec").unwrap())
        .with_field(FieldPath::parse("metadata.labels").unwrap());
    config.resources.push(widgets);
    config
}

/// A running in-process server.
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    pub(crate) sync: cattail_server::admin::SyncStatus,
    pub(crate) token: CancellationToken,
    pub(crate) task: JoinHandle<()>,
}

impl Server {
    pub(crate) fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts the server on `addr` (port 0 for a free one) and waits until it is in sync.
    pub(crate) async fn start(client: kube::Client, addr: SocketAddr) -> Server {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let token = CancellationToken::new();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let options = ServeOptions {
            config: config(),
            ..ServeOptions::default()
        };
        let metrics = cattail_server::admin::metrics_handle();
        let task = tokio::spawn({
            let token = token.clone();
            async move {
                serve(
                    options,
                    client,
                    listener,
                    None,
                    metrics,
                    token,
                    Some(ready_tx),
                )
                .await
                .unwrap();
            }
        });
        let handle = ready_rx.await.unwrap();
        wait_for(|| handle.sync.get(), "the server to be in sync").await;
        Server {
            addr,
            sync: handle.sync,
            token,
            task,
        }
    }

    /// Stops the server and waits for it.
    pub(crate) async fn stop(self) {
        self.token.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

/// Polls `condition` until it holds, failing after [`WAIT`].
pub(crate) async fn wait_for(mut condition: impl FnMut() -> bool, what: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the API server holds now, projected and left out the way the server does it.
pub(crate) async fn expected_state(client: &kube::Client) -> State {
    let client = client.clone();
    let mut state = State::new();
    for resource in config().resources {
        let resolved = resolve(&client, &resource.resource).await.unwrap();
        let projection = Projection::new(&resource, &resolved.api.kind).unwrap();
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resolved.api);
        for object in api.list(&ListParams::default()).await.unwrap() {
            let object = serde_json::to_value(&object).unwrap();
            // Absent for agents, as the server's `exclude:` rules say (pods without an IP...).
            if projection.excluded_by(&object).is_some() {
                continue;
            }
            let projected = projection.project(&object).unwrap();
            let value: Value = serde_json::from_slice(&projected.value).unwrap();
            state.insert(
                (
                    resource.resource.to_string(),
                    projected.namespace,
                    projected.name,
                ),
                value,
            );
        }
    }
    state
}

/// A long-lived agent: its local copy and every event it received.
#[derive(Clone, Default)]
pub(crate) struct Agent {
    pub(crate) state: Arc<Mutex<State>>,
    pub(crate) events: Arc<Mutex<Vec<(String, String)>>>,
    pub(crate) synced: Arc<Mutex<usize>>,
}

impl Agent {
    /// Connects to `endpoints` and subscribes to every configured resource.
    pub(crate) fn start(endpoints: &[String], name: &str) -> Agent {
        let agent = Agent::default();
        let subscriptions: Vec<Subscription> = config()
            .resources
            .iter()
            .map(|r| Subscription::for_resource(r.resource.as_str()).unwrap())
            .collect();
        let client = Client::new(endpoints.to_vec())
            .agent_id(name)
            .node_name(name);
        let mut stream = client.subscribe(&subscriptions).unwrap();
        let copy = agent.clone();
        tokio::spawn(async move {
            while let Some(item) = stream.next().await {
                match item {
                    Ok(event) => copy.apply(event),
                    Err(error) => eprintln!("agent: {error}"),
                }
            }
        });
        agent
    }

    fn apply(&self, tagged: SubscriptionEvent) {
        let resource = tagged.resource.to_string();
        let mut state = self.state.lock().unwrap();
        let mut events = self.events.lock().unwrap();
        match tagged.event {
            Event::Init => {}
            Event::InitDone => *self.synced.lock().unwrap() += 1,
            Event::InitApply(o) | Event::Apply(o) => {
                events.push((
                    "apply".into(),
                    format!("{resource} {}/{}", o.namespace, o.name),
                ));
                state.insert(
                    (resource, o.namespace.clone(), o.name.clone()),
                    o.to_json().unwrap(),
                );
            }
            Event::Delete(o) => {
                events.push((
                    "delete".into(),
                    format!("{resource} {}/{}", o.namespace, o.name),
                ));
                state.remove(&(resource, o.namespace, o.name));
            }
        }
    }

    pub(crate) fn snapshot(&self) -> State {
        self.state.lock().unwrap().clone()
    }

    pub(crate) fn event_count(&self) -> usize {
        self.events.lock().unwrap().len()
    }

    pub(crate) fn events_since(&self, start: usize) -> Vec<(String, String)> {
        self.events.lock().unwrap()[start..].to_vec()
    }
}

/// Waits until every agent's copy equals the projected state of the API server.
pub(crate) async fn converge(client: &kube::Client, agents: &[Agent]) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let want = expected_state(client).await;
        let mismatched: Vec<usize> = (0..agents.len())
            .filter(|i| agents[*i].snapshot() != want)
            .collect();
        if mismatched.is_empty() {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            let got = agents[mismatched[0]].snapshot();
            let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
            let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
            let differ: Vec<_> = want
                .iter()
                .filter(|(k, v)| got.get(*k).is_some_and(|g| g != *v))
                .collect();
            panic!(
                "agents {mismatched:?} differ: missing {missing:?}, extra {extra:?}, differ {differ:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The value of an unlabelled counter in the Prometheus text, or 0.
pub(crate) fn counter(name: &str) -> f64 {
    let text = cattail_server::admin::metrics_handle().render();
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

//! The agent's core: three cattail-client watchers (pods of every node, namespaces, network
//! policies) feed kube-runtime stores, and every change recomputes the node's [`NodeState`].
//!
//! The same code runs on a cattail client and on a direct one; only how the `Client` was built
//! differs. Recomputing from the stores, not from single events, keeps the state exactly
//! the function of what the stores hold: a burst of events costs one recompute, and a relist
//! needs no special case. A watcher that stops for good (bad endpoints, TLS or node name) ends
//! [`run`] with an error; transient errors are logged and the watchers retry on their own.
//!
//! Cost: a recompute is O(pods x peers of the node's policies); Felix indexes selectors to
//! touch only what a change affects. That is the first thing to change for large clusters.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use cattail_client::reflector::{self, EventStreamExt, Store};
use cattail_client::{Client, Event, Subscription, watcher};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::ipsets::{Endpoint, NamespaceLabels, NodeState, compute};
use crate::policy::compile;

/// A `Result` whose error is the agent's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A watcher ended: its configuration cannot work.
    #[error(
        "the {resource} watcher stopped ({last_error}); check the endpoints, TLS files and node name"
    )]
    WatcherStopped {
        /// `pods`, `namespaces` or `networkpolicies`.
        resource: &'static str,
        /// Its last error.
        last_error: String,
    },

    /// A watcher task panicked: a bug in this agent or a library.
    #[error("a watcher task failed: {0}")]
    WatcherPanicked(String),

    /// The node name is empty.
    #[error("the node name is empty; set --node-name (usually from spec.nodeName)")]
    NoNodeName,
}

/// Runs the agent for `node` until `shutdown`, publishing every new state on `state`. The
/// first state is published once all three stores hold their initial lists.
///
/// # Errors
/// [`Error::WatcherStopped`] when a watcher gives up for good, [`Error::NoNodeName`], and
/// [`Error::WatcherPanicked`].
pub async fn run(
    client: Client,
    node: &str,
    state: watch::Sender<Arc<NodeState>>,
    shutdown: CancellationToken,
) -> Result<()> {
    if node.is_empty() {
        return Err(Error::NoNodeName);
    }
    let changed = Arc::new(Notify::new());
    let (pods, pods_writer) = reflector::store::<Pod>();
    let (namespaces, namespaces_writer) = reflector::store::<Namespace>();
    let (policies, policies_writer) = reflector::store::<NetworkPolicy>();
    // Dropping the set (on return) aborts the watchers.
    let mut watchers = JoinSet::new();
    // Pods of every node, not only this one's: the peers' IPs are anywhere.
    let streams = [
        follow::<Pod>(&client, pods_writer),
        follow::<Namespace>(&client, namespaces_writer),
        follow::<NetworkPolicy>(&client, policies_writer),
    ];
    for (resource, events) in streams {
        let span = tracing::info_span!("watch", resource);
        watchers.spawn(drain(resource, events, Arc::clone(&changed)).instrument(span));
    }
    let ready = async {
        // Only fails if a writer is dropped, which the watchers' end reports better.
        let _ = futures::join!(
            pods.wait_until_ready(),
            namespaces.wait_until_ready(),
            policies.wait_until_ready()
        );
    };
    tokio::select! {
        () = ready => {}
        () = shutdown.cancelled() => return Ok(()),
        Some(stopped) = watchers.join_next() => return Err(stopped_error(stopped)),
    }
    loop {
        let next = snapshot(node, &pods, &namespaces, &policies);
        state.send_if_modified(|current| {
            let modified = **current != next;
            if modified {
                *current = Arc::new(next);
            }
            modified
        });
        tokio::select! {
            () = changed.notified() => {}
            () = shutdown.cancelled() => return Ok(()),
            Some(stopped) = watchers.join_next() => return Err(stopped_error(stopped)),
        }
    }
}

type Events = std::pin::Pin<Box<dyn Stream<Item = Result<(), String>> + Send>>;

/// A watcher of `K` (all objects, any node) feeding `writer`, as a stream of "something
/// happened" or an error.
fn follow<K>(client: &Client, writer: reflector::Writer<K>) -> (&'static str, Events)
where
    K: kube::Resource<DynamicType = ()>
        + serde::de::DeserializeOwned
        + Clone
        + Debug
        + Send
        + Sync
        + 'static,
{
    let resource = match K::plural(&()) {
        std::borrow::Cow::Borrowed(plural) => plural,
        std::borrow::Cow::Owned(_) => "objects",
    };
    let events = watcher::<K>(client.clone(), Subscription::default())
        .reflect(writer)
        .map(|item: Result<Event<K>, _>| item.map(drop).map_err(|error| error.to_string()))
        .boxed();
    (resource, events)
}

/// Wakes the computation after every event; returns when the stream ends, which it only
/// does when it cannot work.
async fn drain(resource: &'static str, mut events: Events, changed: Arc<Notify>) -> Error {
    let mut last_error = "the stream ended".to_owned();
    while let Some(item) = events.next().await {
        match item {
            Ok(()) => changed.notify_one(),
            Err(error) => {
                tracing::warn!(%error, "watch error; retrying");
                last_error = error;
            }
        }
    }
    Error::WatcherStopped {
        resource,
        last_error,
    }
}

fn stopped_error(joined: std::result::Result<Error, tokio::task::JoinError>) -> Error {
    joined.unwrap_or_else(|error| Error::WatcherPanicked(error.to_string()))
}

/// The state of what the stores hold now.
fn snapshot(
    node: &str,
    pods: &Store<Pod>,
    namespaces: &Store<Namespace>,
    policies: &Store<NetworkPolicy>,
) -> NodeState {
    let endpoints: Vec<Endpoint> = pods
        .state()
        .iter()
        .filter_map(|pod| Endpoint::from_pod(pod))
        .collect();
    let labels: NamespaceLabels = namespaces
        .state()
        .iter()
        .filter_map(|ns| {
            let name = ns.metadata.name.clone()?;
            Some((name, ns.metadata.labels.clone().unwrap_or_default()))
        })
        .collect();
    let mut compiled = Vec::new();
    let mut errors = BTreeMap::new();
    for policy in policies.state() {
        match compile(&policy) {
            Ok(policy) => compiled.push(policy),
            Err(error) => {
                let key = format!(
                    "{}/{}",
                    policy.metadata.namespace.as_deref().unwrap_or_default(),
                    policy.metadata.name.as_deref().unwrap_or_default()
                );
                errors.insert(key, error.to_string());
            }
        }
    }
    compute(node, &endpoints, &labels, &compiled, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_client_that_cannot_work_stops_the_agent_with_a_hint() {
        let (state, states) = watch::channel(Arc::new(NodeState::default()));
        // An https endpoint without a CA bundle is refused before anything connects.
        let client = Client::new(["https://127.0.0.1:1"]).node_name("n");
        let error = run(client, "n", state, CancellationToken::new())
            .await
            .unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, Error::WatcherStopped { .. }), "{text}");
        assert!(text.contains("--tls-ca-file"), "{text}");
        assert!(text.contains("check the endpoints"), "{text}");
        assert_eq!(*states.borrow(), Arc::new(NodeState::default()));
    }

    #[tokio::test]
    async fn an_empty_node_name_is_refused() {
        let (state, _states) = watch::channel(Arc::new(NodeState::default()));
        let error = run(
            Client::new(["http://127.0.0.1:1"]),
            "",
            state,
            CancellationToken::new(),
        )
        .await
        .unwrap_err();
        assert!(matches!(error, Error::NoNodeName));
    }

    #[tokio::test]
    async fn shutdown_stops_an_agent_that_is_still_connecting() {
        let (state, _states) = watch::channel(Arc::new(NodeState::default()));
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        // Nothing listens on port 1: the watchers would retry for ever.
        run(Client::new(["http://127.0.0.1:1"]), "n", state, shutdown)
            .await
            .unwrap();
    }
}

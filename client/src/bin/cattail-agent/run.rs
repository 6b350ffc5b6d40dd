//! `cattail-agent run`: stay connected, count events, and serve Prometheus metrics.
//!
//! Metrics come from the library (`cattail_client_*`: events, reconnects, frame lag, bytes,
//! complete revision) plus this command's `cattail_agent_objects` per resource. Counts are
//! logged every `--log-interval`. SIGINT or SIGTERM stops the agent cleanly.

use std::collections::{BTreeMap, HashSet};

use anyhow::Context;
use cattail_client::{Event, SubscriptionEvent};
use futures::StreamExt;
use metrics_exporter_prometheus::PrometheusBuilder;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::args::RunArgs;

/// Per resource: the keys held now, and the events seen since the last log line.
#[derive(Debug, Default)]
pub(crate) struct EventCounts {
    resources: BTreeMap<String, ResourceCounts>,
}

#[derive(Debug, Default)]
struct ResourceCounts {
    keys: HashSet<(String, String)>,
    applied: u64,
    deleted: u64,
}

impl EventCounts {
    pub(crate) fn apply(&mut self, tagged: &SubscriptionEvent) {
        let counts = self
            .resources
            .entry(tagged.resource.to_string())
            .or_default();
        match &tagged.event {
            Event::Init => counts.keys.clear(),
            Event::InitApply(object) | Event::Apply(object) => {
                counts.applied += 1;
                counts
                    .keys
                    .insert((object.namespace.clone(), object.name.clone()));
            }
            Event::Delete(object) => {
                counts.deleted += 1;
                counts
                    .keys
                    .remove(&(object.namespace.clone(), object.name.clone()));
            }
            Event::InitDone => {}
        }
        metrics::gauge!("cattail_agent_objects", "resource" => tagged.resource.to_string())
            .set(counts.keys.len() as f64);
    }

    /// Logs one line per resource and starts the next interval's counts from zero.
    fn log_and_reset(&mut self) {
        for (resource, counts) in &mut self.resources {
            tracing::info!(
                resource = %resource,
                objects = counts.keys.len(),
                applied = counts.applied,
                deleted = counts.deleted,
                "events since the last report"
            );
            counts.applied = 0;
            counts.deleted = 0;
        }
    }
}

pub(crate) async fn run(args: RunArgs) -> anyhow::Result<()> {
    let subscriptions = args.stream.subscriptions()?;
    PrometheusBuilder::new()
        .with_http_listener(args.metrics_listen)
        .install()
        .with_context(|| format!("cannot serve metrics on {}", args.metrics_listen))?;
    describe_metrics();
    let client = args.stream.client()?;
    let mut events = client.subscribe(&subscriptions)?;
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()).instrument(tracing::info_span!("signals")));
    tracing::info!(
        servers = ?client.endpoint_list(),
        metrics = %args.metrics_listen,
        "cattail-agent running"
    );
    let mut counts = EventCounts::default();
    let mut report = tokio::time::interval(args.log_interval);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = report.tick() => counts.log_and_reset(),
            item = events.next() => match item {
                Some(Ok(tagged)) => counts.apply(&tagged),
                Some(Err(error)) if error.is_fatal() => return Err(error.into()),
                Some(Err(error)) => tracing::warn!(%error, "stream failed; reconnecting"),
                None => anyhow::bail!("the event stream ended"),
            },
        }
    }
    counts.log_and_reset();
    tracing::info!("cattail-agent stopped");
    Ok(())
}

fn describe_metrics() {
    metrics::describe_counter!(
        "cattail_client_events_total",
        "Events applied to the local cache, by kind (apply includes the initial list)."
    );
    metrics::describe_counter!(
        "cattail_client_reconnects_total",
        "Streams to a cattail server that ended and were retried."
    );
    metrics::describe_histogram!(
        "cattail_client_frame_lag_seconds",
        metrics::Unit::Seconds,
        "Time from the server publishing a delta frame to this agent receiving it."
    );
    metrics::describe_counter!(
        "cattail_client_received_bytes_total",
        metrics::Unit::Bytes,
        "Frame payload bytes received, as sent (compressed)."
    );
    metrics::describe_gauge!(
        "cattail_client_complete_revision",
        "The newest revision this agent holds completely."
    );
    metrics::describe_gauge!("cattail_agent_objects", "Objects held, per resource.");
}

/// Cancels `shutdown` on SIGINT or SIGTERM.
async fn stop_on_signal(shutdown: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    tracing::info!("signal received; stopping");
    shutdown.cancel();
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use cattail_client::ProjectedObject;

    use super::*;

    fn tagged(event: Event<ProjectedObject>) -> SubscriptionEvent {
        SubscriptionEvent {
            resource: "v1/pods".into(),
            event,
        }
    }

    fn pod(name: &str) -> ProjectedObject {
        ProjectedObject {
            namespace: "default".into(),
            name: name.into(),
            value: Bytes::from_static(b"{}"),
            resource_version: String::new(),
        }
    }

    #[test]
    fn counts_follow_applies_and_deletes() {
        let mut counts = EventCounts::default();
        for event in [
            Event::Init,
            Event::InitApply(pod("a")),
            Event::InitApply(pod("b")),
            Event::InitDone,
            Event::Apply(pod("a")),
            Event::Delete(pod("b")),
        ] {
            counts.apply(&tagged(event));
        }
        let pods = &counts.resources["v1/pods"];
        assert_eq!((pods.keys.len(), pods.applied, pods.deleted), (1, 3, 1));
        counts.log_and_reset();
        let pods = &counts.resources["v1/pods"];
        assert_eq!((pods.keys.len(), pods.applied, pods.deleted), (1, 0, 0));
    }
}

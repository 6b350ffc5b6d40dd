//! One kube-runtime watcher per configured resource, projected, feeding the writer.
//!
//! Each resource is resolved through API discovery (CRDs included), then watched with
//! kube-runtime's `watcher` and its default backoff; there is never a per-agent request to
//! the API server. Every event is projected here, off the writer's task, and sent on a bounded
//! channel, so a slow writer slows the watch (backpressure) instead of growing memory.
//!
//! An object the projection refuses (a scope field that is not a string, an object over the
//! size limit) is never served stale: an update of it reaches agents as a delete of its key
//! (`failures`), counted and logged once per object. An object the resource's `exclude:` rules
//! match is absent in the same way: a create never reaches agents, and an object that starts to
//! match reaches them as a delete (one that stops matching, as a create).
//!
//! A watch that fails keeps retrying with backoff; the last state stays served meanwhile.
//! A relist arrives as `Init`, `InitApply`..., `InitDone`, which the store diffs against what
//! it holds, so a relist after 410 Gone publishes only real changes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, DynamicObject};
use kube::core::GroupVersion;
use kube::discovery::{ApiCapabilities, ApiResource, Scope};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{Resource, ResourceConfig, WatchSettings};
use crate::k8s::project::{self, Projection};
use crate::store::{ObjectKey, ProjectedObject};

mod failures;

use failures::ProjectionFailures;

/// Why a resource cannot be watched.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Discovery of the resource's group and version failed.
    #[error("discovering {resource}: {source}; check that the API server serves it")]
    Discovery {
        /// The resource.
        resource: Resource,
        /// The cause.
        source: kube::Error,
    },
    /// The group/version is served, but without this plural.
    #[error("the API server does not serve {0}; check the resource name in the config")]
    NotServed(Resource),
    /// The API server does not allow list and watch on it.
    #[error("{0} cannot be listed and watched (its verbs lack list or watch)")]
    NotWatchable(Resource),
    /// The projection could not be built for the discovered kind.
    #[error(transparent)]
    Projection(#[from] project::Error),
}

/// This module's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a watcher tells the writer.
#[derive(Debug)]
pub enum WatchEvent {
    /// A (re)list begins.
    Init,
    /// An object of the (re)list.
    InitApply(ProjectedObject),
    /// The (re)list is complete.
    InitDone,
    /// An object was created or changed.
    Apply(ProjectedObject),
    /// An object was deleted, or can no longer be projected.
    Delete(ObjectKey),
}

/// A [`WatchEvent`] of one resource.
#[derive(Debug)]
pub struct WatchInput {
    /// Which resource.
    pub resource: Resource,
    /// What happened.
    pub event: WatchEvent,
}

/// How the watchers list.
#[derive(Clone, Debug)]
pub struct WatchConfig {
    /// Use streaming lists (`sendInitialEvents`), which the API server serves from its watch
    /// cache without building one big list response. On by default (Kubernetes 1.34 and later).
    pub streaming_lists: bool,
    /// Page size of a paginated list (when streaming lists are off).
    pub page_size: u32,
    /// How long to wait before retrying discovery that failed.
    pub discovery_retry: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self::from_settings(&WatchSettings::default(), true)
    }
}

impl WatchConfig {
    /// The config file's `watch:` section, with streaming lists on or off.
    pub fn from_settings(settings: &WatchSettings, streaming_lists: bool) -> Self {
        WatchConfig {
            streaming_lists,
            page_size: settings.page_size,
            discovery_retry: settings.discovery_retry,
        }
    }

    /// Checks every field, naming the first bad one and its allowed range.
    ///
    /// # Errors
    /// A message for the operator, like `page_size: 0 is out of range: use 1 to 10000`.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !(1..=10_000).contains(&self.page_size) {
            return Err(format!(
                "page_size: {} is out of range: use 1 to 10000",
                self.page_size
            ));
        }
        if self.discovery_retry.is_zero() {
            return Err("discovery_retry: must be greater than 0".to_owned());
        }
        Ok(())
    }
}

/// A resource resolved through discovery, ready to watch.
#[derive(Clone, Debug)]
pub struct ResolvedResource {
    /// The configured resource.
    pub resource: Resource,
    /// What discovery said about it.
    pub api: ApiResource,
    /// Whether it is namespaced.
    pub namespaced: bool,
}

/// Resolves `group/version/plural` through discovery.
pub async fn resolve(client: &kube::Client, resource: &Resource) -> Result<ResolvedResource> {
    let gv = GroupVersion::gv(resource.group(), resource.version());
    let group = kube::discovery::oneshot::pinned_group(client, &gv)
        .await
        .map_err(|source| Error::Discovery {
            resource: resource.clone(),
            source,
        })?;
    let (api, caps): (ApiResource, ApiCapabilities) = group
        .versioned_resources(resource.version())
        .into_iter()
        .find(|(api, _)| api.plural == resource.plural())
        .ok_or_else(|| Error::NotServed(resource.clone()))?;
    if !(caps.supports_operation("list") && caps.supports_operation("watch")) {
        return Err(Error::NotWatchable(resource.clone()));
    }
    Ok(ResolvedResource {
        resource: resource.clone(),
        namespaced: matches!(caps.scope, Scope::Namespaced),
        api,
    })
}

/// The health of one resource's watch, for metrics and readiness.
#[derive(Debug, Default)]
pub struct WatchHealth {
    connected: AtomicBool,
}

impl WatchHealth {
    /// Records whether the last watch event of `resource` was a success.
    fn set(&self, resource: &str, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
        metrics::gauge!("cattail_watch_connected", "resource" => resource.to_owned())
            .set(if connected { 1.0 } else { 0.0 });
    }

    /// Whether the last watch event was a success.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}

/// Watches one resource until `shutdown`, sending projected events to `tx`.
///
/// Discovery is retried until it succeeds (a CRD may be installed after the server starts).
/// Returns when the token is cancelled or the writer has gone away.
pub async fn run(
    client: kube::Client,
    config: ResourceConfig,
    watch: WatchConfig,
    max_object_bytes: usize,
    tx: mpsc::Sender<WatchInput>,
    health: Arc<WatchHealth>,
    shutdown: CancellationToken,
) {
    let resource = config.resource.clone();
    let label = resource.to_string();
    let resolved = loop {
        let attempt = async {
            let resolved = resolve(&client, &resource).await?;
            let projection = Projection::new(&config, &resolved.api.kind)?
                .with_max_object_bytes(max_object_bytes);
            Ok::<_, Error>((resolved, projection))
        };
        match attempt.await {
            Ok(found) => break found,
            Err(error) => {
                tracing::error!(resource = %label, %error, "cannot watch resource yet; retrying");
                metrics::counter!("cattail_watch_errors_total", "resource" => label.clone())
                    .increment(1);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(watch.discovery_retry) => {}
                }
            }
        }
    };
    let (resolved, projection) = resolved;
    tracing::info!(resource = %label, kind = %resolved.api.kind, "watching");

    let api: Api<DynamicObject> = Api::all_with(client, &resolved.api);
    let mut cfg = watcher::Config::default().page_size(watch.page_size);
    if watch.streaming_lists {
        cfg = cfg.streaming_lists();
    }
    let mut events = watcher::watcher(api, cfg).default_backoff().boxed();
    let mut failures = ProjectionFailures::new(label.clone(), failures::MAX_REMEMBERED);
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => return,
            next = events.try_next() => next,
        };
        let event = match next {
            Ok(Some(event)) => {
                health.set(&label, true);
                event
            }
            Ok(None) => return,
            Err(error) => {
                health.set(&label, false);
                tracing::warn!(resource = %label, %error, "watch failed; retrying with backoff");
                metrics::counter!("cattail_watch_errors_total", "resource" => label.clone())
                    .increment(1);
                continue;
            }
        };
        match &event {
            Event::Init => {
                metrics::counter!("cattail_relists_total", "resource" => label.clone())
                    .increment(1);
            }
            Event::InitApply(_) | Event::Apply(_) | Event::Delete(_) => {
                metrics::counter!("cattail_updates_received_total", "resource" => label.clone())
                    .increment(1);
            }
            Event::InitDone => {}
        }
        let Some(event) = translate(&projection, &mut failures, event) else {
            continue;
        };
        let input = WatchInput {
            resource: resource.clone(),
            event,
        };
        if tx.send(input).await.is_err() {
            return;
        }
    }
}

/// List items and watch events of objects an `exclude:` rule leaves out, by resource.
pub const EXCLUDED: &str = "cattail_updates_excluded_total";

/// Projects one watcher event.
///
/// An object that cannot be projected is never served stale: an update becomes a delete of
/// its key, and a relist leaves it out (so the relist's diff deletes it). `failures` counts
/// every such event and logs each object once. An object an `exclude:` rule matches is absent
/// the same way, counted in [`EXCLUDED`] and never logged: it is what the config asks for.
fn translate(
    projection: &Projection,
    failures: &mut ProjectionFailures,
    event: Event<DynamicObject>,
) -> Option<WatchEvent> {
    let key_of = |object: &DynamicObject| {
        ObjectKey::new(
            object.metadata.namespace.clone().unwrap_or_default(),
            object.metadata.name.clone().unwrap_or_default(),
        )
    };
    let mut project = |object: DynamicObject| -> std::result::Result<ProjectedObject, ObjectKey> {
        let key = key_of(&object);
        let value = match serde_json::to_value(&object) {
            Ok(value) => value,
            Err(error) => {
                failures.failed(&key, &error);
                return Err(key);
            }
        };
        if projection.excluded_by(&value).is_some() {
            // Not a failure: the config leaves it out. Absent for agents, like a delete.
            failures.forget(&key);
            metrics::counter!(EXCLUDED, "resource" => projection.resource().to_string())
                .increment(1);
            return Err(key);
        }
        match projection.project(&value) {
            Ok(projected) => {
                failures.forget(&key);
                Ok(projected)
            }
            Err(error) => {
                failures.failed(&key, &error);
                Err(key)
            }
        }
    };
    Some(match event {
        Event::Init => WatchEvent::Init,
        // Left out of the relist, so the relist's diff removes any version agents hold.
        Event::InitApply(object) => WatchEvent::InitApply(project(object).ok()?),
        Event::InitDone => WatchEvent::InitDone,
        Event::Apply(object) => match project(object) {
            Ok(projected) => WatchEvent::Apply(projected),
            Err(key) => WatchEvent::Delete(key),
        },
        Event::Delete(object) => {
            let key = key_of(&object);
            failures.forget(&key);
            WatchEvent::Delete(key)
        }
    })
}

#[cfg(test)]
mod tests;

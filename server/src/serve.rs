//! `serve`: the whole server in one function, wired from its parts.
//!
//! One watcher task per resource feeds the single writer over a bounded channel; the writer
//! publishes to the fan-out hub; the gRPC and admin endpoints serve until the root token is
//! cancelled. Critical tasks are supervised: if a watcher, the writer or an endpoint stops
//! while the server is meant to run, everything is cancelled and `serve` returns the error,
//! so the process exits and is restarted instead of serving stale data silently.
//! Cancelling the drain token ([`ServeOptions::drain`], SIGTERM) sheds the agents over
//! `fanout.drain_period` first, then cancels the root token.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::admin::{self, StatusSource, SyncStatus};
use crate::auth::Authenticator;
use crate::config::ServerConfig;
use crate::fanout::{FanoutConfig, Hub, LogLimits, ResourceInfo};
use crate::grpc::{self, GrpcConfig};
use crate::k8s::project;
use crate::k8s::watch::{self, WatchConfig, WatchHealth};
use crate::replicas::{self, ReplicaSettings};
use crate::store::Store;
use crate::writer::Writer;

/// Everything `serve` needs besides the client and the sockets.
#[derive(Clone, Debug, Default)]
pub struct ServeOptions {
    /// Resources, projections and store limits.
    pub config: ServerConfig,
    /// How the watchers list and watch.
    pub watch: WatchConfig,
    /// Fan-out settings.
    pub fanout: FanoutConfig,
    /// gRPC settings.
    pub grpc: GrpcConfig,
    /// Cancel it to drain: the replica turns not ready, refuses new agents, sheds the
    /// connected ones over `fanout.drain_period` and then shuts down (cancels `shutdown`).
    pub drain: CancellationToken,
    /// Where the other replicas are, for the hint that sends agents to them; `None` sends no
    /// replica (agents use their own list).
    pub replicas: Option<ReplicaSettings>,
}

impl ServeOptions {
    /// The options of a config file: its resources and store, and its `fanout:`, `grpc:` and
    /// `watch:` sections, each checked with the rules that span fields. Flags (`--server-id`,
    /// `--grpc-transport`, `--streaming-lists`) are set on the result.
    ///
    /// # Errors
    /// The first bad setting, named by its path in the file (like `fanout.digest_buckets`)
    /// with its allowed range.
    pub fn from_config(config: ServerConfig) -> Result<Self, crate::config::Error> {
        let fanout = FanoutConfig::from_settings(
            &config.fanout,
            FanoutConfig::default().server_id,
            LogLimits::from(&config.store),
        );
        let grpc = GrpcConfig::from_settings(&config.grpc, grpc::Transport::default());
        let watch = WatchConfig::from_settings(&config.watch, true);
        for (section, checked) in [
            ("fanout", fanout.validate()),
            ("grpc", grpc.validate()),
            ("watch", watch.validate()),
        ] {
            if let Err(message) = checked {
                let (field, reason) = message.split_once(": ").unwrap_or(("", &message));
                return Err(crate::config::Error::Invalid {
                    field: format!("{section}.{field}"),
                    reason: reason.to_owned(),
                });
            }
        }
        Ok(Self {
            config,
            watch,
            fanout,
            grpc,
            drain: CancellationToken::new(),
            replicas: None,
        })
    }
}

/// Why the server stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A critical task ended while the server was meant to run.
    #[error("{0} stopped unexpectedly; shutting down")]
    TaskStopped(String),
    /// The gRPC endpoint failed.
    #[error(transparent)]
    Grpc(#[from] grpc::Error),
    /// The admin endpoint failed.
    #[error(transparent)]
    Admin(#[from] admin::Error),
}

/// This module's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A running server's shared parts, for tests and the status page.
#[derive(Clone)]
pub struct ServerHandle {
    /// The fan-out hub.
    pub hub: Hub,
    /// Whether every resource has completed its first list: the hub's own flag.
    pub sync: SyncStatus,
}

/// What the hub announces of each configured resource: its fingerprint and scope field.
pub fn resource_infos(config: &ServerConfig) -> Vec<ResourceInfo> {
    config
        .resources
        .iter()
        .map(|r| ResourceInfo {
            resource: r.resource.clone(),
            fingerprint: project::fingerprint(r),
            scope_field: r.scope.as_ref().map(|s| s.as_str().to_owned()),
        })
        .collect()
}

/// Runs the server until `shutdown` is cancelled, or until a critical task fails.
///
/// `ready` receives the handle once everything is started (tests use it).
pub async fn serve(
    options: ServeOptions,
    client: kube::Client,
    grpc_listener: TcpListener,
    admin_listener: Option<TcpListener>,
    metrics: PrometheusHandle,
    shutdown: CancellationToken,
    ready: Option<tokio::sync::oneshot::Sender<ServerHandle>>,
) -> Result<()> {
    let config = &options.config;
    let resources: Vec<_> = config
        .resources
        .iter()
        .map(|r| r.resource.clone())
        .collect();
    let store = Store::new(resources.clone());
    let infos = resource_infos(config);
    tracing::info!(epoch = %store.epoch(), resources = resources.len(), "starting");
    let fanout = FanoutConfig {
        log: LogLimits::from(&config.store),
        ..options.fanout.clone()
    };
    let mut hub = Hub::new(fanout, store.snapshot(), infos);
    match Authenticator::new(&config.auth, client.clone()) {
        Some(authenticator) => hub = hub.with_admission(Arc::new(authenticator)),
        None => tracing::warn!("agents are not authenticated: the config has no auth section"),
    }
    let sync = hub.sync_status();
    let handle = ServerHandle {
        hub: hub.clone(),
        sync: sync.clone(),
    };

    let mut tasks = JoinSet::new();
    let (tx, rx) = mpsc::channel(4096);
    let mut health = Vec::new();
    for resource in &config.resources {
        let watch_health = Arc::new(WatchHealth::default());
        health.push((resource.resource.to_string(), watch_health.clone()));
        let span = tracing::info_span!("watch", resource = %resource.resource);
        let task = watch::run(
            client.clone(),
            resource.clone(),
            options.watch.clone(),
            config.projection.max_object_bytes,
            tx.clone(),
            watch_health,
            shutdown.clone(),
        );
        let name = format!("watcher for {}", resource.resource);
        tasks.spawn(async move {
            task.instrument(span).await;
            Ok::<_, Error>(name)
        });
    }
    drop(tx);

    let writer = Writer::new(store, hub.clone(), config.store.batch_max_changes);
    let token = shutdown.clone();
    tasks.spawn(
        async move {
            writer.run(rx, token).await;
            Ok("writer".to_owned())
        }
        .instrument(tracing::info_span!("writer")),
    );

    let grpc_hub = hub.clone();
    let grpc_config = options.grpc.clone();
    let token = shutdown.clone();
    tasks.spawn(
        async move {
            grpc::serve(grpc_listener, grpc_hub, grpc_config, token).await?;
            Ok("gRPC endpoint".to_owned())
        }
        .instrument(tracing::info_span!("grpc")),
    );

    if let Some(listener) = admin_listener {
        let status = StatusSource::new(hub.clone(), health);
        let token = shutdown.clone();
        let admin_sync = sync.clone();
        tasks.spawn(
            async move {
                admin::serve(listener, admin_sync, metrics, status, token).await?;
                Ok("admin endpoint".to_owned())
            }
            .instrument(tracing::info_span!("admin")),
        );
    }

    if let Some(settings) = options.replicas.clone() {
        let task = replicas::run(client.clone(), settings, hub.clone(), shutdown.clone());
        // Not critical: without it, drained agents fall back on their own endpoint lists.
        tasks.spawn(
            async move {
                task.await;
                Ok("replicas watch".to_owned())
            }
            .instrument(tracing::info_span!("replicas")),
        );
    }

    let drain = options.drain.clone();
    let token = shutdown.clone();
    let drain_hub = hub.clone();
    let period = options.fanout.drain_period;
    tasks.spawn(
        async move {
            tokio::select! {
                () = drain.cancelled() => {
                    drain_hub.drain(period).await;
                    token.cancel();
                }
                () = token.cancelled() => {}
            }
            Ok("drain".to_owned())
        }
        .instrument(tracing::info_span!("drain")),
    );

    if let Some(ready) = ready {
        let _ = ready.send(handle);
    }

    let mut failure = None;
    while let Some(joined) = tasks.join_next().await {
        if shutdown.is_cancelled() {
            continue;
        }
        let error = match joined {
            Ok(Ok(name)) => Error::TaskStopped(name),
            Ok(Err(error)) => error,
            Err(join) => Error::TaskStopped(format!("a task ({join})")),
        };
        tracing::error!(%error, "critical task stopped");
        failure.get_or_insert(error);
        shutdown.cancel();
    }
    match failure {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

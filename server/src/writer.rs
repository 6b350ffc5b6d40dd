//! The single writer: the only task that changes the [`Store`].
//!
//! It takes whatever the watchers have sent, up to `batch_max_changes`, as one batch: with no
//! fixed delay when idle (latency stays low) and natural batching under load. Each commit that
//! changes something gets the next revision and goes to the [`Hub`], which encodes it once for
//! every agent and exports the head revision. Once every resource has completed its first list,
//! the server is in sync: the hub's flag, which the probes read too.
//! Errors of one event (an unknown resource, an `InitApply` without `Init`) are logged and
//! skipped: they never stop the writer.

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::fanout::Hub;
use crate::k8s::watch::{WatchEvent, WatchInput};
use crate::store::{Batch, BatchCounters, Store};

/// The writer task's state.
pub struct Writer {
    store: Store,
    hub: Hub,
    batch_max_changes: usize,
    /// The store's totals already counted in metrics.
    counted: BatchCounters,
}

impl Writer {
    /// A writer over `store`, publishing to `hub`.
    pub fn new(store: Store, hub: Hub, batch_max_changes: usize) -> Self {
        Writer {
            store,
            hub,
            batch_max_changes: batch_max_changes.max(1),
            counted: BatchCounters::default(),
        }
    }

    /// Runs until `shutdown` or until every watcher has gone away.
    pub async fn run(mut self, mut rx: mpsc::Receiver<WatchInput>, shutdown: CancellationToken) {
        self.update_sync();
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => return,
                input = rx.recv() => match input {
                    Some(input) => input,
                    None => return,
                },
            };
            let mut batch = Batch::new();
            self.handle(first, &mut batch);
            while batch.len() < self.batch_max_changes {
                match rx.try_recv() {
                    Ok(input) => self.handle(input, &mut batch),
                    Err(_) => break,
                }
            }
            self.commit(batch);
        }
    }

    fn handle(&mut self, input: WatchInput, batch: &mut Batch) {
        let resource = &input.resource;
        let result = match input.event {
            WatchEvent::Init => self.store.begin_relist(resource),
            WatchEvent::InitApply(object) => self.store.relist_apply(resource, object),
            WatchEvent::InitDone => self.store.end_relist(resource, batch),
            WatchEvent::Apply(object) => {
                batch.apply(resource, object);
                Ok(())
            }
            WatchEvent::Delete(key) => {
                batch.delete(resource, &key.namespace, &key.name);
                Ok(())
            }
        };
        if let Err(error) = result {
            tracing::error!(%resource, %error, "watch event skipped");
        }
    }

    fn commit(&mut self, batch: Batch) {
        match self.store.commit(batch) {
            Ok(Some(published)) => {
                self.hub.publish(&published, self.store.snapshot());
            }
            Ok(None) => {}
            Err(error) => tracing::error!(%error, "batch dropped"),
        }
        // Counted from the store's running totals, so a batch that changed nothing still
        // counts its duplicates.
        let totals = self.store.counters();
        let last = std::mem::replace(&mut self.counted, totals);
        metrics::counter!("cattail_updates_deduplicated_total")
            .increment(totals.deduplicated.saturating_sub(last.deduplicated));
        metrics::counter!("cattail_updates_collapsed_total")
            .increment(totals.collapsed.saturating_sub(last.collapsed));
        metrics::counter!("cattail_updates_published_total")
            .increment(totals.published.saturating_sub(last.published));
        self.update_sync();
    }

    fn update_sync(&mut self) {
        let in_sync = self.store.all_synced();
        if in_sync != self.hub.in_sync() {
            tracing::info!(
                in_sync,
                revision = self.store.revision().get(),
                "sync status"
            );
            self.hub.set_in_sync(in_sync);
        }
    }
}

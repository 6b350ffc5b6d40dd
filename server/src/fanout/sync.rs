//! [`SyncStatus`]: the one flag that says whether every configured resource has completed its
//! first list (`InSync`).
//!
//! The writer sets it; the hub holds it and makes new agents wait on it; the admin endpoint's
//! `/readyz` and the gRPC health service read it. It also drives the `cattail_in_sync` gauge,
//! so the probes, the metric and the agents can never disagree.

use std::sync::Arc;

use tokio::sync::watch;

/// Whether the server is in sync; cheap to clone, every clone is the same flag.
#[derive(Clone, Debug)]
pub struct SyncStatus(Arc<watch::Sender<bool>>);

impl Default for SyncStatus {
    fn default() -> Self {
        Self(Arc::new(watch::Sender::new(false)))
    }
}

impl SyncStatus {
    /// Marks every resource as listed (or not), and updates `cattail_in_sync`.
    pub fn set(&self, in_sync: bool) {
        self.0.send_replace(in_sync);
        metrics::gauge!("cattail_in_sync").set(if in_sync { 1.0 } else { 0.0 });
    }

    /// Whether every resource has completed its first list.
    pub fn get(&self) -> bool {
        *self.0.borrow()
    }

    /// A receiver that sees every change.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.0.subscribe()
    }

    /// Waits until the flag is set.
    pub async fn wait(&self) {
        let mut in_sync = self.0.subscribe();
        // `self` keeps the sender alive, so this cannot fail.
        let _ = in_sync.wait_for(|in_sync| *in_sync).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_clone_sees_the_same_flag() {
        let status = SyncStatus::default();
        let reader = status.clone();
        let changes = reader.subscribe();
        assert!(!reader.get());
        let waiting = tokio::spawn({
            let reader = reader.clone();
            async move { reader.wait().await }
        });
        status.set(true);
        assert!(reader.get());
        assert!(changes.has_changed().unwrap());
        tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
            .await
            .expect("the waiter woke")
            .unwrap();
    }
}

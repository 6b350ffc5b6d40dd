//! [`BlockingPool`]: CPU-heavy fan-out work (large snapshot encodes, digest resyncs) on tokio's
//! blocking pool, at most one job per core at a time.
//!
//! A connect storm must not start a thread per agent: each costs a stack and, with glibc, can
//! add a malloc arena. Jobs beyond the permits wait their turn; a permit is held until the job
//! is done, even if the task that asked for it has stopped waiting.

use std::sync::Arc;

use tokio::sync::Semaphore;

use super::{Error, Result};

/// Permits for the blocking pool; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct BlockingPool {
    permits: Arc<Semaphore>,
}

impl BlockingPool {
    /// A pool that runs one job per available core.
    pub(crate) fn per_core() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        Self {
            permits: Arc::new(Semaphore::new(cores)),
        }
    }

    /// Runs `work` on the blocking pool once a permit is free.
    ///
    /// # Errors
    /// `work`'s error, or [`Error::Task`] if the job panicked.
    pub(crate) async fn run<R: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|e| Error::Task(e.to_string()))?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))?
    }
}

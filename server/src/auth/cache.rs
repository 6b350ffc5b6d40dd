//! [`ReviewCache`]: answers kept for a bounded time and count, keyed by a hash of the token
//! (never the token), with one review in flight per key (single-flight).
//!
//! A lookup returns a kept answer, joins the review in flight for the same key, or starts one.
//! The review runs as a task of its own, so an agent that goes away does not cancel it for the
//! others waiting. Errors are handed to every waiter but never kept. Answers beyond
//! `max_entries` push out those that expire first; reviews in flight are not counted (they are
//! bounded by the streams waiting for them).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tracing::Instrument;

/// A cache key: the SHA-256 of the token.
pub(crate) type Key = [u8; 32];

/// The key of `token`.
pub(crate) fn key(token: &str) -> Key {
    Sha256::digest(token.as_bytes()).into()
}

/// A review's outcome: an answer, or why there is none (never kept).
pub(crate) type Outcome<V> = Result<V, String>;

/// Where an answer came from, for `cattail_token_reviews_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// This lookup started the review.
    Reviewed,
    /// A kept answer.
    Cached,
    /// The review another lookup started.
    Shared,
}

type Pending<V> = Shared<BoxFuture<'static, Outcome<V>>>;

struct Kept<V> {
    value: V,
    expires: Instant,
}

struct State<V> {
    kept: HashMap<Key, Kept<V>>,
    pending: HashMap<Key, Pending<V>>,
}

/// Answers by key, bounded in time and count, with one review per key at a time.
pub(crate) struct ReviewCache<V> {
    state: Mutex<State<V>>,
    max_entries: usize,
}

impl<V> std::fmt::Debug for ReviewCache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReviewCache")
            .field("max_entries", &self.max_entries)
            .finish_non_exhaustive()
    }
}

impl<V: Clone + Send + Sync + 'static> ReviewCache<V> {
    /// An empty cache keeping at most `max_entries` answers.
    pub(crate) fn new(max_entries: usize) -> Self {
        Self {
            state: Mutex::new(State {
                kept: HashMap::new(),
                pending: HashMap::new(),
            }),
            max_entries: max_entries.max(1),
        }
    }

    /// The answer for `key`: kept, joined, or from `review`, which returns the outcome and how
    /// long to keep it (`None` or zero: not at all).
    pub(crate) async fn get<F, Fut>(self: &Arc<Self>, key: Key, review: F) -> (Outcome<V>, Source)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = (Outcome<V>, Option<Duration>)> + Send + 'static,
    {
        let (pending, source) = {
            let mut state = self.lock();
            let now = Instant::now();
            match state.kept.get(&key) {
                Some(kept) if kept.expires > now => {
                    return (Ok(kept.value.clone()), Source::Cached);
                }
                Some(_) => {
                    state.kept.remove(&key);
                }
                None => {}
            }
            if let Some(pending) = state.pending.get(&key) {
                (pending.clone(), Source::Shared)
            } else {
                let cache = Arc::clone(self);
                let work = review();
                let task = tokio::spawn(
                    async move {
                        let (outcome, keep) = work.await;
                        cache.finish(key, &outcome, keep);
                        outcome
                    }
                    .instrument(tracing::info_span!("token_review")),
                );
                let pending = async move {
                    task.await
                        .unwrap_or_else(|e| Err(format!("the TokenReview task failed: {e}")))
                }
                .boxed()
                .shared();
                state.pending.insert(key, pending.clone());
                (pending, Source::Reviewed)
            }
        };
        (pending.await, source)
    }

    /// How many answers are kept (tests and the status page).
    pub(crate) fn len(&self) -> usize {
        self.lock().kept.len()
    }

    fn finish(&self, key: Key, outcome: &Outcome<V>, keep: Option<Duration>) {
        let mut state = self.lock();
        state.pending.remove(&key);
        let (Ok(value), Some(keep)) = (outcome, keep) else {
            return;
        };
        if keep.is_zero() {
            return;
        }
        let now = Instant::now();
        if state.kept.len() >= self.max_entries {
            state.kept.retain(|_, kept| kept.expires > now);
        }
        if state.kept.len() >= self.max_entries {
            let first = state
                .kept
                .iter()
                .min_by_key(|(_, kept)| kept.expires)
                .map(|(key, _)| *key);
            if let Some(first) = first {
                state.kept.remove(&first);
            }
        }
        state.kept.insert(
            key,
            Kept {
                value: value.clone(),
                expires: now + keep,
            },
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<V>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

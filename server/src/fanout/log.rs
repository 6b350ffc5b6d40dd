//! `Log`: a bounded ring of published batches, so a lagging reader can catch up with deltas.
//!
//! The fan-out owns it: the hub appends each encoded batch, senders read it. It is generic
//! over its entries (encoded batches in the hub, plain bytes or store batches in tests) and
//! bounded three ways: total bytes, number of batches and age. The newest batch is always kept,
//! so a reader one behind the head never needs a resync. `since` answers `None` once a revision
//! has fallen off, and the caller then resyncs that reader (digest diff or snapshot).

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::config::StoreConfig;

use crate::store::{Published, Revision};

/// A batch offered to the log does not follow its head: a bug in the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("log expected revision {expected} next but got {got}")]
pub struct LogGap {
    /// The revision after the log's head.
    pub expected: Revision,
    /// The revision offered.
    pub got: Revision,
}

/// Something the log can hold and weigh.
pub trait LogEntry {
    /// The bytes this entry keeps alive, counted against [`LogLimits::max_bytes`].
    fn size_bytes(&self) -> usize;
}

impl LogEntry for Published {
    fn size_bytes(&self) -> usize {
        Published::size_bytes(self)
    }
}

impl LogEntry for Bytes {
    fn size_bytes(&self) -> usize {
        self.len()
    }
}

impl LogEntry for Vec<Bytes> {
    fn size_bytes(&self) -> usize {
        self.iter().map(Bytes::len).sum()
    }
}

impl<T: LogEntry + ?Sized> LogEntry for Arc<T> {
    fn size_bytes(&self) -> usize {
        (**self).size_bytes()
    }
}

/// The bounds of a [`Log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// Total entry bytes kept (the newest entry is kept even if it alone is larger).
    pub max_bytes: u64,
    /// Entries kept.
    pub max_entries: usize,
    /// Entries older than this are dropped (except the newest).
    pub max_age: Duration,
}

impl Default for LogLimits {
    fn default() -> Self {
        Self::from(&StoreConfig::default())
    }
}

impl From<&StoreConfig> for LogLimits {
    fn from(config: &StoreConfig) -> Self {
        Self {
            max_bytes: config.log_max_bytes,
            max_entries: config.log_max_batches,
            max_age: config.log_max_age,
        }
    }
}

/// One batch in the log.
#[derive(Debug, Clone)]
pub struct LogItem<T> {
    /// The revision the batch created.
    pub revision: Revision,
    /// When it was appended.
    pub appended: Instant,
    /// The payload.
    pub entry: T,
    /// `entry.size_bytes()` when it was appended.
    pub size: usize,
}

/// A bounded ring of consecutive revisions.
///
/// Invariant: the items hold consecutive revisions ending at `head` (or none), and `bytes` is the
/// sum of their sizes.
#[derive(Debug, Clone)]
pub struct Log<T> {
    items: VecDeque<LogItem<T>>,
    head: Revision,
    bytes: u64,
    limits: LogLimits,
}

impl<T: LogEntry> Log<T> {
    /// An empty log whose head is `head` (the store's revision when the log starts).
    pub fn new(limits: LogLimits, head: Revision) -> Self {
        Self {
            items: VecDeque::new(),
            head,
            bytes: 0,
            limits,
        }
    }

    /// Appends the batch of `revision`, which must be the one after the head, then evicts what
    /// the limits no longer allow. Returns how many old batches were evicted.
    pub fn push(&mut self, revision: Revision, entry: T, now: Instant) -> Result<usize, LogGap> {
        let expected = self.head.next();
        if revision != expected {
            return Err(LogGap {
                expected,
                got: revision,
            });
        }
        let size = entry.size_bytes();
        self.items.push_back(LogItem {
            revision,
            appended: now,
            entry,
            size,
        });
        self.bytes += size as u64;
        self.head = revision;
        Ok(self.evict(now))
    }

    /// Drops batches older than the age limit at `now`. Returns how many were dropped.
    pub fn expire(&mut self, now: Instant) -> usize {
        self.evict(now)
    }

    /// The batches after `revision`, oldest first: empty if `revision` is the head, `None` if a
    /// batch after it has been evicted or `revision` is ahead of the head.
    pub fn since(
        &self,
        revision: Revision,
    ) -> Option<impl ExactSizeIterator<Item = &LogItem<T>> + DoubleEndedIterator + '_> {
        if revision > self.head {
            return None;
        }
        let start = if revision == self.head {
            self.items.len()
        } else {
            let oldest = self.oldest()?;
            if revision.next() < oldest {
                return None;
            }
            usize::try_from(revision.next().get() - oldest.get()).ok()?
        };
        Some(self.items.range(start..))
    }

    /// The batch of `revision`, if still held.
    pub fn get(&self, revision: Revision) -> Option<&LogItem<T>> {
        let oldest = self.oldest()?;
        if revision < oldest {
            return None;
        }
        self.items
            .get(usize::try_from(revision.get() - oldest.get()).ok()?)
    }

    /// The newest revision appended (or the starting head).
    pub fn head(&self) -> Revision {
        self.head
    }

    /// The oldest revision still held, if any.
    pub fn oldest(&self) -> Option<Revision> {
        self.items.front().map(|i| i.revision)
    }

    /// The number of batches held.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether no batch is held.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The total size of the batches held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The limits.
    pub fn limits(&self) -> LogLimits {
        self.limits
    }

    fn evict(&mut self, now: Instant) -> usize {
        let mut evicted = 0;
        while self.items.len() > 1 {
            let Some(oldest) = self.items.front() else {
                break;
            };
            let too_many = self.items.len() > self.limits.max_entries;
            let too_big = self.bytes > self.limits.max_bytes;
            let too_old = now.saturating_duration_since(oldest.appended) > self.limits.max_age;
            if !(too_many || too_big || too_old) {
                break;
            }
            self.bytes -= oldest.size as u64;
            self.items.pop_front();
            evicted += 1;
        }
        evicted
    }
}

//! [`InboundBudget`]: the bytes the gRPC transports hold for incomplete inbound messages (a
//! Hello part-way in), counted across every connection against one limit.
//!
//! Each stream's reader holds at most one partial message, below the message limit; without a
//! shared bound, many streams each sending most of a large Hello slowly would hold that much
//! each. A reader takes from the budget before it keeps a partial message, and gives back when
//! the message is decoded or the stream goes; a stream whose bytes do not fit is refused with
//! RESOURCE_EXHAUSTED, so window credit is only ever returned for bytes decoded or held within
//! the budget.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::MESSAGE_PREFIX_BYTES;

/// How many incomplete messages at the limit the budget holds at once.
pub(crate) const MESSAGES_AT_LIMIT: usize = 64;

/// A shared count of held bytes, with a limit.
#[derive(Debug)]
pub(crate) struct InboundBudget {
    held: AtomicUsize,
    limit: usize,
}

impl InboundBudget {
    /// The budget for messages of at most `max_message` bytes: [`MESSAGES_AT_LIMIT`] of them,
    /// each with its gRPC length prefix, held at once.
    pub(crate) fn for_messages(max_message: usize) -> Self {
        Self::new(
            max_message
                .saturating_add(MESSAGE_PREFIX_BYTES)
                .saturating_mul(MESSAGES_AT_LIMIT),
        )
    }

    pub(crate) fn new(limit: usize) -> Self {
        Self {
            held: AtomicUsize::new(0),
            limit,
        }
    }

    /// The limit, for messages.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Takes `bytes` from the budget; false (and nothing taken) when they do not fit.
    pub(crate) fn take(&self, bytes: usize) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    /// Gives back `bytes` taken earlier.
    pub(crate) fn give_back(&self, bytes: usize) {
        self.held.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Bytes held now.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_taken_only_within_the_limit_and_given_back() {
        let budget = InboundBudget::new(100);
        assert!(budget.take(60));
        assert!(!budget.take(41), "over the limit");
        assert_eq!(budget.held(), 60);
        assert!(budget.take(40));
        budget.give_back(100);
        assert_eq!(budget.held(), 0);
        assert!(budget.take(100));
        assert!(!budget.take(usize::MAX), "no overflow");
    }
}

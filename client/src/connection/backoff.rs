//! Reconnect delays: exponential backoff with jitter, and the random numbers behind the jitter.
//!
//! [`Backoff`] is configuration; [`BackoffState`] hands out delays. Each delay is drawn from the
//! upper half of the current step ("equal jitter"), so thousands of agents that lost the same
//! server spread their reconnects out instead of arriving together, while each still waits at
//! least half the step.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// How long to wait between reconnect attempts.
#[derive(Clone, Debug, PartialEq)]
pub struct Backoff {
    /// The first step: the longest wait after the first failure.
    pub initial: Duration,
    /// The largest step.
    pub max: Duration,
    /// How much each failure multiplies the step by.
    pub multiplier: f64,
}

impl Default for Backoff {
    /// 100 ms, doubling up to 30 s.
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            multiplier: 2.0,
        }
    }
}

impl Backoff {
    /// Sets the first step.
    #[must_use]
    pub fn initial(mut self, initial: Duration) -> Self {
        self.initial = initial;
        self
    }

    /// Sets the largest step.
    #[must_use]
    pub fn max(mut self, max: Duration) -> Self {
        self.max = max;
        self
    }
}

/// The delays of one run of failures, reset after a success.
#[derive(Debug)]
pub(crate) struct BackoffState {
    config: Backoff,
    /// The current step; the next delay is drawn from its upper half.
    step: Duration,
}

impl BackoffState {
    pub(crate) fn new(config: Backoff) -> Self {
        let step = config.initial;
        BackoffState { config, step }
    }

    /// Starts over from the first step, after a connection that worked.
    pub(crate) fn reset(&mut self) {
        self.step = self.config.initial;
    }

    /// The next delay, from `[step / 2, step]`, and grows the step.
    pub(crate) fn next_delay(&mut self, random: u64) -> Duration {
        let step = self.step.min(self.config.max);
        let half = step / 2;
        let spread = u64::try_from((step - half).as_nanos()).unwrap_or(u64::MAX);
        let jitter = if spread == 0 {
            Duration::ZERO
        } else {
            Duration::from_nanos(random % (spread + 1))
        };
        let grown = step.mul_f64(self.config.multiplier.max(1.0));
        self.step = grown.min(self.config.max);
        half + jitter
    }
}

/// A random number from the standard library's per-process hash keys, which are seeded from
/// the operating system; good enough for jitter and for picking a first endpoint.
pub(crate) fn random_u64() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(0x9e37_79b9_7f4a_7c15);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_within_their_jitter_bounds_up_to_the_max() {
        let mut state = BackoffState::new(Backoff::default());
        let mut expected_step = Duration::from_millis(100);
        for attempt in 0..20 {
            let delay = state.next_delay(random_u64());
            assert!(
                delay >= expected_step / 2 && delay <= expected_step,
                "attempt {attempt}: {delay:?} outside [{:?}, {expected_step:?}]",
                expected_step / 2
            );
            expected_step = (expected_step * 2).min(Duration::from_secs(30));
        }
        assert_eq!(expected_step, Duration::from_secs(30));
    }

    #[test]
    fn the_extremes_of_the_random_number_hit_the_bounds() {
        let mut low = BackoffState::new(Backoff::default());
        assert_eq!(low.next_delay(0), Duration::from_millis(50));
        let mut high = BackoffState::new(Backoff::default());
        let spread = Duration::from_millis(50).as_nanos() as u64;
        assert_eq!(high.next_delay(spread), Duration::from_millis(100));
    }

    #[test]
    fn reset_starts_over() {
        let mut state = BackoffState::new(Backoff::default().max(Duration::from_secs(1)));
        for _ in 0..10 {
            state.next_delay(0);
        }
        assert_eq!(state.next_delay(0), Duration::from_millis(500));
        state.reset();
        assert_eq!(state.next_delay(0), Duration::from_millis(50));
    }

    #[test]
    fn random_numbers_differ() {
        let draws: std::collections::HashSet<u64> = (0..8).map(|_| random_u64()).collect();
        assert!(draws.len() > 1);
    }
}

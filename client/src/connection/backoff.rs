//! Reconnect delays: exponential backoff with jitter, and the random numbers behind the jitter.
//!
//! [`Backoff`] is configuration; [`BackoffState`] hands out delays. The steps grow as `backon`'s
//! exponential backoff; each delay is drawn from the upper half of the current step ("equal
//! jitter", from `fastrand`), so thousands of agents that lost the same server spread their
//! reconnects out instead of arriving together, while each still waits at least half the step.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

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
    /// The steps, without jitter: `initial`, growing by `multiplier`, held at `max`.
    steps: ExponentialBackoff,
}

impl BackoffState {
    pub(crate) fn new(config: Backoff) -> Self {
        let steps = Self::steps(&config);
        BackoffState { config, steps }
    }

    /// backon's builder for `config`. Its jitter is off: backon adds up to one step on top
    /// (`[step, 2 * step)`), where cattail waits within the step, so the jitter is applied here.
    fn steps(config: &Backoff) -> ExponentialBackoff {
        ExponentialBuilder::default()
            .with_min_delay(config.initial)
            .with_max_delay(config.max)
            .with_factor(config.multiplier.max(1.0) as f32)
            .without_max_times()
            .build()
    }

    /// Starts over from the first step, after a connection that worked.
    pub(crate) fn reset(&mut self) {
        self.steps = Self::steps(&self.config);
    }

    /// The next delay, from `[step / 2, step]`, and grows the step.
    pub(crate) fn next_delay(&mut self, random: u64) -> Duration {
        let step = self
            .steps
            .next()
            .unwrap_or(self.config.max)
            .min(self.config.max);
        let half = step / 2;
        let spread = u64::try_from((step - half).as_nanos()).unwrap_or(u64::MAX);
        let jitter = if spread == 0 {
            Duration::ZERO
        } else {
            Duration::from_nanos(random % (spread + 1))
        };
        half + jitter
    }
}

/// A random number for jitter and for picking a first endpoint, from `fastrand`'s per-thread
/// generator (seeded from the operating system's hash keys and the thread).
pub(crate) fn random_u64() -> u64 {
    fastrand::u64(..)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_within_their_jitter_bounds_up_to_the_max() {
        // backon multiplies in f32 seconds, so a grown step may be off by some nanoseconds.
        const SLACK: Duration = Duration::from_micros(1);
        let mut state = BackoffState::new(Backoff::default());
        let mut expected_step = Duration::from_millis(100);
        for attempt in 0..20 {
            let delay = state.next_delay(random_u64());
            assert!(
                delay + SLACK >= expected_step / 2 && delay <= expected_step + SLACK,
                "attempt {attempt}: {delay:?} outside [{:?}, {expected_step:?}]",
                expected_step / 2
            );
            expected_step = (expected_step * 2).min(Duration::from_secs(30));
        }
        assert_eq!(expected_step, Duration::from_secs(30));
        assert_eq!(state.next_delay(0), Duration::from_secs(15));
    }

    #[test]
    fn a_first_step_above_the_max_is_held_at_the_max() {
        let config = Backoff::default()
            .initial(Duration::from_secs(60))
            .max(Duration::from_secs(2));
        let mut state = BackoffState::new(config);
        let spread = Duration::from_secs(1).as_nanos() as u64;
        assert_eq!(state.next_delay(spread), Duration::from_secs(2));
        assert_eq!(state.next_delay(0), Duration::from_secs(1));
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

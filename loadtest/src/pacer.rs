//! `Pacer`: hands out write slots at a fixed rate to any number of concurrent writers.
//!
//! Each `wait` reserves the next free slot and sleeps until it, so the long-run rate never exceeds
//! the configured one, and a writer that falls behind does not cause a burst to catch up: slots in
//! the past are skipped, not replayed.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A shared rate limit.
#[derive(Debug)]
pub struct Pacer {
    period: Duration,
    next: Mutex<Option<Instant>>,
}

impl Pacer {
    /// A pacer for `per_sec` slots a second (at least 1).
    pub fn new(per_sec: u32) -> Self {
        Self {
            period: Duration::from_secs(1) / per_sec.max(1),
            next: Mutex::new(None),
        }
    }

    /// The time between two slots.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Reserves the next slot, without sleeping; returns when it starts.
    pub fn reserve(&self, now: Instant) -> Instant {
        let mut next = self
            .next
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let slot = next.map_or(now, |n| n.max(now));
        *next = Some(slot + self.period);
        slot
    }

    /// Waits for the next slot.
    pub async fn wait(&self) {
        let slot = self.reserve(Instant::now());
        tokio::time::sleep_until(slot).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn slots_are_spaced_and_the_past_is_not_replayed() {
        let pacer = Pacer::new(10);
        let start = Instant::now();
        assert_eq!(pacer.reserve(start), start);
        assert_eq!(pacer.reserve(start), start + Duration::from_millis(100));
        let later = start + Duration::from_secs(5);
        assert_eq!(pacer.reserve(later), later);
        assert_eq!(pacer.reserve(later), later + Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_keeps_the_rate() {
        let pacer = Pacer::new(50);
        let start = Instant::now();
        for _ in 0..100 {
            pacer.wait().await;
        }
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(1_980), "{took:?}");
        assert!(took < Duration::from_millis(2_100), "{took:?}");
    }
}

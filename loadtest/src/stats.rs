//! Latency and size distributions: HDR histograms, their summaries, and their wire form.
//!
//! Agents record into [`Hist`]s; agent processes send them to the orchestrator as the list of
//! recorded `(value, count)` pairs ([`HistWire`]), which merges exactly. Values are integers in
//! the unit the field name says (`_us`, `_ms`, `_bytes`); values past the histogram's range are
//! clamped to its top, so a pathological sample never panics or vanishes.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// The largest value a histogram holds: about 19 minutes in microseconds, or 1 TiB in bytes.
const MAX_VALUE: u64 = 1 << 40;

/// A histogram of non-negative integers, 3 significant digits.
#[derive(Clone, Debug)]
pub struct Hist(Histogram<u64>);

impl Default for Hist {
    fn default() -> Self {
        Self::new()
    }
}

/// The recorded values of a histogram, for sending between processes.
pub type HistWire = Vec<(u64, u64)>;

/// The usual percentiles of a histogram.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Samples.
    pub count: u64,
    /// Smallest sample.
    pub min: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest sample.
    pub max: u64,
    /// Mean.
    pub mean: f64,
    /// Sum of all samples (mean × count).
    pub sum: f64,
}

impl Hist {
    /// An empty histogram.
    pub fn new() -> Self {
        let inner = Histogram::new_with_bounds(1, MAX_VALUE, 3)
            .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()));
        Self(inner)
    }

    /// Records one value, clamped to the histogram's range.
    pub fn record(&mut self, value: u64) {
        self.record_n(value, 1);
    }

    /// Records `count` samples of `value`.
    pub fn record_n(&mut self, value: u64, count: u64) {
        let _ = self.0.record_n(value.clamp(1, MAX_VALUE), count);
    }

    /// Records a signed value; negatives (clock skew) count as 1.
    pub fn record_signed(&mut self, value: i128) {
        self.record(u64::try_from(value.max(1)).unwrap_or(MAX_VALUE));
    }

    /// Samples recorded.
    pub fn len(&self) -> u64 {
        self.0.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Hist) {
        for v in other.0.iter_recorded() {
            self.record_n(v.value_iterated_to(), v.count_at_value());
        }
    }

    /// The value at `quantile` (0 to 1), or 0 when empty.
    pub fn quantile(&self, quantile: f64) -> u64 {
        if self.0.is_empty() {
            0
        } else {
            self.0.value_at_quantile(quantile)
        }
    }

    /// The summary of the samples.
    pub fn summary(&self) -> Summary {
        if self.0.is_empty() {
            return Summary::default();
        }
        let mean = self.0.mean();
        Summary {
            count: self.0.len(),
            min: self.0.min(),
            p50: self.quantile(0.5),
            p90: self.quantile(0.9),
            p99: self.quantile(0.99),
            p999: self.quantile(0.999),
            max: self.0.max(),
            mean,
            sum: mean * self.0.len() as f64,
        }
    }

    /// The wire form: every recorded value with its count.
    pub fn to_wire(&self) -> HistWire {
        self.0
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect()
    }

    /// A histogram from its wire form.
    pub fn from_wire(wire: &HistWire) -> Self {
        let mut hist = Self::new();
        for &(value, count) in wire {
            hist.record_n(value, count);
        }
        hist
    }

    /// Forgets every sample.
    pub fn clear(&mut self) {
        self.0.reset();
    }
}

/// `value / baseline`, or `None` when the baseline is zero or either is not finite.
pub fn ratio(value: f64, baseline: f64) -> Option<f64> {
    let r = value / baseline;
    (baseline > 0.0 && r.is_finite()).then_some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_uniform_range() {
        let mut h = Hist::new();
        for v in 1..=10_000 {
            h.record(v);
        }
        let s = h.summary();
        assert_eq!(s.count, 10_000);
        assert_eq!(s.min, 1);
        assert!((4_990..=5_010).contains(&s.p50), "{s:?}");
        assert!((9_890..=9_910).contains(&s.p99), "{s:?}");
        assert!((s.mean - 5_000.5).abs() < 5.0, "{s:?}");
        assert!((s.sum - 50_005_000.0).abs() < 50_000.0, "{s:?}");
    }

    #[test]
    fn the_wire_form_round_trips_and_merges() {
        let mut a = Hist::new();
        let mut b = Hist::new();
        for v in 0..1_000 {
            a.record(v * 7);
            b.record(v * 13 + 5);
        }
        let back = Hist::from_wire(&a.to_wire());
        assert_eq!(back.summary(), a.summary());
        let mut merged = Hist::from_wire(&a.to_wire());
        merged.merge(&b);
        assert_eq!(merged.len(), 2_000);
        assert_eq!(merged.summary().max, b.summary().max.max(a.summary().max));
    }

    #[test]
    fn out_of_range_values_are_clamped_not_lost() {
        let mut h = Hist::new();
        h.record(0);
        h.record(u64::MAX);
        h.record_signed(-5);
        assert_eq!(h.len(), 3);
        assert_eq!(h.summary().min, 1);
        assert!(Hist::new().summary() == Summary::default());
    }

    #[test]
    fn ratios_refuse_a_zero_baseline() {
        assert_eq!(ratio(3.0, 1.5), Some(2.0));
        assert_eq!(ratio(3.0, 0.0), None);
    }
}

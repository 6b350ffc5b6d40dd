//! The metrics of agent authentication, through the `metrics` facade.

use metrics::{counter, describe_counter};

/// Agents refused, by `reason`: the TLS layer's counter (described there), which admission
/// adds its reasons to.
pub use crate::tls::AUTH_FAILURES;
/// Token lookups, by `result`: `authenticated`, `rejected`, `error` (a TokenReview sent),
/// `cached` (a kept answer) and `shared` (joined a review in flight).
pub const TOKEN_REVIEWS: &str = "cattail_token_reviews_total";

/// Describes the metrics to the installed recorder. Idempotent.
pub fn describe_metrics() {
    describe_counter!(
        TOKEN_REVIEWS,
        "Token lookups by result: TokenReviews sent (authenticated, rejected, error), cached \
         answers and joined reviews (cached, shared)."
    );
}

/// Counts one refusal.
pub(crate) fn auth_failure(reason: &'static str) {
    counter!(AUTH_FAILURES, "reason" => reason).increment(1);
}

/// Counts one token lookup.
pub(crate) fn token_review(result: &'static str) {
    counter!(TOKEN_REVIEWS, "result" => result).increment(1);
}

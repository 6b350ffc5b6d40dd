//! The metrics of agent authentication, through the `metrics` facade.

use metrics::{counter, describe_counter};

/// Agents refused, by `reason`. The TLS layer counts its refusals here too.
pub const AUTH_FAILURES: &str = "cattail_auth_failures_total";
/// Token lookups, by `result`: `authenticated`, `rejected`, `error` (a TokenReview sent),
/// `cached` (a kept answer) and `shared` (joined a review in flight).
pub const TOKEN_REVIEWS: &str = "cattail_token_reviews_total";

/// Describes the metrics to the installed recorder. Idempotent.
pub fn describe_metrics() {
    describe_counter!(
        AUTH_FAILURES,
        "Agents refused by authentication or authorization, by reason."
    );
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

//! The TokenReview cache on paused time, and the reviewer's cap and timeout against a fake API
//! service.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tonic::codegen::http;

use super::super::cache::{ReviewCache, Source, key};
use super::{account, jwt, value};
use crate::fanout::Refusal;

/// A review that counts its calls and answers `answer` after a second.
fn counted(
    calls: &Arc<AtomicUsize>,
    answer: Result<u32, String>,
    keep: Option<Duration>,
) -> impl FnOnce() -> futures::future::BoxFuture<'static, (Result<u32, String>, Option<Duration>)> {
    let calls = Arc::clone(calls);
    move || {
        Box::pin(async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(1)).await;
            (answer, keep)
        })
    }
}

#[tokio::test(start_paused = true)]
async fn one_review_per_token_at_a_time_kept_for_its_time() {
    let cache = Arc::new(ReviewCache::<u32>::new(16));
    let calls = Arc::new(AtomicUsize::new(0));
    let ttl = Some(Duration::from_secs(60));
    let k = key("token");
    let (a, b) = tokio::join!(
        cache.get(k, counted(&calls, Ok(7), ttl)),
        cache.get(k, counted(&calls, Ok(8), ttl)),
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!((a, b), ((Ok(7), Source::Reviewed), (Ok(7), Source::Shared)));
    tokio::time::advance(Duration::from_secs(58)).await;
    assert_eq!(
        cache.get(k, counted(&calls, Ok(9), ttl)).await,
        (Ok(7), Source::Cached)
    );
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(
        cache.get(k, counted(&calls, Ok(9), ttl)).await,
        (Ok(9), Source::Reviewed),
        "expired"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_ne!(key("token"), key("token2"));
}

#[tokio::test(start_paused = true)]
async fn errors_are_shared_but_never_kept() {
    let cache = Arc::new(ReviewCache::<u32>::new(16));
    let calls = Arc::new(AtomicUsize::new(0));
    let k = key("token");
    let failed = Err("API server down".to_owned());
    let ttl = Some(Duration::from_secs(60));
    let (a, b) = tokio::join!(
        cache.get(k, counted(&calls, failed.clone(), ttl)),
        cache.get(k, counted(&calls, failed.clone(), ttl)),
    );
    assert_eq!(a.0, failed);
    assert_eq!(b, (failed.clone(), Source::Shared));
    let again = cache.get(k, counted(&calls, Ok(1), ttl)).await;
    assert_eq!(again, (Ok(1), Source::Reviewed));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // An answer not to be kept (an expired token) is not kept either.
    let other = key("other");
    assert_eq!(
        cache.get(other, counted(&calls, Ok(2), None)).await.0,
        Ok(2)
    );
    assert_eq!(
        cache.get(other, counted(&calls, Ok(3), ttl)).await.1,
        Source::Reviewed
    );
}

#[tokio::test(start_paused = true)]
async fn the_cache_keeps_at_most_its_entries_and_drops_the_first_to_expire() {
    let cache = Arc::new(ReviewCache::<u32>::new(3));
    let calls = Arc::new(AtomicUsize::new(0));
    for (i, secs) in [(0u32, 30u64), (1, 10), (2, 60), (3, 60)] {
        let keep = Some(Duration::from_secs(secs));
        let (answer, _) = cache
            .get(key(&i.to_string()), counted(&calls, Ok(i), keep))
            .await;
        assert_eq!(answer, Ok(i));
    }
    assert_eq!(cache.len(), 3);
    let ttl = Some(Duration::from_secs(60));
    let source = |i: u32| {
        let cache = Arc::clone(&cache);
        let calls = Arc::clone(&calls);
        async move {
            cache
                .get(key(&i.to_string()), counted(&calls, Ok(i), ttl))
                .await
                .1
        }
    };
    assert_eq!(source(0).await, Source::Cached);
    assert_eq!(source(2).await, Source::Cached);
    assert_eq!(source(3).await, Source::Cached);
    assert_eq!(
        source(1).await,
        Source::Reviewed,
        "the first to expire went"
    );
}

/// TokenReviewer against a fake API service that answers every review "authenticated" once
/// `gate` opens, counting reviews in flight. A fake on purpose: the real API server cannot tell
/// how many reviews a client has in flight at once.
fn fake_api(
    in_flight: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    gate: Arc<tokio::sync::Semaphore>,
) -> kube::Client {
    let service = tower::service_fn(move |_request: http::Request<kube::client::Body>| {
        let (in_flight, most, gate) = (in_flight.clone(), most.clone(), gate.clone());
        async move {
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            let _pass = gate.acquire().await;
            in_flight.fetch_sub(1, Ordering::SeqCst);
            let review = serde_json::json!({
                "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                "spec": {},
                "status": {"authenticated": true, "audiences": ["cattail"],
                           "user": {"username": "system:serviceaccount:agents:agent"}},
            });
            let body = kube::client::Body::from(serde_json::to_vec(&review).unwrap());
            Ok::<_, std::convert::Infallible>(http::Response::new(body))
        }
    });
    kube::Client::new(service, "default")
}

#[tokio::test(start_paused = true)]
async fn token_reviews_in_flight_are_capped_and_the_rest_wait_their_turn() {
    let (in_flight, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let config = crate::config::TokenAuthConfig {
        service_accounts: vec!["agents/agent".into()],
        max_reviews_in_flight: 2,
        review_timeout: Duration::from_secs(3600),
        ..crate::config::TokenAuthConfig::default()
    };
    let client = fake_api(in_flight.clone(), most.clone(), gate.clone());
    let reviewer = Arc::new(super::token::TokenReviewer::new(&config, client));
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let reviewer = Arc::clone(&reviewer);
            let token = format!(
                "Bearer {}",
                jwt(&serde_json::json!({"aud": "cattail", "n": i}))
            );
            tokio::spawn(async move { reviewer.identify(&value(&token)).await })
        })
        .collect();
    // Paused time moves on only once every task waits: on the gate, or for a slot.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        in_flight.load(Ordering::SeqCst),
        2,
        "two in flight, four queued"
    );
    gate.add_permits(6);
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), account(None));
    }
    assert_eq!(most.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_review_that_takes_too_long_is_unavailable_and_not_kept() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let config = crate::config::TokenAuthConfig {
        service_accounts: vec!["agents/agent".into()],
        review_timeout: Duration::from_secs(10),
        ..crate::config::TokenAuthConfig::default()
    };
    let counters = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let client = fake_api(counters.0.clone(), counters.1.clone(), gate.clone());
    let reviewer = super::token::TokenReviewer::new(&config, client);
    let token = value(&format!(
        "Bearer {}",
        jwt(&serde_json::json!({"aud": "cattail"}))
    ));
    let start = tokio::time::Instant::now();
    let failure = reviewer.identify(&token).await.unwrap_err();
    // The paused clock: the review gave up at its timeout, not later.
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(10) && waited < Duration::from_secs(11),
        "{waited:?}"
    );
    assert_eq!(failure.reason, "token_review_error");
    assert!(matches!(failure.refusal, Refusal::Unavailable(_)));
    assert!(
        failure.detail.contains("no TokenReview answer within 10s"),
        "{}",
        failure.detail
    );
    assert_eq!(reviewer.cached(), 0);
    gate.add_permits(1);
    assert_eq!(reviewer.identify(&token).await.unwrap(), account(None));
    assert_eq!(reviewer.cached(), 1);
}

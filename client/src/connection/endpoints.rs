//! [`EndpointRotation`]: which server replica to try next.
//!
//! Agents start at a random endpoint, so a fleet spreads across replicas, then go round-robin.
//! A server at its agent target, or draining, names other replicas in its refusal; those are
//! tried first, before the rotation carries on where it was.

use std::collections::VecDeque;

/// The trailing metadata key in which a server at its target, or draining, lists other
/// replicas.
pub(crate) const TRY_ENDPOINTS_METADATA: &str = "cattail-try-endpoints";

/// A round-robin over the configured endpoints, plus hints from refusals.
#[derive(Debug)]
pub(crate) struct EndpointRotation {
    endpoints: Vec<String>,
    /// The index of the next configured endpoint.
    next: usize,
    /// Endpoints a server suggested, tried before the rotation continues.
    hinted: VecDeque<String>,
}

impl EndpointRotation {
    /// A rotation starting at the endpoint `random` picks. `endpoints` is not empty.
    pub(crate) fn new(endpoints: Vec<String>, random: u64) -> Self {
        let next = if endpoints.is_empty() {
            0
        } else {
            usize::try_from(random % endpoints.len() as u64).unwrap_or(0)
        };
        EndpointRotation {
            endpoints,
            next,
            hinted: VecDeque::new(),
        }
    }

    /// The number of configured endpoints.
    pub(crate) fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// The endpoint to try now.
    pub(crate) fn next_endpoint(&mut self) -> Option<String> {
        if let Some(hint) = self.hinted.pop_front() {
            return Some(hint);
        }
        let endpoint = self.endpoints.get(self.next)?.clone();
        self.next = (self.next + 1) % self.endpoints.len();
        Some(endpoint)
    }

    /// Queues the replicas a refusal from `refused_by` suggested (`host:port`, comma-separated),
    /// with `refused_by`'s scheme. Hints already queued or equal to `refused_by` are skipped.
    /// Returns true when a hint was queued.
    pub(crate) fn add_hints(&mut self, refused_by: &str, hints: &str) -> bool {
        let queued_before = self.hinted.len();
        let scheme = refused_by
            .split_once("://")
            .map_or("http", |(scheme, _)| scheme);
        for hint in hints.split(',').map(str::trim).filter(|h| !h.is_empty()) {
            let endpoint = if hint.contains("://") {
                hint.to_owned()
            } else {
                format!("{scheme}://{hint}")
            };
            if endpoint != refused_by && !self.hinted.contains(&endpoint) {
                self.hinted.push_back(endpoint);
            }
        }
        self.hinted.len() > queued_before
    }
}

/// An endpoint as a URI: `host:port` gets `http://` in front; anything with a scheme is kept.
pub(crate) fn normalise_endpoint(endpoint: &str) -> String {
    let endpoint = endpoint.trim();
    if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("http://{endpoint}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rotation(random: u64) -> EndpointRotation {
        EndpointRotation::new(
            vec![
                "http://a:1".into(),
                "http://b:1".into(),
                "http://c:1".into(),
            ],
            random,
        )
    }

    fn take(rotation: &mut EndpointRotation, n: usize) -> Vec<String> {
        (0..n).map(|_| rotation.next_endpoint().unwrap()).collect()
    }

    #[test]
    fn the_rotation_starts_where_the_random_number_says_and_wraps() {
        assert_eq!(
            take(&mut rotation(1), 4),
            ["http://b:1", "http://c:1", "http://a:1", "http://b:1"]
        );
        assert_eq!(take(&mut rotation(5), 1), ["http://c:1"]);
    }

    #[test]
    fn hints_come_first_then_the_rotation_carries_on() {
        let mut rotation = rotation(0);
        assert_eq!(take(&mut rotation, 1), ["http://a:1"]);
        assert!(rotation.add_hints("http://a:1", " c:1, 10.0.0.9:5473 ,a:1,,"));
        assert!(!rotation.add_hints("http://a:1", "a:1, c:1"), "nothing new");
        assert_eq!(
            take(&mut rotation, 4),
            [
                "http://c:1",
                "http://10.0.0.9:5473",
                "http://b:1",
                "http://c:1"
            ]
        );
    }

    #[test]
    fn endpoints_without_a_scheme_get_http() {
        assert_eq!(normalise_endpoint("cattail:5473"), "http://cattail:5473");
        assert_eq!(normalise_endpoint("https://x:1 "), "https://x:1");
    }

    #[test]
    fn an_empty_rotation_has_nothing_to_offer() {
        let mut rotation = EndpointRotation::new(Vec::new(), 3);
        assert_eq!(rotation.len(), 0);
        assert_eq!(rotation.next_endpoint(), None);
    }
}

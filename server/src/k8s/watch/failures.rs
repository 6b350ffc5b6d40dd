//! [`ProjectionFailures`]: what one resource's watcher does with an object it cannot project.
//!
//! Such an update becomes a delete of the object's key for agents: they must not keep serving
//! a version the server can no longer vouch for until the next relist. Every failed event is
//! counted in `cattail_projection_failures_total{resource}`, but each object is logged once:
//! its key is remembered until it projects again or is deleted. The set of remembered keys is
//! bounded: when it is full it is emptied, so at worst an object that keeps failing is logged
//! again once every [`MAX_REMEMBERED`] other failing objects.

use std::collections::HashSet;
use std::fmt;

use crate::store::ObjectKey;

/// The most keys remembered as "already logged" per resource (a few hundred KiB at most).
pub(crate) const MAX_REMEMBERED: usize = 4096;

/// The failing objects of one resource that were logged already.
#[derive(Debug)]
pub(crate) struct ProjectionFailures {
    /// The resource, for logs and metric labels.
    resource: String,
    logged: HashSet<ObjectKey>,
    capacity: usize,
}

impl ProjectionFailures {
    /// No failure seen yet for `resource`; at most `capacity` keys remembered.
    pub(crate) fn new(resource: impl Into<String>, capacity: usize) -> Self {
        Self {
            resource: resource.into(),
            logged: HashSet::new(),
            capacity: capacity.max(1),
        }
    }

    /// Records that the object `key` could not be projected: counts it, and logs it unless it
    /// was logged since it last projected. Returns whether it was logged.
    pub(crate) fn failed(&mut self, key: &ObjectKey, error: &dyn fmt::Display) -> bool {
        metrics::counter!("cattail_projection_failures_total", "resource" => self.resource.clone())
            .increment(1);
        if self.logged.contains(key) {
            return false;
        }
        if self.logged.len() >= self.capacity {
            self.logged.clear();
        }
        self.logged.insert(key.clone());
        tracing::warn!(resource = %self.resource, object = %key, %error,
            "object cannot be projected; agents get it as deleted until it can be");
        true
    }

    /// The object `key` projected again, or was deleted: a later failure is logged again.
    pub(crate) fn forget(&mut self, key: &ObjectKey) {
        if !self.logged.is_empty() {
            self.logged.remove(key);
        }
    }

    /// How many keys are remembered, for tests.
    #[cfg(test)]
    pub(crate) fn remembered(&self) -> usize {
        self.logged.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_is_logged_once_until_it_projects_again() {
        let mut failures = ProjectionFailures::new("v1/pods", 8);
        let key = ObjectKey::new("default", "web-0");
        assert!(failures.failed(&key, &"bad scope"));
        assert!(!failures.failed(&key, &"bad scope"), "logged twice");
        assert!(failures.failed(&ObjectKey::new("default", "web-1"), &"bad scope"));
        failures.forget(&key);
        assert!(
            failures.failed(&key, &"bad scope"),
            "not logged after recovering"
        );
    }

    #[test]
    fn the_remembered_keys_are_bounded() {
        let mut failures = ProjectionFailures::new("v1/pods", 3);
        for i in 0..10 {
            assert!(failures.failed(&ObjectKey::new("default", format!("p{i}")), &"bad"));
            assert!(failures.remembered() <= 3, "{}", failures.remembered());
        }
        // p9 is remembered; p0 was dropped when the set was emptied, so it is logged again.
        assert!(!failures.failed(&ObjectKey::new("default", "p9"), &"bad"));
        assert!(failures.failed(&ObjectKey::new("default", "p0"), &"bad"));
    }
}

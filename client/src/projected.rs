//! The untyped objects and events a session produces, before any decoding into Kubernetes types.
//!
//! A [`ProjectedObject`] is one cached object exactly as the server sent it: its key, its
//! canonical JSON bytes and its source `resourceVersion`. A [`SubscriptionEvent`] is a
//! kube-runtime watcher event about such objects, tagged with the resource it belongs to,
//! because one stream carries every subscription of a `Hello`.

use std::sync::Arc;

use bytes::Bytes;
use kube::runtime::watcher::Event;
use serde::de::DeserializeOwned;

/// One object as the server projected it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectedObject {
    /// The namespace; empty for a cluster-scoped object.
    pub namespace: String,
    /// The name.
    pub name: String,
    /// Canonical JSON of the projected object: sorted keys, only the configured fields.
    pub value: Bytes,
    /// The object's `resourceVersion` in the Kubernetes API, for debugging only.
    pub resource_version: String,
}

impl ProjectedObject {
    /// Decodes the value into a Kubernetes type. Fields the server did not project come out as
    /// their defaults (`None`, empty).
    ///
    /// # Errors
    /// When the value is not JSON of `K`'s shape.
    pub fn decode<K: DeserializeOwned>(&self) -> serde_json::Result<K> {
        serde_json::from_slice(&self.value)
    }

    /// The value as a JSON tree.
    ///
    /// # Errors
    /// When the value is not JSON; a well-behaved server never sends that.
    pub fn to_json(&self) -> serde_json::Result<serde_json::Value> {
        serde_json::from_slice(&self.value)
    }
}

/// A watcher event about one subscription of a multi-resource stream.
#[derive(Clone, Debug)]
pub struct SubscriptionEvent {
    /// The subscribed resource, such as `v1/pods`.
    pub resource: Arc<str>,
    /// What happened, shaped like kube-runtime's watcher events.
    pub event: Event<ProjectedObject>,
}

/// Maps the object inside an event, keeping its kind; `Init` and `InitDone` pass through.
pub(crate) fn map_event<A, B, E>(
    event: Event<A>,
    map: impl FnOnce(A) -> Result<B, E>,
) -> Result<Event<B>, E> {
    Ok(match event {
        Event::Init => Event::Init,
        Event::InitDone => Event::InitDone,
        Event::InitApply(object) => Event::InitApply(map(object)?),
        Event::Apply(object) => Event::Apply(map(object)?),
        Event::Delete(object) => Event::Delete(map(object)?),
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Pod;

    use super::*;

    fn object(value: &str) -> ProjectedObject {
        ProjectedObject {
            namespace: "default".into(),
            name: "web-0".into(),
            value: Bytes::copy_from_slice(value.as_bytes()),
            resource_version: "7".into(),
        }
    }

    #[test]
    fn unprojected_fields_decode_as_defaults() {
        let pod: Pod = object(
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web-0","namespace":"default"},"spec":{"nodeName":"n1"}}"#,
        )
        .decode()
        .unwrap();
        assert_eq!(pod.metadata.name.as_deref(), Some("web-0"));
        let spec = pod.spec.unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("n1"));
        assert!(spec.containers.is_empty());
        assert!(pod.status.is_none());
    }

    #[test]
    fn malformed_values_are_decode_errors() {
        assert!(object("{not json").decode::<Pod>().is_err());
        assert!(object("{not json").to_json().is_err());
    }

    #[test]
    fn map_event_keeps_the_event_kind() {
        let mapped = map_event(Event::Delete(1), |n| Ok::<_, ()>(n + 1)).unwrap();
        assert!(matches!(mapped, Event::Delete(2)));
        let mapped = map_event(Event::<i32>::InitDone, Ok::<i32, ()>).unwrap();
        assert!(matches!(mapped, Event::InitDone));
        assert!(map_event(Event::Apply(1), |_| Err::<i32, _>("bad")).is_err());
    }
}

//! The local store: kube-runtime's reflector `Store`, fed by a cattail (or direct) watcher.
//!
//! The store itself is kube-runtime's (`store()`, `Writer`, `Store`, `ObjectRef`): a single
//! writer buffers `InitApply`s until `InitDone` and swaps them in at once, and cheap readers
//! offer `get`, `state` and `wait_until_ready`. This module only connects it to watcher streams
//! whose error type is not kube-runtime's, and adds the usual stream adapters.

use std::hash::Hash;

use futures::{Stream, StreamExt, TryStreamExt, future};
use kube::runtime::reflector::Lookup;
use kube::runtime::watcher::Event;

pub use kube::runtime::reflector::store::Writer;
pub use kube::runtime::reflector::{ObjectRef, Store, store};

/// Applies every event of `stream` to `writer` before passing it on, as kube-runtime's
/// `reflector` does, for any error type.
pub fn reflector<K, E, S>(
    mut writer: Writer<K>,
    stream: S,
) -> impl Stream<Item = Result<Event<K>, E>>
where
    K: Lookup + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
    S: Stream<Item = Result<Event<K>, E>>,
{
    stream.inspect_ok(move |event| writer.apply_watcher_event(event))
}

/// Adapters for watcher event streams, named after kube-runtime's `WatchStreamExt`.
pub trait EventStreamExt<K, E>: Stream<Item = Result<Event<K>, E>> + Sized {
    /// Feeds a store's writer: see [`reflector`].
    fn reflect(self, writer: Writer<K>) -> impl Stream<Item = Result<Event<K>, E>>
    where
        K: Lookup + Clone + 'static,
        K::DynamicType: Eq + Hash + Clone,
    {
        reflector(writer, self)
    }

    /// Only the objects that were created or changed (`Apply` and `InitApply`), and errors.
    fn applied_objects(self) -> impl Stream<Item = Result<K, E>> {
        self.filter_map(|item| {
            future::ready(match item {
                Ok(Event::Apply(object) | Event::InitApply(object)) => Some(Ok(object)),
                Ok(Event::Delete(_) | Event::Init | Event::InitDone) => None,
                Err(error) => Some(Err(error)),
            })
        })
    }

    /// The objects that were created, changed or deleted, and errors.
    fn touched_objects(self) -> impl Stream<Item = Result<K, E>> {
        self.filter_map(|item| {
            future::ready(match item {
                Ok(Event::Apply(object) | Event::InitApply(object) | Event::Delete(object)) => {
                    Some(Ok(object))
                }
                Ok(Event::Init | Event::InitDone) => None,
                Err(error) => Some(Err(error)),
            })
        })
    }
}

impl<K, E, S> EventStreamExt<K, E> for S where S: Stream<Item = Result<Event<K>, E>> {}

#[cfg(test)]
mod tests {
    use futures::stream;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    use super::*;

    fn map(name: &str, data: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..ObjectMeta::default()
            },
            data: Some([("k".to_owned(), data.to_owned())].into()),
            ..ConfigMap::default()
        }
    }

    fn events() -> Vec<Result<Event<ConfigMap>, &'static str>> {
        vec![
            Ok(Event::Init),
            Ok(Event::InitApply(map("a", "1"))),
            Ok(Event::InitApply(map("b", "1"))),
            Ok(Event::InitDone),
            Err("stream lost"),
            Ok(Event::Apply(map("a", "2"))),
            Ok(Event::Delete(map("b", "1"))),
        ]
    }

    #[tokio::test]
    async fn the_store_follows_the_events_and_becomes_ready_at_init_done() {
        let (reader, writer) = store::<ConfigMap>();
        let passed: Vec<_> = stream::iter(events()).reflect(writer).collect().await;
        assert_eq!(
            passed.len(),
            7,
            "every item passes through, errors included"
        );
        reader.wait_until_ready().await.unwrap();
        let state = reader.state();
        assert_eq!(state.len(), 1);
        let a = reader.get(&ObjectRef::new("a").within("default")).unwrap();
        assert_eq!(a.data.as_ref().unwrap()["k"], "2");
        assert!(reader.get(&ObjectRef::new("b").within("default")).is_none());
    }

    #[tokio::test]
    async fn applied_and_touched_objects_filter_events() {
        let name = |item: Result<ConfigMap, &str>| match item {
            Ok(map) => map.metadata.name.unwrap(),
            Err(error) => error.to_owned(),
        };
        let applied: Vec<String> = stream::iter(events())
            .applied_objects()
            .map(name)
            .collect()
            .await;
        assert_eq!(applied, ["a", "b", "stream lost", "a"]);
        let touched: Vec<String> = stream::iter(events())
            .touched_objects()
            .map(name)
            .collect()
            .await;
        assert_eq!(touched, ["a", "b", "stream lost", "a", "b"]);
    }
}

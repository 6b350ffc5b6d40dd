//! Kubernetes-typed watchers, shaped like kube-runtime's `watcher`, over either source.
//!
//! [`watcher`] yields `Event<K>` for any k8s-openapi type, decoded from the server's projected
//! JSON (fields that were not projected come out empty); [`dynamic_watcher`] yields
//! `Event<DynamicObject>` for custom resources. With a direct [`Client`] both run kube-runtime's
//! own watcher against the API server instead, so an agent switches source by changing how it
//! builds its client.
//!
//! Like kube-runtime's, the streams never end by themselves: `Err` items report a failure
//! (a lost stream, an object that did not decode) and the watcher carries on, retrying with
//! backoff. Only a configuration that cannot work ends the stream, after one `Err`.

mod direct;

use std::fmt::Debug;

use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt};
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::watcher::Event;
use serde::de::DeserializeOwned;

use crate::client::Client;
use crate::connection;
use crate::projected::{ProjectedObject, map_event};
use crate::subscription::{Subscription, resource_of};

/// A `Result` whose error is the watcher's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a watcher reports besides events.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The cattail stream failed, or cannot start; see [`connection::Error::is_fatal`].
    #[error(transparent)]
    Connection(#[from] connection::Error),

    /// An object's projected JSON does not decode into the watcher's type; the event is
    /// skipped. The server's projection or the agent's type is wrong.
    #[error("cannot decode {resource} {namespace}/{name}: {source}")]
    Decode {
        /// The resource.
        resource: String,
        /// The object's namespace; empty when cluster scoped.
        namespace: String,
        /// The object's name.
        name: String,
        /// What serde reported.
        source: serde_json::Error,
    },

    /// The watcher's type names no valid resource. Fatal.
    #[error("the watched type has no valid resource name: {0}")]
    Resource(#[source] cattail_proto::Error),

    /// A node-scoped subscription needs the client's node name. Fatal.
    #[error("the subscription is node scoped but the client has no node name; set one")]
    NodeNameRequired,

    /// kube-runtime's watcher failed (direct mode); it retries with its default backoff.
    #[error("direct watch failed: {0}")]
    Direct(#[from] kube::runtime::watcher::Error),
}

/// Watches one resource type, as kube-runtime's `watcher` does.
///
/// The resource is `K`'s (`v1/pods` for `Pod`) unless the subscription names one. Each call
/// opens its own stream; use [`Client::subscribe`] to carry several resources on one.
pub fn watcher<K>(
    client: Client,
    subscription: Subscription,
) -> impl Stream<Item = Result<Event<K>>>
where
    K: kube::Resource<DynamicType = ()> + DeserializeOwned + Clone + Debug + Send + 'static,
{
    let typed_resource = match resource_of::<K>() {
        Ok(resource) => resource,
        Err(error) => return fail(Error::Resource(error)),
    };
    if let Some(kube_client) = client.direct.clone() {
        let api = kube::Api::<K>::all(kube_client);
        return direct::watch(api, &subscription, &client.settings.node_name);
    }
    cattail_stream(&client, &subscription, Some(&typed_resource), decode::<K>)
}

/// Watches any resource untyped, as `DynamicObject`s: for custom resources. The subscription
/// must name its resource.
pub fn dynamic_watcher(
    client: Client,
    subscription: Subscription,
) -> impl Stream<Item = Result<Event<DynamicObject>>> {
    if let Some(kube_client) = client.direct.clone() {
        let Some(resource) = subscription.explicit_resource() else {
            return fail(connection::Error::MissingResource.into());
        };
        let api_resource = ApiResource {
            group: resource.group().to_owned(),
            version: resource.version().to_owned(),
            api_version: resource.api_version().to_owned(),
            // Not needed to list or watch; objects carry their own kind.
            kind: String::new(),
            plural: resource.plural().to_owned(),
        };
        let api = kube::Api::<DynamicObject>::all_with(kube_client, &api_resource);
        return direct::watch(api, &subscription, &client.settings.node_name);
    }
    cattail_stream(&client, &subscription, None, decode::<DynamicObject>)
}

/// A cattail stream of one subscription, its objects decoded by `decode`.
fn cattail_stream<K: Send + 'static>(
    client: &Client,
    subscription: &Subscription,
    default_resource: Option<&cattail_proto::Resource>,
    decode: fn(&str, ProjectedObject) -> Result<K>,
) -> BoxStream<'static, Result<Event<K>>> {
    let Some(resolved) = subscription.resolve(default_resource) else {
        return fail(connection::Error::MissingResource.into());
    };
    let explicit = subscription.clone().resource(resolved.resource);
    let events = match client.subscribe(std::slice::from_ref(&explicit)) {
        Ok(events) => events,
        Err(error) => return fail(error.into()),
    };
    events
        .map(move |item| {
            let tagged = item?;
            let resource = tagged.resource;
            map_event(tagged.event, |object| decode(&resource, object))
        })
        .boxed()
}

fn decode<K: DeserializeOwned>(resource: &str, object: ProjectedObject) -> Result<K> {
    object.decode().map_err(|source| Error::Decode {
        resource: resource.to_owned(),
        namespace: object.namespace,
        name: object.name,
        source,
    })
}

/// A stream of one error: a configuration that cannot work.
fn fail<K: Send + 'static>(error: Error) -> BoxStream<'static, Result<Event<K>>> {
    stream::once(async move { Err(error) }).boxed()
}

#[cfg(test)]
mod tests;

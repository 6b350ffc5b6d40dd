//! Direct mode: kube-runtime's own watcher against the API server, behind the same API.
//!
//! A node-scoped subscription becomes a field selector on the subscription's scope field
//! (`spec.nodeName=<node>` by default). Objects are the API server's full objects, not
//! projections, and after a relist kube-runtime emits `Init`..`InitDone` again rather than a
//! diff; both are what kube-runtime users already expect.

use std::fmt::Debug;

use futures::StreamExt;
use futures::stream::BoxStream;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;

use super::{Error, Result, fail};
use crate::subscription::Subscription;

/// Watches `api` with kube-runtime's default backoff.
pub(super) fn watch<K>(
    api: kube::Api<K>,
    subscription: &Subscription,
    node_name: &str,
) -> BoxStream<'static, Result<Event<K>>>
where
    K: kube::Resource + DeserializeOwned + Clone + Debug + Send + 'static,
{
    match watcher_config(subscription, node_name) {
        Ok(config) => watcher::watcher(api, config)
            .default_backoff()
            .map(|item| item.map_err(Error::Direct))
            .boxed(),
        Err(error) => fail(error),
    }
}

/// The kube-runtime watcher configuration for a subscription.
pub(super) fn watcher_config(
    subscription: &Subscription,
    node_name: &str,
) -> Result<watcher::Config> {
    let config = watcher::Config::default();
    if !subscription.is_node_scoped() {
        return Ok(config);
    }
    if node_name.is_empty() {
        return Err(Error::NodeNameRequired);
    }
    let selector = format!("{}={node_name}", subscription.direct_scope_field());
    Ok(config.fields(&selector))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_scoped_subscriptions_select_on_the_scope_field() {
        let scoped = Subscription::default().node_scoped();
        let config = watcher_config(&scoped, "node-1").unwrap();
        assert_eq!(
            config.field_selector.as_deref(),
            Some("spec.nodeName=node-1")
        );
        let custom = scoped.clone().scope_field("spec.host");
        let config = watcher_config(&custom, "n2").unwrap();
        assert_eq!(config.field_selector.as_deref(), Some("spec.host=n2"));
        assert!(matches!(
            watcher_config(&scoped, ""),
            Err(Error::NodeNameRequired)
        ));
        let all = watcher_config(&Subscription::default(), "").unwrap();
        assert_eq!(all.field_selector, None);
    }
}

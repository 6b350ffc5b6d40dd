//! The other ready replicas of this one, for the `cattail-try-endpoints` hint: read from the
//! EndpointSlices of the replicas' headless Service (label `kubernetes.io/service-name`) in
//! the server's namespace, and handed to the hub ([`Hub::set_try_endpoints`]).
//!
//! One watch on a handful of small objects per replica; the list is rebuilt on each change.
//! Staleness: a replica appears once the endpoint controller marks it ready, and leaves once it
//! is not ready (a draining replica's `/readyz` turns 503 at once). Losing the watch keeps the
//! last list, with a warning; this watch is not critical: without it agents fall back on
//! their own list of endpoints.

use std::net::{IpAddr, SocketAddr};

use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use tokio_util::sync::CancellationToken;

use crate::fanout::Hub;

/// The most replicas a hint lists: enough for any sane Deployment, and a bound on the trailer.
pub const MAX_TRY_ENDPOINTS: usize = 32;

/// The label the endpoint controller puts on a Service's EndpointSlices.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Where this replica finds the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaSettings {
    /// The headless Service in front of the replicas.
    pub service: String,
    /// Its namespace; `None` is the client's default namespace (in a pod: the pod's own).
    pub namespace: Option<String>,
    /// This replica's own IP (in a pod: `status.podIP`): with `port`, its address, left out of
    /// the list.
    pub own_ip: Option<IpAddr>,
    /// This replica's gRPC port; also the port of a slice that does not name one (`grpc`, or
    /// its only port).
    pub port: u16,
}

/// The ready endpoints of `slices` as `host:port`, without this replica's own address `own`
/// (its IP and gRPC port), sorted, without duplicates. A hint names the first
/// [`MAX_TRY_ENDPOINTS`]; the connection target counts them all.
///
/// An endpoint counts as ready unless its `conditions.ready` is false (the API's rule: unset
/// means ready). The port is the slice's port named `grpc`, else its only port, else `port`.
pub fn ready_endpoints(
    slices: &[&EndpointSlice],
    own: Option<SocketAddr>,
    port: u16,
) -> Vec<String> {
    let mut endpoints = Vec::new();
    for slice in slices {
        let ports = slice.ports.as_deref().unwrap_or_default();
        let named = ports
            .iter()
            .find(|p| p.name.as_deref() == Some("grpc"))
            .or(match ports {
                [only] => Some(only),
                _ => None,
            })
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok());
        let port = named.unwrap_or(port);
        for endpoint in slice.endpoints.iter().flatten() {
            let ready = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(true);
            if !ready {
                continue;
            }
            for address in &endpoint.addresses {
                // FQDN slices are not pod replicas; an unparsable address is skipped.
                let Ok(ip) = address.parse::<IpAddr>() else {
                    continue;
                };
                let address = SocketAddr::new(ip, port);
                if Some(address) != own {
                    endpoints.push(address.to_string());
                }
            }
        }
    }
    endpoints.sort();
    endpoints.dedup();
    endpoints
}

/// Follows the Service's EndpointSlices until `shutdown`, keeping the hub's list of replicas
/// to try up to date.
pub async fn run(
    client: kube::Client,
    settings: ReplicaSettings,
    hub: Hub,
    shutdown: CancellationToken,
) {
    let namespace = settings
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let api: Api<EndpointSlice> = Api::namespaced(client, &namespace);
    let config =
        watcher::Config::default().labels(&format!("{SERVICE_NAME_LABEL}={}", settings.service));
    let (reader, writer) = reflector::store();
    let mut events = reflector(writer, watcher(api, config))
        .default_backoff()
        .boxed();
    tracing::info!(service = %settings.service, %namespace, "following the replicas' EndpointSlices");
    let mut last = Vec::new();
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => return,
            event = events.next() => event,
        };
        match event {
            None => return,
            Some(Err(error)) => {
                tracing::warn!(%error, "cannot watch the replicas' EndpointSlices; keeping the last list");
            }
            Some(Ok(_)) => {
                let slices = reader.state();
                let slices: Vec<&EndpointSlice> = slices.iter().map(AsRef::as_ref).collect();
                let own = settings.own_ip.map(|ip| SocketAddr::new(ip, settings.port));
                let endpoints = ready_endpoints(&slices, own, settings.port);
                if endpoints != last {
                    tracing::info!(replicas = ?endpoints, "other ready replicas");
                    let named = &endpoints[..endpoints.len().min(MAX_TRY_ENDPOINTS)];
                    hub.set_try_endpoints(named, endpoints.len());
                    last = endpoints;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(yaml: &str) -> EndpointSlice {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn ready_endpoints_leave_out_this_replica_and_the_unready() {
        let first = slice(
            "addressType: IPv4\nmetadata: {name: a}\n\
             ports: [{name: admin, port: 9101}, {name: grpc, port: 5473}]\n\
             endpoints:\n\
             - addresses: [10.0.0.3]\n  conditions: {ready: true}\n\
             - addresses: [10.0.0.1]\n  conditions: {ready: true}\n\
             - addresses: [10.0.0.2]\n  conditions: {ready: false, terminating: true}\n\
             - addresses: [10.0.0.4]\n",
        );
        let second = slice(
            "addressType: IPv6\nmetadata: {name: b}\nports: [{port: 6000}]\n\
             endpoints:\n- addresses: ['fd00::5', not-an-ip]\n",
        );
        let third =
            slice("addressType: IPv4\nmetadata: {name: c}\nendpoints:\n- addresses: [10.0.0.4]\n");
        let own = Some("10.0.0.1:5473".parse().unwrap());
        assert_eq!(
            ready_endpoints(&[&first, &second, &third], own, 7000),
            [
                "10.0.0.3:5473",
                "10.0.0.4:5473",
                "10.0.0.4:7000",
                "[fd00::5]:6000"
            ]
        );
        // The same IP on another port is another replica (only in tests: pods have own IPs).
        let elsewhere = Some("10.0.0.1:9999".parse().unwrap());
        assert!(ready_endpoints(&[&first], elsewhere, 7000).contains(&"10.0.0.1:5473".into()));
        assert!(ready_endpoints(&[], own, 1).is_empty());
    }

    #[test]
    fn every_ready_replica_is_counted_though_a_hint_names_at_most_the_limit() {
        let addresses: Vec<String> = (0..100).map(|i| format!("10.0.1.{i}")).collect();
        let many = slice(&format!(
            "addressType: IPv4\nmetadata: {{name: a}}\nendpoints:\n- addresses: [{}]\n",
            addresses.join(", ")
        ));
        assert_eq!(ready_endpoints(&[&many], None, 1).len(), 100);
        const { assert!(MAX_TRY_ENDPOINTS < 100) };
    }
}

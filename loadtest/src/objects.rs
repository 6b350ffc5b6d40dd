//! The synthetic objects a seed and a churn write, as JSON ready for server-side apply.
//!
//! Pure functions of the scenario and an index, so a seed run twice writes identical objects
//! (server-side apply then makes the second run a no-op). Pod `i` runs on node `i % nodes` and
//! gets the IP `10.<node/256>.<node%256>.<slot+2>`, inside its node's /24 pod CIDR.

use serde_json::{Value, json};

use crate::scenario::{Scenario, namespace_name, node_name};

/// The annotation every churn write stamps with its write time, in Unix nanoseconds.
pub const STAMP_ANNOTATION: &str = "loadtest.cattail.dev/written-at";

/// The field manager of every write.
pub const FIELD_MANAGER: &str = "cattail-loadtest";

/// Namespace number `index`.
pub fn namespace(index: u32) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": namespace_name(index), "labels": {"loadtest": "true", "team": format!("team-{}", index % 7)}},
    })
}

/// The /24 pod CIDR of node number `index`.
pub fn pod_cidr(index: u32) -> String {
    format!("10.{}.{}.0/24", (index / 256) % 256, index % 256)
}

/// Node number `index` (spec only; [`node_status`] is the status patch).
pub fn node(index: u32) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": node_name(index), "labels": {
            "kubernetes.io/hostname": node_name(index),
            "topology.kubernetes.io/zone": format!("zone-{}", index % 3),
        }},
        "spec": {"podCIDR": pod_cidr(index), "podCIDRs": [pod_cidr(index)]},
    })
}

/// The status a kubelet would report for node number `index`.
pub fn node_status(index: u32) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": node_name(index)},
        "status": {"addresses": [
            {"type": "InternalIP", "address": node_ip(index)},
            {"type": "Hostname", "address": node_name(index)},
        ]},
    })
}

/// The InternalIP of node number `index`.
pub fn node_ip(index: u32) -> String {
    format!("172.16.{}.{}", (index / 250) % 256, index % 250 + 1)
}

/// The IP of pod number `pod`.
pub fn pod_ip(scenario: &Scenario, pod: u32) -> String {
    let node = scenario.node_of_pod(pod);
    let slot = (pod / scenario.nodes) % 250;
    format!("10.{}.{}.{}", (node / 256) % 256, node % 256, slot + 2)
}

/// The name of seeded pod number `pod`.
pub fn pod_name(pod: u32) -> String {
    format!("pod-{pod}")
}

/// Seeded pod number `pod`, or a churn pod when `name` is given; `stamp` adds the write time.
pub fn pod(scenario: &Scenario, pod: u32, name: Option<&str>, stamp: Option<i128>) -> Value {
    let service = scenario.service_of_pod(pod);
    let mut value = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name.map_or_else(|| pod_name(pod), str::to_owned),
            "namespace": scenario.namespace_of(pod),
            "labels": {"app": format!("svc-{service}"), "role": format!("role-{}", pod % 5), "version": "0"},
        },
        "spec": {
            "nodeName": node_name(scenario.node_of_pod(pod)),
            "serviceAccountName": "default",
            "containers": [{
                "name": "app", "image": "registry.invalid/app:1",
                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
            }],
        },
    });
    if let Some(stamp) = stamp {
        value["metadata"]["annotations"] = json!({STAMP_ANNOTATION: stamp.to_string()});
    }
    value
}

/// The status a kubelet would report for a running pod; `ready` and `probe` vary what the
/// default projection drops (conditions), never what it keeps (phase, IPs).
pub fn pod_status(scenario: &Scenario, pod: u32, name: &str, ready: bool, probe: u64) -> Value {
    let node = scenario.node_of_pod(pod);
    let ip = pod_ip(scenario, pod);
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": scenario.namespace_of(pod)},
        "status": {
            "phase": "Running",
            "hostIP": node_ip(node),
            "podIP": ip, "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
                            "reason": format!("probe-{probe}")}],
        },
    })
}

/// Headless-free ClusterIP service number `service`, selecting its pods by `app`.
pub fn service(scenario: &Scenario, service: u32) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("svc-{service}"), "namespace": scenario.namespace_of(service),
                     "labels": {"app": format!("svc-{service}")}},
        "spec": {"selector": {"app": format!("svc-{service}")},
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]},
    })
}

/// The EndpointSlice of service number `service`, listing its seeded pods (at most 100).
pub fn endpoint_slice(scenario: &Scenario, service: u32) -> Value {
    let endpoints: Vec<Value> = (service..scenario.pods)
        .step_by(scenario.services.max(1) as usize)
        .take(100)
        .map(|pod| {
            json!({
                "addresses": [pod_ip(scenario, pod)],
                "conditions": {"ready": true},
                "nodeName": node_name(scenario.node_of_pod(pod)),
                "targetRef": {"kind": "Pod", "name": pod_name(pod), "namespace": scenario.namespace_of(pod)},
            })
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("svc-{service}-seed"), "namespace": scenario.namespace_of(service),
                     "labels": {"kubernetes.io/service-name": format!("svc-{service}")}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    })
}

/// The name of NetworkPolicy number `policy`.
pub fn policy_name(policy: u32) -> String {
    format!("np-{policy}")
}

/// NetworkPolicy number `policy`, allowing `port` from one role to one app.
pub fn network_policy(scenario: &Scenario, policy: u32, port: u16, stamp: Option<i128>) -> Value {
    let service = policy % scenario.services;
    let mut value = json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": policy_name(policy), "namespace": scenario.namespace_of(policy)},
        "spec": {
            "podSelector": {"matchLabels": {"app": format!("svc-{service}")}},
            "policyTypes": ["Ingress"],
            "ingress": [{
                "from": [{"podSelector": {"matchLabels": {"role": format!("role-{}", policy % 5)}}}],
                "ports": [{"protocol": "TCP", "port": port}],
            }],
        },
    });
    if let Some(stamp) = stamp {
        value["metadata"]["annotations"] = json!({STAMP_ANNOTATION: stamp.to_string()});
    }
    value
}

/// Finds the stamp in a projected object's canonical JSON without parsing it all.
pub fn find_stamp(value: &[u8]) -> Option<i128> {
    const NEEDLE: &[u8] = b"\"loadtest.cattail.dev/written-at\":\"";
    let start = value.windows(NEEDLE.len()).position(|w| w == NEEDLE)? + NEEDLE.len();
    let digits = &value[start..];
    let end = digits.iter().position(|b| *b == b'"')?;
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::ScenarioName;

    #[test]
    fn pod_ips_are_unique_and_inside_their_node_cidr() {
        let s = Scenario::named(ScenarioName::Medium);
        let mut seen = std::collections::HashSet::new();
        for pod in 0..s.pods {
            let ip = pod_ip(&s, pod);
            let cidr = pod_cidr(s.node_of_pod(pod));
            assert!(ip.starts_with(cidr.trim_end_matches("0/24")), "{ip} {cidr}");
            assert!(seen.insert(ip));
        }
    }

    #[test]
    fn the_stamp_is_found_in_canonical_json() {
        let value = pod(
            &Scenario::sized(2, 4, 2, 1),
            3,
            None,
            Some(1_700_000_000_123_456_789),
        );
        let bytes = serde_json::to_vec(&value).unwrap();
        assert_eq!(find_stamp(&bytes), Some(1_700_000_000_123_456_789));
        assert_eq!(find_stamp(br#"{"metadata":{}}"#), None);
    }

    #[test]
    fn endpoint_slices_list_the_pods_of_their_service() {
        let s = Scenario::named(ScenarioName::Small);
        let slice = endpoint_slice(&s, 7);
        let endpoints = slice["endpoints"].as_array().unwrap();
        assert_eq!(endpoints.len(), 10);
        assert_eq!(endpoints[0]["targetRef"]["name"], "pod-7");
    }
}

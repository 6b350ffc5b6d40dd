//! Scenario sizes: the small, medium and large clusters of DESIGN.md's benchmark table.
//!
//! A scenario is pure data. Derived counts (namespaces, services, policies) follow fixed ratios so
//! that every object a generator names exists, and services are a multiple of namespaces so a
//! service and the pods it selects share a namespace.

use std::fmt;
use std::str::FromStr;

/// The named sizes a run can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScenarioName {
    /// 50 nodes, 1,500 pods, 50 agents, 20 writes/s.
    Small,
    /// 1,000 nodes, 30,000 pods, 1,000 agents, 100 writes/s.
    Medium,
    /// 5,000 nodes, 150,000 pods, 5,000 agents, 100 writes/s.
    Large,
}

impl FromStr for ScenarioName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "small" => Ok(Self::Small),
            "medium" => Ok(Self::Medium),
            "large" => Ok(Self::Large),
            other => Err(format!(
                "unknown scenario {other:?}: use small, medium or large"
            )),
        }
    }
}

impl fmt::Display for ScenarioName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Small => "small",
            Self::Medium => "medium",
            Self::Large => "large",
        })
    }
}

/// The size of a synthetic cluster and of the load put on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Scenario {
    /// Node objects.
    pub nodes: u32,
    /// Pods, spread round-robin over the nodes.
    pub pods: u32,
    /// Agents, one per node (node `i % nodes`).
    pub agents: u32,
    /// Churn writes per second.
    pub writes_per_sec: u32,
    /// Namespaces the pods are spread over.
    pub namespaces: u32,
    /// Headless services, each with one EndpointSlice; a multiple of `namespaces`.
    pub services: u32,
    /// NetworkPolicies.
    pub policies: u32,
}

impl Scenario {
    /// The scenario of DESIGN.md's table.
    pub fn named(name: ScenarioName) -> Self {
        match name {
            ScenarioName::Small => Self::sized(50, 1_500, 50, 20),
            ScenarioName::Medium => Self::sized(1_000, 30_000, 1_000, 100),
            ScenarioName::Large => Self::sized(5_000, 150_000, 5_000, 100),
        }
    }

    /// A scenario of any size, with the derived counts filled in: one namespace per 300 pods
    /// (at least 2), one service per 10 pods rounded up to a multiple of the namespaces, and one
    /// policy per 20 pods (at least 1).
    pub fn sized(nodes: u32, pods: u32, agents: u32, writes_per_sec: u32) -> Self {
        let nodes = nodes.max(1);
        let namespaces = (pods / 300).max(2);
        let services = (pods / 10).max(1).div_ceil(namespaces) * namespaces;
        let policies = (pods / 20).max(1);
        Self {
            nodes,
            pods,
            agents,
            writes_per_sec,
            namespaces,
            services,
            policies,
        }
    }

    /// Every object the seed writes (status patches not counted).
    pub fn objects(&self) -> u64 {
        u64::from(self.nodes)
            + u64::from(self.pods)
            + u64::from(self.namespaces)
            + 2 * u64::from(self.services)
            + u64::from(self.policies)
    }

    /// The namespace of pod, service or policy number `index`.
    pub fn namespace_of(&self, index: u32) -> String {
        namespace_name(index % self.namespaces)
    }

    /// The node pod number `pod` runs on.
    pub fn node_of_pod(&self, pod: u32) -> u32 {
        pod % self.nodes
    }

    /// The service whose selector matches pod number `pod`.
    pub fn service_of_pod(&self, pod: u32) -> u32 {
        pod % self.services
    }
}

/// The name of namespace number `index`.
pub fn namespace_name(index: u32) -> String {
    format!("lt-{index}")
}

/// The name of node number `index`.
pub fn node_name(index: u32) -> String {
    format!("node-{index}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_scenarios_match_the_design_table() {
        let small = Scenario::named(ScenarioName::Small);
        assert_eq!(
            (small.nodes, small.pods, small.agents, small.writes_per_sec),
            (50, 1_500, 50, 20)
        );
        let medium = Scenario::named(ScenarioName::Medium);
        assert_eq!(
            (
                medium.nodes,
                medium.pods,
                medium.agents,
                medium.writes_per_sec
            ),
            (1_000, 30_000, 1_000, 100)
        );
        let large = Scenario::named(ScenarioName::Large);
        assert_eq!(
            (large.nodes, large.pods, large.agents),
            (5_000, 150_000, 5_000)
        );
    }

    #[test]
    fn a_service_shares_the_namespace_of_the_pods_it_selects() {
        for s in [
            Scenario::named(ScenarioName::Small),
            Scenario::named(ScenarioName::Medium),
            Scenario::sized(3, 7, 3, 1),
        ] {
            assert_eq!(s.services % s.namespaces, 0, "{s:?}");
            for pod in 0..s.pods.min(5_000) {
                assert_eq!(s.namespace_of(pod), s.namespace_of(s.service_of_pod(pod)));
            }
        }
    }

    #[test]
    fn names_parse_and_print() {
        for name in [
            ScenarioName::Small,
            ScenarioName::Medium,
            ScenarioName::Large,
        ] {
            assert_eq!(name.to_string().parse::<ScenarioName>(), Ok(name));
        }
        assert!("huge".parse::<ScenarioName>().is_err());
    }

    #[test]
    fn object_count_adds_up() {
        let s = Scenario::named(ScenarioName::Small);
        assert_eq!(s.objects(), 50 + 1_500 + 5 + 2 * 150 + 75);
    }
}

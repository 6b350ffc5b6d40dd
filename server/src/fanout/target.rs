//! The connection target: how many agents this replica takes before it turns new ones away at
//! the handshake with `RESOURCE_EXHAUSTED` and the replicas to try instead.
//!
//! Fixed (`fanout.max_agents`), or computed: the expected fleet (the nodes in the store times
//! `fanout.agents_per_node`) shared over the ready replicas (this one and those of its
//! EndpointSlices), plus `fanout.target_slack_percent` of headroom, so the targets add up to
//! more than the fleet and a rolling update or a replica lost still finds room. Neither set:
//! no target, since a wrong guess of the fleet would turn agents away everywhere. A replica
//! with no other ready replica never refuses: an agent always has somewhere to go.

/// The connection target, if there is one: `max_agents` when it is set (not 0); otherwise,
/// once both are known, `ceil(expected × (100 + slack_percent) / (100 × replicas))`, at least
/// 1, where `expected` is the expected fleet (nodes × agents per node).
pub fn agent_target(
    max_agents: usize,
    expected: Option<usize>,
    ready_replicas: Option<usize>,
    slack_percent: u32,
) -> Option<usize> {
    if max_agents > 0 {
        return Some(max_agents);
    }
    let (expected, replicas) = (expected?, ready_replicas?.max(1));
    let scaled = u128::from(expected as u64) * (100 + u128::from(slack_percent));
    let target = scaled.div_ceil(100 * replicas as u128);
    Some(usize::try_from(target).unwrap_or(usize::MAX).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_target_wins_and_a_computed_one_shares_the_nodes_with_headroom() {
        assert_eq!(agent_target(50, Some(1000), Some(3), 20), Some(50));
        // 1,000 nodes over 3 replicas with 20 % headroom: ceil(400) = 400 each, 1,200 in all.
        assert_eq!(agent_target(0, Some(1000), Some(3), 20), Some(400));
        // Rounded up, so the targets always add up to at least the nodes.
        assert_eq!(agent_target(0, Some(10), Some(3), 0), Some(4));
        assert_eq!(agent_target(0, Some(5000), Some(1), 10), Some(5500));
        // An empty cluster still takes an agent.
        assert_eq!(agent_target(0, Some(0), Some(2), 20), Some(1));
        // Nodes not served, or replicas not known: no target.
        assert_eq!(agent_target(0, None, Some(3), 20), None);
        assert_eq!(agent_target(0, Some(1000), None, 20), None);
        // No overflow at the edges.
        assert_eq!(
            agent_target(0, Some(usize::MAX), Some(1), 1000),
            Some(usize::MAX)
        );
    }

    fn agent() -> crate::fanout::AgentInfo {
        crate::fanout::AgentInfo {
            node: "node-a".into(),
            agent_id: "a".into(),
            version: "1".into(),
            transport: "native",
            resume_mode: "snapshot",
            connected_since: std::time::SystemTime::now(),
        }
    }

    #[test]
    fn over_the_target_an_agent_is_refused_only_when_another_replica_is_ready() {
        use crate::fanout::FanoutConfig;
        use crate::fanout::tests::Fixture;
        let fixed = Fixture::new(FanoutConfig {
            max_agents: 1,
            ..FanoutConfig::default()
        });
        let hub = &fixed.hub;
        assert_eq!(hub.over_target(), None, "under the target");
        let _first = hub.join_fleet(agent());
        assert_eq!(
            hub.over_target(),
            None,
            "at the target, but nowhere else to go"
        );
        hub.set_try_endpoints(&[], 0);
        assert_eq!(hub.over_target(), None, "no other replica is ready");
        hub.set_try_endpoints(&["10.0.0.2:5473".into()], 1);
        assert_eq!(hub.over_target(), Some(1));
        // Without a fixed target or agents per node, there is no target.
        let computed = Fixture::new(FanoutConfig::default());
        computed.hub.set_try_endpoints(&["10.0.0.2:5473".into()], 1);
        let _agent = computed.hub.join_fleet(agent());
        assert_eq!(computed.hub.agent_target(), None);
        assert_eq!(computed.hub.over_target(), None);
        // Agents per node, but no `v1/nodes` in this store: still none.
        let no_nodes = Fixture::new(FanoutConfig {
            agents_per_node: 1,
            ..FanoutConfig::default()
        });
        no_nodes.hub.set_try_endpoints(&["10.0.0.2:5473".into()], 1);
        assert_eq!(no_nodes.hub.agent_target(), None);
    }
}

//! netpol-agent: an example cattail agent that does a real job. For its node it computes, as
//! Calico's Felix does, which NetworkPolicies apply to the node's pods and the IP set of every
//! peer (`from` / `to` entry) of those policies, and keeps them current from watch deltas.
//!
//! Layers, lowest first: [`policy`] compiles a NetworkPolicy (selectors, CIDRs, with the API
//! server's checks); [`ipsets`] is the pure computation of a node's [`ipsets::NodeState`];
//! [`changes`] diffs two states into the JSON lines the agent prints; [`agent`] runs the
//! watchers, on a cattail server or directly on the API server, with the same code.

pub mod agent;
pub mod changes;
pub mod ipsets;
pub mod policy;

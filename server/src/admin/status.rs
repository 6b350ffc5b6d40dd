//! [`StatusSource`] and [`Status`]: what `/status` shows, made on request from the hub and the
//! watches' health, and the fleet gauges refreshed at each scrape.
//!
//! A status is made fresh per request (no cache): the hub's counters, one walk of the
//! connected agents, and at most [`crate::fanout::MAX_SLOWEST`] agent rows.

use std::sync::Arc;

use crate::fanout::{FleetReport, Hub};
use crate::k8s::watch::WatchHealth;

/// Where `/status` and the fleet gauges come from.
#[derive(Clone)]
pub struct StatusSource {
    hub: Hub,
    watches: Arc<[(String, Arc<WatchHealth>)]>,
}

impl StatusSource {
    /// The status of `hub`, with the health of each resource's watch (none in tests that feed
    /// the hub themselves).
    pub fn new(hub: Hub, watches: Vec<(String, Arc<WatchHealth>)>) -> Self {
        Self {
            hub,
            watches: watches.into(),
        }
    }

    /// The status now, listing the `top` slowest agents; `in_sync` is the replica's flag.
    pub fn status(&self, in_sync: bool, top: usize) -> Status {
        let mut replica = match self.hub.status() {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        let watches: serde_json::Map<String, serde_json::Value> = self
            .watches
            .iter()
            .map(|(name, health)| {
                (
                    name.clone(),
                    serde_json::json!({"connected": health.is_connected()}),
                )
            })
            .collect();
        replica.insert("watches".into(), watches.into());
        let text = if in_sync {
            "InSync"
        } else {
            "WaitingForDatastore"
        };
        replica.insert("syncStatus".into(), text.into());
        Status {
            replica,
            fleet: self.hub.fleet_report(top),
        }
    }

    /// Whether the replica is draining (shutting down): it is then not ready.
    pub fn is_draining(&self) -> bool {
        self.hub.is_draining()
    }

    /// Sets the fleet gauges (`cattail_agents_at_head`, `cattail_agent_oldest_lag_seconds`).
    pub fn refresh_metrics(&self) {
        self.hub.refresh_fleet_metrics();
    }
}

/// What `/status` shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// The replica: `server_id`, `syncStatus`, `epoch`, `head`, `connected_agents`, `log`,
    /// `resources`, `watches` and the hub's counters (see docs/OPERATIONS.md).
    pub replica: serde_json::Map<String, serde_json::Value>,
    /// The agents by lag, and the slowest of them.
    pub fleet: FleetReport,
}

impl Status {
    /// The JSON form: the replica's fields at the top level (as before the fleet view), and
    /// `fleet`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut map = self.replica.clone();
        let fleet = serde_json::to_value(&self.fleet).unwrap_or(serde_json::Value::Null);
        map.insert("fleet".into(), fleet);
        serde_json::Value::Object(map)
    }

    /// The replica's field `key` as text ("" if absent).
    pub fn field(&self, key: &str) -> String {
        match self.replica.get(key) {
            None | Some(serde_json::Value::Null) => String::new(),
            Some(serde_json::Value::String(text)) => text.clone(),
            Some(value) => value.to_string(),
        }
    }
}

//! The `/status` page: one server-rendered HTML document with a little inline CSS, no script
//! and no external asset, so it works offline and behind any proxy.
//!
//! Node names, agent ids and versions come from agents' Hellos: maud escapes every value
//! interpolated into the page, so none of them can add markup. The page lists at most the
//! report's rows, so its size is bounded whatever the number of agents.

use maud::{DOCTYPE, Markup, html};

use crate::fanout::NEAR_LAG;

use super::status::Status;

const STYLE: &str = "
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1d2330;background:#f7f8fa}
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.4em 0 .5em}
.muted{color:#667}.ok{color:#137333;font-weight:600}.bad{color:#b3261e;font-weight:600}
table{border-collapse:collapse;background:#fff;box-shadow:0 1px 2px #0002}
th,td{padding:.3em .7em;text-align:left;border-bottom:1px solid #e3e6ea;white-space:nowrap}
th{background:#eef1f5;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.cards{display:flex;gap:1em}.card{background:#fff;padding:.7em 1.2em;box-shadow:0 1px 2px #0002;
border-top:4px solid var(--c)}.card b{display:block;font-size:1.8em}
.bar{display:flex;height:12px;width:40em;max-width:100%;margin:.8em 0;background:#e3e6ea}
.bar span{display:block;height:100%}
";

const AT_HEAD: &str = "#1e8e3e";
const NEAR: &str = "#f9ab00";
const FAR: &str = "#d93025";

/// The page for `status`.
pub(super) fn render(status: &Status) -> Markup {
    let fleet = &status.fleet;
    let lag = &fleet.lag;
    let in_sync = status.field("syncStatus") == "InSync";
    let share = |n: usize| {
        if fleet.agents == 0 {
            0.0
        } else {
            n as f64 * 100.0 / fleet.agents as f64
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "cattail " (status.field("server_id")) }
                style { (STYLE) }
            }
            body {
                h1 { "cattail " span.muted { (status.field("server_id")) } }
                p {
                    span #sync-status class=(if in_sync { "ok" } else { "bad" }) {
                        (status.field("syncStatus"))
                    }
                    " · head revision " b #head { (status.field("head")) }
                    " · epoch " code { (status.field("epoch")) }
                }
                h2 { "Replica" }
                (replica(status))
                h2 { "Agents by lag" }
                div.cards {
                    div.card style={ "--c:" (AT_HEAD) } {
                        b #at-head { (lag.at_head) } "at the head"
                    }
                    div.card style={ "--c:" (NEAR) } {
                        b #behind-near { (lag.behind_1_to_10) } "1 to " (NEAR_LAG) " revisions behind"
                    }
                    div.card style={ "--c:" (FAR) } {
                        b #behind-far { (lag.behind_more) } "more than " (NEAR_LAG) " behind"
                    }
                    div.card style="--c:#5f6368" {
                        b #oldest-lag { (format!("{:.1}", fleet.oldest_lag_seconds)) }
                        "seconds: the oldest lag"
                    }
                }
                div.bar title="agents by lag" {
                    span style={ "width:" (share(lag.at_head)) "%;background:" (AT_HEAD) } {}
                    span style={ "width:" (share(lag.behind_1_to_10)) "%;background:" (NEAR) } {}
                    span style={ "width:" (share(lag.behind_more)) "%;background:" (FAR) } {}
                }
                p.muted {
                    span #agent-count { (fleet.agents) } " agents connected; lag is the head minus "
                    "the revision an agent acked (or, if it never acks, the revision written to it)."
                }
                h2 { "Slowest agents" }
                (slowest(status))
                p.muted {
                    "The same data as JSON: " code { "Accept: application/json" } " or "
                    a href="?format=json" { "?format=json" } "; " code { "?top=N" }
                    " lists up to N of the slowest agents."
                }
            }
        }
    }
}

fn replica(status: &Status) -> Markup {
    let log = status.replica.get("log");
    let log_field = |key: &str| {
        log.and_then(|log| log.get(key))
            .map_or_else(String::new, |value| value.to_string())
    };
    let watches = status
        .replica
        .get("watches")
        .and_then(serde_json::Value::as_object);
    html! {
        table #replica {
            tr { th { "Server id" } td { (status.field("server_id")) } }
            tr { th { "Sync status" } td { (status.field("syncStatus")) } }
            tr { th { "Head revision" } td.num { (status.field("head")) } }
            tr { th { "Epoch" } td { code { (status.field("epoch")) } } }
            tr { th { "Connected agents" } td.num { (status.field("connected_agents")) } }
            tr {
                th { "Log" }
                td {
                    (log_field("batches")) " batches, " (log_field("bytes")) " bytes, oldest revision "
                    (log_field("oldest"))
                }
            }
            @if let Some(watches) = watches {
                @for (resource, health) in watches {
                    @let connected = health.get("connected").and_then(serde_json::Value::as_bool);
                    tr {
                        th { "Watch " code { (resource) } }
                        td class=(if connected == Some(true) { "ok" } else { "bad" }) {
                            (if connected == Some(true) { "connected" } else { "disconnected" })
                        }
                    }
                }
            }
        }
    }
}

fn slowest(status: &Status) -> Markup {
    let fleet = &status.fleet;
    html! {
        @if fleet.slowest.is_empty() {
            p #no-agents { "No agent is connected." }
        } @else {
            p.muted { "The " (fleet.slowest.len()) " slowest of " (fleet.agents) ", slowest first." }
            table #slowest {
                thead {
                    tr {
                        th { "Node" } th { "Agent id" } th { "Version" } th { "Transport" }
                        th { "Resume mode" } th { "Acked revision" } th { "Lag (revisions)" }
                        th { "Lag (s)" } th { "Bytes sent" } th { "Connected since" }
                    }
                }
                tbody {
                    @for row in &fleet.slowest {
                        tr.agent data-lag=(row.lag_revisions) {
                            td { (row.node) }
                            td.agent-id { (row.agent_id) }
                            td { (row.version) }
                            td { (row.transport) }
                            td { (row.resume_mode) }
                            td.num {
                                @match row.acked_revision {
                                    Some(revision) => (revision),
                                    None => span.muted title="never acked" { "—" },
                                }
                            }
                            td.num { (row.lag_revisions) }
                            td.num { (format!("{:.1}", row.lag_seconds)) }
                            td.num { (row.bytes_sent) }
                            td { (row.connected_since) }
                        }
                    }
                }
            }
        }
    }
}

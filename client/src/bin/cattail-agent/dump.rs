//! `cattail-agent dump`: one consistent snapshot of the subscribed resources, as JSON lines.
//!
//! The snapshot is taken at the first `Synced`, when every subscription has sent `InitDone`.
//! Lines are sorted by (resource, namespace, name); each holds the projected object exactly as
//! the server sent it. Failing to sync within the timeout, or a refused `Hello`, exits non-zero.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::Context;
use cattail_client::{Event, ProjectedObject, SubscriptionEvent};
use futures::StreamExt;

use crate::args::DumpArgs;

/// The objects seen so far, and how many subscriptions finished their first sync.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    objects: BTreeMap<(String, String, String), ProjectedObject>,
    synced: usize,
}

impl Snapshot {
    /// Takes one event into the snapshot.
    pub(crate) fn apply(&mut self, tagged: SubscriptionEvent) {
        let resource = tagged.resource.to_string();
        match tagged.event {
            Event::Init => self.objects.retain(|(r, _, _), _| *r != resource),
            Event::InitApply(object) | Event::Apply(object) => {
                let key = (resource, object.namespace.clone(), object.name.clone());
                self.objects.insert(key, object);
            }
            Event::Delete(object) => {
                self.objects
                    .remove(&(resource, object.namespace, object.name));
            }
            Event::InitDone => self.synced += 1,
        }
    }

    /// How many subscriptions have finished their first sync.
    pub(crate) fn synced(&self) -> usize {
        self.synced
    }

    /// Writes one JSON line per object, sorted by (resource, namespace, name).
    pub(crate) fn write_lines(&self, out: &mut impl Write) -> anyhow::Result<()> {
        for ((resource, namespace, name), object) in &self.objects {
            // The value is written verbatim, after checking that it is one JSON value.
            serde_json::from_slice::<serde::de::IgnoredAny>(&object.value)
                .with_context(|| format!("{resource} {namespace}/{name} is not valid JSON"))?;
            write!(
                out,
                "{{\"resource\":{},\"namespace\":{},\"name\":{},\"value\":",
                serde_json::to_string(resource)?,
                serde_json::to_string(namespace)?,
                serde_json::to_string(name)?,
            )?;
            out.write_all(&object.value)?;
            out.write_all(b"}\n")?;
        }
        Ok(())
    }
}

pub(crate) async fn dump(args: DumpArgs) -> anyhow::Result<()> {
    let subscriptions = args.stream.subscriptions()?;
    let client = args.stream.client()?;
    let mut events = client.subscribe(&subscriptions)?;
    let mut snapshot = Snapshot::default();
    let mut last_error = None;
    let deadline = tokio::time::sleep(args.timeout);
    tokio::pin!(deadline);
    while snapshot.synced() < subscriptions.len() {
        tokio::select! {
            () = &mut deadline => {
                let why = last_error.map_or_else(
                    || "no error was reported".to_owned(),
                    |error: cattail_client::connection::Error| format!("last error: {error}"),
                );
                anyhow::bail!(
                    "timed out after {} waiting for the first sync from {}; {why}",
                    humantime::format_duration(args.timeout),
                    args.stream.servers.join(", "),
                );
            }
            item = events.next() => match item {
                Some(Ok(tagged)) => snapshot.apply(tagged),
                Some(Err(error)) if error.is_refused_hello() || error.is_fatal() => {
                    anyhow::bail!("the agent was refused: {error}");
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, "stream failed; retrying");
                    last_error = Some(error);
                }
                None => anyhow::bail!("the event stream ended before the first sync"),
            },
        }
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    snapshot.write_lines(&mut out)?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use bytes::Bytes;

    use super::*;

    fn tagged(resource: &str, event: Event<ProjectedObject>) -> SubscriptionEvent {
        SubscriptionEvent {
            resource: resource.into(),
            event,
        }
    }

    fn object(namespace: &str, name: &str, value: &str) -> ProjectedObject {
        ProjectedObject {
            namespace: namespace.into(),
            name: name.into(),
            value: Bytes::copy_from_slice(value.as_bytes()),
            resource_version: "1".into(),
        }
    }

    #[test]
    fn lines_are_sorted_and_carry_the_value_verbatim() {
        let mut snapshot = Snapshot::default();
        for event in [
            tagged("v1/pods", Event::Init),
            tagged(
                "v1/pods",
                Event::InitApply(object("default", "web-1", r#"{"b":1,"a":2}"#)),
            ),
            tagged(
                "v1/pods",
                Event::InitApply(object("default", "web-0", "{}")),
            ),
            tagged("v1/pods", Event::InitDone),
            tagged("v1/nodes", Event::Init),
            tagged("v1/nodes", Event::InitApply(object("", "n\"1", "{}"))),
            tagged("v1/nodes", Event::InitDone),
        ] {
            snapshot.apply(event);
        }
        assert_eq!(snapshot.synced(), 2);
        let mut out = Vec::new();
        snapshot.write_lines(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                r#"{"resource":"v1/nodes","namespace":"","name":"n\"1","value":{}}"#,
                r#"{"resource":"v1/pods","namespace":"default","name":"web-0","value":{}}"#,
                r#"{"resource":"v1/pods","namespace":"default","name":"web-1","value":{"b":1,"a":2}}"#,
            ]
        );
        for line in lines {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
    }

    #[test]
    fn deletes_remove_and_invalid_json_is_an_error() {
        let mut snapshot = Snapshot::default();
        snapshot.apply(tagged("v1/pods", Event::Apply(object("a", "x", "{}"))));
        snapshot.apply(tagged("v1/pods", Event::Delete(object("a", "x", "{}"))));
        let mut out = Vec::new();
        snapshot.write_lines(&mut out).unwrap();
        assert!(out.is_empty());
        snapshot.apply(tagged("v1/pods", Event::Apply(object("a", "y", "{oops"))));
        assert!(snapshot.write_lines(&mut Vec::new()).is_err());
    }
}

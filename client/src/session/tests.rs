//! Session tests: hand-built `ServerMessage`s in, events, acks, caches and digests out.

use cattail_proto::Revision;
use cattail_proto::frame::{FrameHeader, encode_frame};
use cattail_proto::pb::{Encoding, FramePayload, ObjectKey as PbKey, ResumeMode, Upsert};
use prost::Message;

use super::*;
use crate::subscription::ResolvedSubscription;

mod flows;

pub(crate) const PODS: &str = "v1/pods";
pub(crate) const NODES: &str = "v1/nodes";
pub(crate) const NODE: &str = "node-a";
pub(crate) const BUCKETS: u32 = 16;

pub(crate) fn epoch(n: u128) -> Epoch {
    Epoch::from(n)
}

/// A session subscribed to node-scoped pods and all nodes.
pub(crate) fn session() -> Session {
    Session::new(SessionConfig {
        agent_id: "agent-1".into(),
        node_name: NODE.into(),
        agent_version: "test".into(),
        subscriptions: vec![
            ResolvedSubscription::new(PODS.parse().unwrap()).node_scoped(),
            ResolvedSubscription::new(NODES.parse().unwrap()),
        ],
        max_payload_bytes: 1 << 20,
    })
    .unwrap()
}

pub(crate) fn welcome(epoch: Epoch, mode: ResumeMode, head: u64) -> ServerMessage {
    ServerMessage {
        welcome: Some(pb::Welcome {
            protocol_version: 1,
            server_id: "server-0".into(),
            epoch: epoch.to_bytes(),
            head_revision: head,
            resources: [(PODS, "spec.nodeName"), (NODES, "")]
                .into_iter()
                .map(|(resource, scope_field)| pb::ResourceInfo {
                    resource: resource.into(),
                    fingerprint: 0xfeed,
                    scope_field: scope_field.into(),
                    digest_buckets: BUCKETS,
                })
                .collect(),
            limits: Some(cattail_proto::default_limits()),
            resume_mode: mode as i32,
        }),
        ..ServerMessage::default()
    }
}

/// A frame's contents before encoding.
#[derive(Clone, Default)]
pub(crate) struct FrameSpec {
    pub(crate) resource: &'static str,
    pub(crate) revision: u64,
    pub(crate) replace: bool,
    pub(crate) buckets: Vec<u32>,
    pub(crate) upserts: Vec<(&'static str, String)>,
    pub(crate) deletes: Vec<&'static str>,
}

impl FrameSpec {
    pub(crate) fn delta(resource: &'static str, revision: u64) -> Self {
        FrameSpec {
            resource,
            revision,
            ..FrameSpec::default()
        }
    }

    pub(crate) fn replace(resource: &'static str, revision: u64) -> Self {
        FrameSpec {
            replace: true,
            ..FrameSpec::delta(resource, revision)
        }
    }

    /// Upserts `name` (in namespace `default` for pods) with value `{"v":<version>}`.
    pub(crate) fn put(mut self, name: &'static str, version: u32) -> Self {
        self.upserts.push((name, format!(r#"{{"v":{version}}}"#)));
        self
    }

    /// Upserts `name` with exactly `value`.
    pub(crate) fn put_value(mut self, name: &'static str, value: &str) -> Self {
        self.upserts.push((name, value.to_owned()));
        self
    }

    pub(crate) fn del(mut self, name: &'static str) -> Self {
        self.deletes.push(name);
        self
    }

    pub(crate) fn buckets(mut self, buckets: &[u32]) -> Self {
        self.buckets = buckets.to_vec();
        self
    }

    pub(crate) fn encode(&self) -> pb::Frame {
        let (namespace, scope) = namespace_and_scope(self.resource);
        let payload = FramePayload {
            upserts: (self.upserts.iter())
                .map(|(name, value)| Upsert {
                    namespace: namespace.into(),
                    name: (*name).into(),
                    value: Bytes::from(value.clone()),
                    resource_version: self.revision.to_string(),
                })
                .collect(),
            deletes: (self.deletes.iter())
                .map(|name| PbKey {
                    namespace: namespace.into(),
                    name: (*name).into(),
                })
                .collect(),
        };
        let header = FrameHeader {
            revision: self.revision,
            resource: self.resource.into(),
            scope: scope.into(),
            replace: self.replace,
            publish_time_unix_nanos: 1,
            replaced_buckets: self.buckets.clone(),
        };
        // Alternate encodings so both decoding paths are exercised.
        let encoding = if self.revision.is_multiple_of(2) {
            Encoding::ProtoZstd
        } else {
            Encoding::Proto
        };
        encode_frame(header, &payload, encoding, 1).unwrap()
    }
}

/// Pods live in `default` and are scoped to [`NODE`]; nodes are cluster scoped and unscoped.
pub(crate) fn namespace_and_scope(resource: &str) -> (&'static str, &'static str) {
    if resource == PODS {
        ("default", NODE)
    } else {
        ("", "")
    }
}

pub(crate) fn frames(specs: &[FrameSpec]) -> ServerMessage {
    ServerMessage {
        frames: specs.iter().map(FrameSpec::encode).collect(),
        ..ServerMessage::default()
    }
}

pub(crate) fn synced(revision: u64) -> ServerMessage {
    ServerMessage {
        synced: Some(pb::Synced { revision }),
        ..ServerMessage::default()
    }
}

pub(crate) fn heartbeat(head_revision: u64) -> ServerMessage {
    ServerMessage {
        heartbeat: Some(pb::Heartbeat {
            head_revision,
            server_time_unix_nanos: 0,
        }),
        ..ServerMessage::default()
    }
}

/// Merges messages the way concatenated encodings merge on the wire.
pub(crate) fn join(messages: Vec<ServerMessage>) -> ServerMessage {
    let mut bytes = Vec::new();
    for message in messages {
        bytes.extend(message.encode_to_vec());
    }
    ServerMessage::decode(bytes.as_slice()).unwrap()
}

/// Events as compact strings: `"v1/pods init"`, `"v1/pods apply web {\"v\":1}"`, ...
pub(crate) fn describe(applied: &Applied) -> Vec<String> {
    applied
        .events
        .iter()
        .map(|tagged| {
            let (kind, object) = match &tagged.event {
                Event::Init => ("init", None),
                Event::InitApply(object) => ("init-apply", Some(object)),
                Event::InitDone => ("init-done", None),
                Event::Apply(object) => ("apply", Some(object)),
                Event::Delete(object) => ("delete", Some(object)),
            };
            match object {
                Some(object) => format!(
                    "{} {kind} {} {}",
                    tagged.resource,
                    object.name,
                    String::from_utf8_lossy(&object.value)
                ),
                None => format!("{} {kind}", tagged.resource),
            }
        })
        .collect()
}

/// Asserts every digest equals one recomputed from the cache.
pub(crate) fn assert_digests_consistent(session: &Session) {
    for subscription in &session.subscriptions {
        let digest = subscription.cache.digest();
        let recomputed = subscription
            .cache
            .compute_digest(digest.bucket_count())
            .unwrap();
        assert_eq!(
            digest, &recomputed,
            "digest of {} drifted",
            subscription.resource
        );
    }
}

/// A session that received a snapshot at revision 10 from `epoch(1)`: pods web-0 and web-1,
/// node n1.
pub(crate) fn synced_session() -> Session {
    let mut session = session();
    session.begin_stream();
    session
        .apply(join(vec![
            welcome(epoch(1), ResumeMode::Snapshot, 10),
            frames(&[
                FrameSpec::replace(PODS, 10).put("web-0", 1).put("web-1", 1),
                FrameSpec::replace(NODES, 10).put("n1", 1),
            ]),
            synced(10),
        ]))
        .unwrap();
    session
}

#[test]
fn configuration_errors_are_reported() {
    let config = |subscriptions: Vec<ResolvedSubscription>, node: &str| SessionConfig {
        agent_id: "a".into(),
        node_name: node.into(),
        agent_version: String::new(),
        subscriptions,
        max_payload_bytes: 1024,
    };
    let pods = || ResolvedSubscription::new(PODS.parse().unwrap());
    assert!(matches!(
        Session::new(config(vec![], NODE)),
        Err(Error::NoSubscriptions)
    ));
    assert!(matches!(
        Session::new(config(vec![pods(), pods().node_scoped()], NODE)),
        Err(Error::DuplicateSubscription { .. })
    ));
    assert!(matches!(
        Session::new(config(vec![pods().node_scoped()], "")),
        Err(Error::NodeNameRequired { .. })
    ));
}

#[test]
fn the_first_hello_has_no_resume_and_accepts_zstd() {
    let mut session = session();
    let hello = session.begin_stream();
    assert_eq!(hello.protocol_version, 1);
    assert_eq!(hello.agent_id, "agent-1");
    assert_eq!(hello.node_name, NODE);
    assert_eq!(hello.resume, None);
    assert_eq!(
        hello.accepted_encodings,
        [Encoding::ProtoZstd as i32, Encoding::Proto as i32]
    );
    let subscriptions: Vec<(String, bool)> = (hello.subscriptions.iter())
        .map(|s| (s.resource.clone(), s.node_scoped))
        .collect();
    assert_eq!(
        subscriptions,
        [(PODS.to_owned(), true), (NODES.to_owned(), false)]
    );
    cattail_proto::hello::validate_hello(&hello, 64).unwrap();
}

#[test]
fn the_first_sync_emits_init_init_apply_and_init_done_per_subscription() {
    let mut session = session();
    session.begin_stream();
    let applied = session
        .apply(welcome(epoch(1), ResumeMode::Snapshot, 10))
        .unwrap();
    assert!(applied.events.is_empty());
    assert_eq!(applied.ack, None);
    let applied = session
        .apply(frames(&[FrameSpec::replace(PODS, 10)
            .put("web-1", 1)
            .put("web-0", 1)]))
        .unwrap();
    assert!(applied.events.is_empty(), "replace frames wait for Synced");
    assert!(session.objects(PODS).is_empty(), "staged, not applied");
    let applied = session
        .apply(join(vec![
            frames(&[FrameSpec::replace(NODES, 10).put("n1", 1)]),
            synced(10),
        ]))
        .unwrap();
    assert_eq!(
        describe(&applied),
        [
            "v1/pods init",
            r#"v1/pods init-apply web-0 {"v":1}"#,
            r#"v1/pods init-apply web-1 {"v":1}"#,
            "v1/pods init-done",
            "v1/nodes init",
            r#"v1/nodes init-apply n1 {"v":1}"#,
            "v1/nodes init-done",
        ]
    );
    assert_eq!(applied.synced, Some(Revision(10)));
    assert_eq!(applied.ack, Some(Revision(10)));
    assert!(session.is_synced());
    assert_eq!(
        session.complete(),
        Some(CompletePoint {
            epoch: epoch(1),
            revision: Revision(10)
        })
    );
    assert_digests_consistent(&session);
}

#[test]
fn an_empty_resource_is_still_initialised() {
    let mut session = session();
    session.begin_stream();
    let applied = session
        .apply(join(vec![
            welcome(epoch(1), ResumeMode::Snapshot, 3),
            frames(&[FrameSpec::replace(PODS, 3).put("web-0", 1)]),
            synced(3),
        ]))
        .unwrap();
    let described = describe(&applied);
    assert!(
        described.contains(&"v1/nodes init".to_owned()),
        "{described:?}"
    );
    assert!(described.ends_with(&["v1/nodes init".into(), "v1/nodes init-done".into()]));
}

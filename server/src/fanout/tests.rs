//! Tests of the fan-out without a network: frames per scope, pieces and messages here; the log
//! cursor, resume decisions and the per-agent sender (paused time) in `tests/`.

mod deltas;
mod resume;
mod sender;
mod topics;

use bytes::Bytes;
use cattail_proto::pb::{self, Encoding, FramePayload, ServerMessage};
use prost::Message;

use crate::config::Resource;
use crate::store::{Batch, Epoch, ProjectedObject, Published, Store};

use super::batch::{EncodedBatch, scoped_payloads};
use super::encode::FrameEncoder;
use super::hello::{self, AgentHello};
use super::message::{MessageSplitter, OutgoingMessage, Piece};
use super::{FanoutConfig, Hub, ResourceInfo};

pub(super) fn pods() -> Resource {
    Resource::parse("v1/pods").unwrap()
}

pub(super) fn namespaces() -> Resource {
    Resource::parse("v1/namespaces").unwrap()
}

pub(super) fn infos() -> Vec<ResourceInfo> {
    vec![
        ResourceInfo {
            resource: pods(),
            fingerprint: 11,
            scope_field: Some("spec.nodeName".into()),
        },
        ResourceInfo {
            resource: namespaces(),
            fingerprint: 22,
            scope_field: None,
        },
    ]
}

pub(super) fn pod(name: &str, node: Option<&str>, version: u32) -> ProjectedObject {
    ProjectedObject {
        namespace: "a".into(),
        name: name.into(),
        value: Bytes::from(format!(
            r#"{{"n":"{name}","node":"{}","v":{version}}}"#,
            node.unwrap_or("")
        )),
        resource_version: version.to_string(),
        scope: node.map(str::to_owned),
    }
}

/// A store and a hub fed by it, as the writer feeds them.
pub(super) struct Fixture {
    pub(super) store: Store,
    pub(super) hub: Hub,
}

impl Fixture {
    pub(super) fn new(config: FanoutConfig) -> Self {
        let store = Store::with_epoch([pods(), namespaces()], Epoch::from_array([7; 16]));
        let hub = Hub::new(config, store.snapshot(), infos());
        hub.set_in_sync(true);
        Self { store, hub }
    }

    pub(super) fn pods(&mut self, objects: &[ProjectedObject]) -> Published {
        let mut batch = Batch::new();
        for object in objects {
            batch.apply(&pods(), object.clone());
        }
        self.commit(batch)
    }

    pub(super) fn commit(&mut self, batch: Batch) -> Published {
        let published = self.store.commit(batch).unwrap().unwrap();
        self.hub.publish(&published, self.store.snapshot());
        published
    }

    /// An accepted Hello for these subscriptions on `node`.
    pub(super) fn agent(&self, node: &str, subscriptions: &[(&str, bool)]) -> AgentHello {
        hello::accept(
            hello(node, subscriptions),
            self.hub.config(),
            self.hub.resources(),
        )
        .unwrap()
    }
}

pub(super) fn hello(node: &str, subscriptions: &[(&str, bool)]) -> pb::Hello {
    pb::Hello {
        protocol_version: 1,
        agent_id: format!("agent-{node}"),
        node_name: node.into(),
        subscriptions: subscriptions
            .iter()
            .map(|(resource, node_scoped)| pb::Subscription {
                resource: (*resource).into(),
                node_scoped: *node_scoped,
            })
            .collect(),
        accepted_encodings: vec![Encoding::ProtoZstd as i32],
        ..pb::Hello::default()
    }
}

pub(super) fn decode(message: &OutgoingMessage) -> ServerMessage {
    ServerMessage::decode(message.to_bytes()).unwrap()
}

pub(super) fn payload(frame: &pb::Frame) -> FramePayload {
    cattail_proto::frame::decode_payload(frame, 64 << 20).unwrap()
}

pub(super) fn piece_frame(piece: &Piece, encoding: Encoding) -> pb::Frame {
    let derived = std::sync::atomic::AtomicU64::new(0);
    let message = ServerMessage::decode(piece.bytes(encoding, &derived)).unwrap();
    assert_eq!(message.frames.len(), 1);
    message.frames[0].clone()
}

fn names(payload: &FramePayload) -> (Vec<&str>, Vec<&str>) {
    (
        payload.upserts.iter().map(|u| u.name.as_str()).collect(),
        payload.deletes.iter().map(|d| d.name.as_str()).collect(),
    )
}

#[test]
fn a_batch_gets_one_frame_per_resource_and_per_scope_it_touches() {
    let mut fixture = Fixture::new(FanoutConfig::default());
    let mut batch = Batch::new();
    batch.apply(&pods(), pod("p1", Some("n1"), 1));
    batch.apply(&pods(), pod("p2", Some("n2"), 1));
    batch.apply(&pods(), pod("p3", None, 1));
    batch.apply(&namespaces(), pod("ns", None, 1));
    let published = fixture.store.commit(batch).unwrap().unwrap();
    let mut encoder = FrameEncoder::new(3).unwrap();
    let resources = fixture.hub.resources().infos();
    let (encoded, stats) = EncodedBatch::encode(&published, resources, &mut encoder).unwrap();
    // pods: all, n1, n2; namespaces: all. Unscheduled p3 is in no scope.
    assert_eq!(stats.frames, 4);
    let all = payload(&piece_frame(encoded.piece(0, "").unwrap(), Encoding::Proto));
    assert_eq!(names(&all), (vec!["p1", "p2", "p3"], vec![]));
    let n1 = piece_frame(encoded.piece(0, "n1").unwrap(), Encoding::Proto);
    assert_eq!(
        (n1.scope.as_str(), n1.revision, n1.replace),
        ("n1", 1, false)
    );
    assert_eq!(names(&payload(&n1)), (vec!["p1"], vec![]));
    assert!(encoded.piece(0, "n3").is_none());
    assert!(encoded.piece(1, "").is_some());
    assert!(
        encoded.piece(1, "n1").is_none(),
        "namespaces have no scope frames"
    );
    assert!(encoded.piece(2, "").is_none());
}

#[test]
fn a_pod_moving_off_a_node_is_a_delete_for_that_node() {
    let mut fixture = Fixture::new(FanoutConfig::default());
    fixture.pods(&[pod("p1", Some("n1"), 1), pod("p2", Some("n1"), 1)]);
    let published = fixture.pods(&[pod("p1", Some("n2"), 2), pod("p2", None, 2)]);
    let payloads = scoped_payloads(published.changes(&pods()));
    let scopes: Vec<&str> = payloads.keys().copied().collect();
    assert_eq!(scopes, ["n1", "n2"]);
    assert_eq!(names(&payloads["n1"]), (vec![], vec!["p1", "p2"]));
    assert_eq!(names(&payloads["n2"]), (vec!["p1"], vec![]));
}

#[test]
fn a_compressed_piece_derives_its_plain_variant_once() {
    let mut encoder = FrameEncoder::new(3).unwrap();
    let value = Bytes::from(r#"{"labels":{"app":"web"}}"#.repeat(50));
    let payload = FramePayload {
        upserts: vec![pb::Upsert {
            name: "big".into(),
            value: value.clone(),
            ..pb::Upsert::default()
        }],
        deletes: vec![],
    };
    let header = cattail_proto::frame::FrameHeader {
        revision: 3,
        resource: "v1/pods".into(),
        ..Default::default()
    };
    let (piece, sizes) = encoder.piece(header.clone(), &payload, true).unwrap();
    assert!(sizes.stored < sizes.raw, "{sizes:?}");
    let derived = std::sync::atomic::AtomicU64::new(0);
    let zstd = ServerMessage::decode(piece.bytes(Encoding::ProtoZstd, &derived)).unwrap();
    assert_eq!(zstd.frames[0].encoding, Encoding::ProtoZstd as i32);
    for _ in 0..2 {
        let plain = ServerMessage::decode(piece.bytes(Encoding::Proto, &derived)).unwrap();
        assert_eq!(plain.frames[0].encoding, Encoding::Proto as i32);
        assert_eq!(payload_of(&plain), payload_of(&zstd));
    }
    assert_eq!(derived.load(std::sync::atomic::Ordering::Relaxed), 1);

    // A tiny payload stays plain, and every agent shares it.
    let tiny = FramePayload::default();
    let (piece, _) = encoder.piece(header, &tiny, true).unwrap();
    let bytes = piece.bytes(Encoding::Proto, &derived);
    assert_eq!(bytes, piece.bytes(Encoding::ProtoZstd, &derived));
    assert_eq!(derived.load(std::sync::atomic::Ordering::Relaxed), 1);
}

fn payload_of(message: &ServerMessage) -> FramePayload {
    payload(&message.frames[0])
}

#[test]
fn joined_pieces_decode_as_one_message_and_groups_are_never_split() {
    let piece = |n: u8| Bytes::from(vec![n; 10]);
    let mut splitter = MessageSplitter::new(25);
    splitter.control(piece(1));
    splitter.group(vec![piece(2)]);
    splitter.group(vec![piece(3), piece(4)]);
    splitter.group(vec![piece(5), piece(6), piece(7)]);
    splitter.control(piece(8));
    let lens: Vec<(usize, usize)> = splitter
        .finish()
        .iter()
        .map(|m| (m.len(), m.frame_count()))
        .collect();
    assert_eq!(lens, [(20, 1), (20, 2), (30, 3), (10, 0)]);

    let synced = super::catchup::synced_piece(crate::store::Revision(9));
    let mut message = OutgoingMessage::default();
    let frame = |revision| pb::Frame {
        revision,
        resource: "v1/pods".into(),
        ..pb::Frame::default()
    };
    message.push_frame(cattail_proto::frame::encode_frames_piece(&[frame(1)]));
    message.push_frame(cattail_proto::frame::encode_frames_piece(&[frame(2)]));
    message.push_control(synced);
    let decoded = decode(&message);
    assert_eq!(decoded.frames, [frame(1), frame(2)]);
    assert_eq!(decoded.synced, Some(pb::Synced { revision: 9 }));
}

#[test]
fn digests_follow_every_published_change() {
    let mut fixture = Fixture::new(FanoutConfig::default());
    fixture.pods(&[pod("p1", Some("n1"), 1), pod("p2", Some("n1"), 1)]);
    fixture.pods(&[pod("p1", Some("n2"), 2), pod("p3", None, 1)]);
    let mut batch = Batch::new();
    batch.delete(&pods(), "a", "p2");
    fixture.commit(batch);
    let snapshot = fixture.store.snapshot();
    let objects = snapshot.objects(&pods()).unwrap();
    let expected = super::digests::digest_of(objects, cattail_proto::DEFAULT_DIGEST_BUCKETS);
    assert_eq!(fixture.hub.digest(&pods()), Some(expected));
    assert_ne!(
        fixture.hub.digest(&pods()),
        fixture.hub.digest(&namespaces())
    );
}

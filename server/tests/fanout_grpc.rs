//! The gRPC fan-out end to end on loopback: a real store and hub behind `grpc::serve`, agents
//! built from the generated client. Snapshots then deltas, node scopes, shared encoding, bad
//! hellos, heartbeats, a stalled agent, health and shutdown.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

#[macro_use]
mod fanout_support;

use std::time::Duration;

use cattail_proto::pb::{Encoding, ResumeMode, ServerMessage};
use cattail_server::fanout::FanoutConfig;
use cattail_server::grpc::Transport;
use cattail_server::store::Batch;
use fanout_support::*;
use prost::Message;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

on_both_transports!(
    an_agent_gets_a_snapshot_then_deltas,
    several_agents_receive_identical_bytes_encoded_once,
    a_node_scoped_agent_sees_only_its_node_and_a_delete_when_a_pod_leaves,
    an_agent_without_zstd_gets_plain_payloads_of_the_same_content,
    bad_hellos_get_their_status_while_another_agent_keeps_working,
    an_idle_stream_gets_heartbeats_at_its_revision,
    a_new_agent_waits_for_sync_and_is_refused_if_it_never_comes,
    shutdown_ends_every_stream_with_unavailable,
    health_turns_not_serving_when_a_drain_starts,
    a_stalled_agent_does_not_hold_back_the_others,
);

const BOTH: &[(&str, bool)] = &[("v1/pods", false), ("v1/namespaces", false)];

async fn an_agent_gets_a_snapshot_then_deltas(transport: Transport) {
    let mut server = TestServer::start_on(config(), transport).await;
    let first = server.apply(
        &[pod("a", "p1", Some("n1"), 1), pod("a", "p2", Some("n2"), 1)],
        &[namespace("a", 1)],
    );
    let mut agent = TestAgent::connect(&server, hello("n1", BOTH))
        .await
        .unwrap();
    assert_eq!(agent.synced().await, first);
    let welcome = agent.welcome.clone().unwrap();
    assert_eq!(welcome.resume_mode, ResumeMode::Snapshot as i32);
    assert_eq!(welcome.head_revision, first);
    assert_eq!(welcome.resources.len(), 2);
    assert_eq!(welcome.resources[0].scope_field, "spec.nodeName");
    assert!(
        agent
            .frames
            .iter()
            .all(|f| f.replace && f.revision == first)
    );
    let both = [(pods(), None), (namespaces(), None)];
    assert_eq!(agent.state, server.expected(&both));
    assert_eq!(agent.state.len(), 3);

    let second = server.apply(&[pod("a", "p1", Some("n1"), 2)], &[namespace("b", 1)]);
    let mut batch = Batch::new();
    batch.delete(&pods(), "a", "p2");
    let third = server.commit(batch).revision.get();
    agent.reach(third).await;
    assert_eq!(agent.state, server.expected(&both));
    let deltas: Vec<_> = agent.frames.iter().filter(|f| !f.replace).collect();
    assert_eq!(
        deltas.iter().map(|f| f.revision).collect::<Vec<_>>(),
        [second, second, third]
    );
}

async fn several_agents_receive_identical_bytes_encoded_once(transport: Transport) {
    let mut server = TestServer::start_on(config(), transport).await;
    server.apply(&[pod("a", "p1", Some("n1"), 1)], &[namespace("a", 1)]);
    let mut agents = Vec::new();
    for i in 0..5 {
        let mut agent = TestAgent::connect(&server, hello(&format!("n{i}"), BOTH))
            .await
            .unwrap();
        agent.synced().await;
        agents.push(agent);
    }
    let before = server.hub.stats();
    // One snapshot per (resource, scope) at this revision, however many agents connected.
    assert_eq!(before.snapshots_encoded, 2);
    assert_eq!(before.connected_agents, 5);

    let revision = server.apply(&[pod("a", "p2", Some("n1"), 1)], &[]);
    let mut messages: Vec<Vec<u8>> = Vec::new();
    for agent in &mut agents {
        agent
            .until(|a, m| a.revision >= revision && !m.frames.is_empty())
            .await;
        let last: ServerMessage = ServerMessage {
            frames: agent
                .frames
                .iter()
                .filter(|f| f.revision == revision)
                .cloned()
                .collect(),
            ..ServerMessage::default()
        };
        messages.push(last.encode_to_vec());
    }
    assert!(
        messages.windows(2).all(|w| w[0] == w[1]),
        "agents got different bytes"
    );
    let after = server.hub.stats();
    // One unscoped pods frame and one for scope n1: not one per agent.
    assert_eq!(after.frames_encoded - before.frames_encoded, 2);
    assert_eq!(after.snapshots_encoded, before.snapshots_encoded);
}

async fn a_node_scoped_agent_sees_only_its_node_and_a_delete_when_a_pod_leaves(
    transport: Transport,
) {
    let mut server = TestServer::start_on(config(), transport).await;
    server.apply(
        &[
            pod("a", "p1", Some("n1"), 1),
            pod("a", "p2", Some("n2"), 1),
            pod("a", "p3", None, 1),
        ],
        &[],
    );
    let subscription = [("v1/pods", true)];
    let mut agent = TestAgent::connect(&server, hello("n1", &subscription))
        .await
        .unwrap();
    agent.synced().await;
    let mine = [(pods(), Some("n1"))];
    assert_eq!(agent.state, server.expected(&mine));
    assert_eq!(agent.state.len(), 1);
    assert!(agent.frames.iter().all(|f| f.scope == "n1"));

    // p1 moves to n2: for n1 it is a delete. p3 is scheduled on n1: an upsert.
    let moved = server.apply(
        &[pod("a", "p1", Some("n2"), 2), pod("a", "p3", Some("n1"), 2)],
        &[],
    );
    agent.reach(moved).await;
    let frame = agent.frames.last().unwrap();
    assert_eq!(
        (frame.revision, frame.scope.as_str(), frame.replace),
        (moved, "n1", false)
    );
    let payload = cattail_proto::frame::decode_payload(frame, 1 << 20).unwrap();
    assert_eq!(payload.deletes.len(), 1);
    assert_eq!(payload.deletes[0].name, "p1");
    assert_eq!(payload.upserts.len(), 1);
    assert_eq!(payload.upserts[0].name, "p3");
    assert_eq!(agent.state, server.expected(&mine));

    // A change on another node only: no frame, but the heartbeat-free revision still moves.
    let elsewhere = server.apply(&[pod("a", "p2", Some("n2"), 3)], &[]);
    let touching = server.apply(&[pod("a", "p3", Some("n1"), 3)], &[]);
    agent.reach(touching).await;
    assert!(agent.frames.iter().all(|f| f.revision != elsewhere));
    assert_eq!(agent.state, server.expected(&mine));
}

async fn an_agent_without_zstd_gets_plain_payloads_of_the_same_content(transport: Transport) {
    let mut server = TestServer::start_on(config(), transport).await;
    let version = |v| -> Vec<_> {
        (0..20)
            .map(|i| pod("a", &format!("p{i}"), Some("n1"), v))
            .collect()
    };
    server.apply(&version(1), &[]);
    let mut compressed = TestAgent::connect(&server, hello("n1", BOTH))
        .await
        .unwrap();
    compressed.synced().await;
    let mut plain_hello = hello("n2", BOTH);
    plain_hello.accepted_encodings.clear();
    let mut plain = TestAgent::connect(&server, plain_hello).await.unwrap();
    plain.synced().await;
    let revision = server.apply(&version(2), &[]);
    compressed.reach(revision).await;
    plain.reach(revision).await;
    let zstd = Encoding::ProtoZstd as i32;
    // Both the snapshot and the delta were worth compressing...
    assert!(
        compressed
            .frames
            .iter()
            .filter(|f| f.encoding == zstd)
            .count()
            >= 2
    );
    // ...and the agent that cannot decode zstd never saw it.
    assert!(
        plain
            .frames
            .iter()
            .all(|f| f.encoding == Encoding::Proto as i32)
    );
    assert_eq!(plain.frames.len(), compressed.frames.len());
    assert_eq!(plain.state, compressed.state);
    assert_eq!(
        plain.state,
        server.expected(&[(pods(), None), (namespaces(), None)])
    );
}

/// The status a stream opened with `hello` ends with.
async fn refused(server: &TestServer, hello: cattail_proto::pb::Hello) -> tonic::Status {
    match TestAgent::connect(server, hello).await {
        Ok(mut agent) => {
            let status = agent.status().await;
            assert!(agent.welcome.is_none(), "a refused agent got a Welcome");
            status
        }
        Err(status) => status,
    }
}

async fn bad_hellos_get_their_status_while_another_agent_keeps_working(transport: Transport) {
    let config = FanoutConfig {
        max_subscriptions: 2,
        max_hello_bytes: 2048,
        ..config()
    };
    let mut server = TestServer::start_on(config, transport).await;
    server.apply(&[pod("a", "p1", Some("n1"), 1)], &[]);
    let mut good = TestAgent::connect(&server, hello("n1", BOTH))
        .await
        .unwrap();
    good.synced().await;

    let mut version = hello("n1", BOTH);
    version.protocol_version = 2;
    let status = refused(&server, version).await;
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");

    let status = refused(&server, hello("n1", &[("v1/secrets", false)])).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("v1/pods"), "{status:?}");

    let status = refused(&server, hello("n1", &[("v1/namespaces", true)])).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("v1/namespaces"), "{status:?}");

    let status = refused(&server, hello("", &[("v1/pods", true)])).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("node_name"), "{status:?}");

    let three = [
        ("v1/pods", false),
        ("v1/namespaces", false),
        ("v1/nodes", false),
    ];
    let status = refused(&server, hello("n1", &three)).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("subscriptions"), "{status:?}");

    let status = refused(&server, hello("n1", &[("not a resource", false)])).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // Over the Hello limit, just (our check) and far (tonic's decoding limit).
    for padding in [2100, 100_000] {
        let mut big = hello("n1", BOTH);
        big.accepted_encodings = vec![2; padding];
        let status = refused(&server, big).await;
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    }

    let revision = server.apply(&[pod("a", "p2", Some("n1"), 1)], &[]);
    good.reach(revision).await;
    assert_eq!(
        good.state,
        server.expected(&[(pods(), None), (namespaces(), None)])
    );
}

async fn an_idle_stream_gets_heartbeats_at_its_revision(transport: Transport) {
    let config = FanoutConfig {
        heartbeat_interval: Duration::from_millis(100),
        ..config()
    };
    let mut server = TestServer::start_on(config, transport).await;
    let head = server.apply(&[pod("a", "p1", Some("n1"), 1)], &[]);
    let mut agent = TestAgent::connect(&server, hello("n1", BOTH))
        .await
        .unwrap();
    agent.synced().await;
    agent.ack(head).await;
    agent.until(|a, _| a.heartbeats >= 2).await;
    assert_eq!(agent.revision, head);
    let welcome = agent.welcome.as_ref().unwrap();
    assert_eq!(welcome.limits.unwrap().heartbeat_interval_ms, 100);
}

async fn a_new_agent_waits_for_sync_and_is_refused_if_it_never_comes(transport: Transport) {
    let config = FanoutConfig {
        sync_wait_timeout: Duration::from_millis(300),
        ..config()
    };
    let mut server = TestServer::start_with(config, false, transport).await;
    let status = refused(&server, hello("n1", BOTH)).await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("not yet in sync"), "{status:?}");

    let mut health = HealthClient::new(server.channel().await);
    let request = || HealthCheckRequest {
        service: String::new(),
    };
    let check = health.check(request()).await.unwrap().into_inner();
    assert_eq!(check.status, ServingStatus::NotServing as i32);
    let mut watch = health.watch(request()).await.unwrap().into_inner();

    let revision = server.apply(&[pod("a", "p1", Some("n1"), 1)], &[]);
    server.hub.set_in_sync(true);
    let mut agent = TestAgent::connect(&server, hello("n1", BOTH))
        .await
        .unwrap();
    assert_eq!(agent.synced().await, revision);
    assert_eq!(agent.state.len(), 1);
    loop {
        let status = tokio::time::timeout(WAIT, watch.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if status.status == ServingStatus::Serving as i32 {
            break;
        }
    }
    let service = HealthCheckRequest {
        service: "cattail.v1.Sync".into(),
    };
    let check = health.check(service).await.unwrap().into_inner();
    assert_eq!(check.status, ServingStatus::Serving as i32);
}

async fn shutdown_ends_every_stream_with_unavailable(transport: Transport) {
    let mut server = TestServer::start_on(config(), transport).await;
    server.apply(&[pod("a", "p1", Some("n1"), 1)], &[]);
    let mut agents = Vec::new();
    for node in ["n1", "n2"] {
        let mut agent = TestAgent::connect(&server, hello(node, BOTH))
            .await
            .unwrap();
        agent.synced().await;
        agents.push(agent);
    }
    let mut health = HealthClient::new(server.channel().await);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    server.shutdown.cancel();
    for agent in &mut agents {
        let status = agent.status().await;
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(
            status.message().starts_with("server shutting down"),
            "{status:?}"
        );
    }
    // The health watch ends too, so nothing holds the shutdown open.
    while let Ok(Some(_)) = tokio::time::timeout(WAIT, watch.message()).await.unwrap() {}
    let served = tokio::time::timeout(WAIT, server.task)
        .await
        .unwrap()
        .unwrap();
    assert!(served.is_ok(), "{served:?}");
}

async fn health_turns_not_serving_when_a_drain_starts(transport: Transport) {
    let server = TestServer::start_on(config(), transport).await;
    let mut health = HealthClient::new(server.channel().await);
    let request = || HealthCheckRequest {
        service: String::new(),
    };
    let check = health.check(request()).await.unwrap().into_inner();
    assert_eq!(check.status, ServingStatus::Serving as i32);
    let mut watch = health.watch(request()).await.unwrap().into_inner();
    let first = tokio::time::timeout(WAIT, watch.message()).await.unwrap();
    assert_eq!(
        first.unwrap().unwrap().status,
        ServingStatus::Serving as i32
    );

    // No agent is connected, so the drain is over at once; the server itself keeps running.
    tokio::time::timeout(WAIT, server.hub.drain(Duration::from_secs(5)))
        .await
        .unwrap();
    let next = tokio::time::timeout(WAIT, watch.message()).await.unwrap();
    assert_eq!(
        next.unwrap().unwrap().status,
        ServingStatus::NotServing as i32
    );
    let check = health.check(request()).await.unwrap().into_inner();
    assert_eq!(check.status, ServingStatus::NotServing as i32);
    // It stays so, even if the hub's sync status changes; the watch ends at shutdown.
    server.hub.set_in_sync(false);
    server.hub.set_in_sync(true);
    let check = health.check(request()).await.unwrap().into_inner();
    assert_eq!(check.status, ServingStatus::NotServing as i32);
    server.shutdown.cancel();
    while let Some(message) = tokio::time::timeout(WAIT, watch.message())
        .await
        .unwrap()
        .unwrap()
    {
        assert_eq!(message.status, ServingStatus::NotServing as i32);
    }
}

/// A namespace whose value is `bytes` of pseudo-random hex, so that zstd cannot shrink a batch
/// of them to nothing.
fn bulky_namespace(
    name: &str,
    version: u32,
    bytes: usize,
) -> cattail_server::store::ProjectedObject {
    let mut object = namespace(name, version);
    let mut x = u64::from(version).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let noise: String = (0..bytes)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from_digit((x % 16) as u32, 16).unwrap()
        })
        .collect();
    object.value = format!(r#"{{"kind":"Namespace","name":"{name}","noise":"{noise}"}}"#).into();
    object
}

async fn a_stalled_agent_does_not_hold_back_the_others(transport: Transport) {
    let write_timeout = Duration::from_secs(1);
    let mut server = TestServer::start_on(
        FanoutConfig {
            write_timeout,
            ..config()
        },
        transport,
    )
    .await;
    server.apply(&[], &[namespace("a", 1)]);
    // The stalled agent's HTTP/2 stream window is 16 KiB, and it never reads while the server
    // publishes about 800 KiB of compressed frames: its stream stops at once.
    let small_window = tonic::transport::Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .initial_stream_window_size(16 * 1024)
        .connect()
        .await
        .unwrap();
    let subscriptions = &[("v1/namespaces", false)];
    let mut stalled = TestAgent::connect_over(small_window, hello("slow", subscriptions))
        .await
        .unwrap();
    stalled.synced().await;
    let mut healthy = TestAgent::connect(&server, hello("fast", subscriptions))
        .await
        .unwrap();
    healthy.synced().await;

    let mut last = 0;
    for version in 2..200 {
        let name = format!("ns{}", version % 50);
        last = server.apply(&[], &[bulky_namespace(&name, version, 8 * 1024)]);
    }
    healthy.reach(last).await;
    let everything = [(namespaces(), None)];
    assert_eq!(healthy.state, server.expected(&everything));

    // Stalled for longer than the write timeout: when it reads again, it finds its sender gave
    // up, or catches up to the same state; never a wrong state, and the server is unharmed.
    // Under tonic the sender sees the stall only when the agent reads again and ends the
    // stream with UNAVAILABLE; the native transport runs the sender while the stream waits,
    // so the timeout fires on time and the stream, stuck in the middle of a message, is reset.
    tokio::time::sleep(write_timeout * 2).await;
    let outcome = loop {
        match stalled.next().await {
            Ok(Some(message)) => {
                stalled.apply(&message);
                if stalled.revision >= last {
                    break None;
                }
            }
            Ok(None) => panic!("the stalled agent's stream ended with OK"),
            Err(status) => break Some(status),
        }
    };
    match (outcome, transport) {
        (Some(status), Transport::Tonic) => {
            assert_eq!(status.code(), Code::Unavailable, "{status:?}");
            assert!(status.message().contains("took no message"), "{status:?}");
        }
        (Some(status), Transport::Native) => {
            assert_eq!(status.code(), Code::Cancelled, "{status:?}");
            assert!(format!("{status:?}").contains("CANCEL"), "{status:?}");
        }
        (None, Transport::Tonic) => assert_eq!(stalled.state, server.expected(&everything)),
        (None, Transport::Native) => panic!("the stalled stream was not reset"),
    }
    if transport == Transport::Native {
        // The stalled agent's sender is gone; only the healthy one is connected.
        assert_eq!(server.hub.stats().connected_agents, 1);
    }
    let mut late = TestAgent::connect(&server, hello("late", subscriptions))
        .await
        .unwrap();
    late.synced().await;
    late.reach(last).await;
    assert_eq!(late.state, server.expected(&everything));
}

//! Tests of one [`AgentSender`] over in-memory channels, with paused time: the Hello deadline,
//! heartbeats, waiting for sync, a blocked agent's write timeout, a lagging agent's resync.

use std::time::Duration;

use cattail_proto::pb::{self, AgentMessage, ServerMessage, agent_message::Message};
use futures::channel::mpsc::{UnboundedSender, unbounded};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

use super::super::LogLimits;

use super::super::{AgentSender, Error, FanoutConfig, InboundError, Outgoing, Peer};
use super::{Fixture, decode, hello, pod};

struct Harness {
    fixture: Fixture,
    to_server: UnboundedSender<Result<AgentMessage, InboundError>>,
    from_server: mpsc::Receiver<Outgoing>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Harness {
    fn start(config: FanoutConfig, queue: usize) -> Self {
        let fixture = Fixture::new(config);
        let (to_server, inbound) = unbounded();
        let (outbound, from_server) = mpsc::channel(queue);
        let shutdown = CancellationToken::new();
        let sender = AgentSender::new(
            fixture.hub.clone(),
            Peer::default(),
            inbound,
            outbound,
            shutdown.clone(),
        );
        let task = tokio::spawn(sender.run());
        Self {
            fixture,
            to_server,
            from_server,
            shutdown,
            task,
        }
    }

    fn say(&self, message: Message) {
        let message = AgentMessage {
            message: Some(message),
        };
        self.to_server.unbounded_send(Ok(message)).unwrap();
    }

    fn hello(&self) {
        self.say(Message::Hello(hello("n1", &[("v1/pods", false)])));
    }

    async fn recv(&mut self) -> Result<ServerMessage, Error> {
        match timeout(Duration::from_secs(3600), self.from_server.recv())
            .await
            .map(|m| m.map(|m| *m))
        {
            Ok(Some(Ok(message))) => Ok(decode(&message)),
            Ok(Some(Err(error))) => Err(error),
            Ok(None) => panic!("the sender ended without a status"),
            Err(_) => panic!("nothing from the sender within an hour"),
        }
    }

    /// Reads until a `Synced`; returns its revision.
    async fn synced(&mut self) -> u64 {
        loop {
            if let Some(synced) = self.recv().await.unwrap().synced {
                return synced.revision;
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn no_hello_within_the_deadline_ends_the_stream() {
    let mut harness = Harness::start(FanoutConfig::default(), 2);
    let start = Instant::now();
    let error = harness.recv().await.unwrap_err();
    assert!(matches!(error, Error::HelloTimeout(_)), "{error}");
    assert_eq!(start.elapsed(), Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn an_idle_agent_gets_heartbeats_and_deltas_reset_the_timer() {
    let mut harness = Harness::start(FanoutConfig::default(), 2);
    harness.fixture.pods(&[pod("p1", Some("n1"), 1)]);
    harness.hello();
    let first = harness.recv().await.unwrap();
    assert_eq!(
        first.welcome.unwrap().resume_mode,
        pb::ResumeMode::Snapshot as i32
    );
    assert_eq!(first.synced.map(|s| s.revision), Some(1));

    let start = Instant::now();
    let beat = harness.recv().await.unwrap().heartbeat.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    assert_eq!(beat.head_revision, 1);

    tokio::time::advance(Duration::from_secs(4)).await;
    harness.fixture.pods(&[pod("p1", Some("n1"), 2)]);
    let delta = harness.recv().await.unwrap();
    assert_eq!(delta.frames.len(), 1);
    let sent = Instant::now();
    let beat = harness.recv().await.unwrap().heartbeat.unwrap();
    assert_eq!(sent.elapsed(), Duration::from_secs(10));
    assert_eq!(beat.head_revision, 2);

    harness.say(Message::Ack(pb::Ack { revision: 2 }));
    harness.say(Message::Hello(hello("n1", &[("v1/pods", false)])));
    let error = harness.recv().await.unwrap_err();
    assert!(matches!(error, Error::SecondHello), "{error}");
}

#[tokio::test(start_paused = true)]
async fn a_new_agent_waits_for_sync_but_not_forever() {
    let mut harness = Harness::start(FanoutConfig::default(), 2);
    harness.fixture.hub.set_in_sync(false);
    harness.hello();
    tokio::time::advance(Duration::from_secs(5)).await;
    harness.fixture.pods(&[pod("p1", Some("n1"), 1)]);
    harness.fixture.hub.set_in_sync(true);
    assert_eq!(harness.synced().await, 1);

    let mut late = Harness::start(FanoutConfig::default(), 2);
    late.fixture.hub.set_in_sync(false);
    late.hello();
    let start = Instant::now();
    let error = late.recv().await.unwrap_err();
    assert!(matches!(error, Error::NotInSync(_)), "{error}");
    assert_eq!(start.elapsed(), Duration::from_secs(20));
}

#[tokio::test(start_paused = true)]
async fn an_agent_that_stops_reading_is_dropped_after_the_write_timeout() {
    let mut harness = Harness::start(FanoutConfig::default(), 1);
    harness.hello();
    // The catch-up fills the queue; the next delta blocks.
    harness.fixture.pods(&[pod("p1", Some("n1"), 1)]);
    let start = Instant::now();
    timeout(Duration::from_secs(3600), &mut harness.task)
        .await
        .unwrap()
        .unwrap();
    assert!(
        start.elapsed() >= Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(harness.fixture.hub.stats().connected_agents, 0);
    // What was queued is still there, then the stream ends.
    assert!(harness.from_server.recv().await.unwrap().is_ok());
    assert!(harness.from_server.recv().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_send_left_unpolled_past_the_write_timeout_ends_the_stream_with_its_status() {
    // As the response body runs it: the future is polled only when HTTP/2 has room, so its
    // timer cannot fire while the agent is stalled.
    let mut fixture = Fixture::new(FanoutConfig::default());
    let (to_server, inbound) = unbounded();
    let (outbound, mut from_server) = mpsc::channel(1);
    let sender = AgentSender::new(
        fixture.hub.clone(),
        Peer::default(),
        inbound,
        outbound,
        CancellationToken::new(),
    );
    let mut run = Box::pin(sender.run());
    let hello = AgentMessage {
        message: Some(Message::Hello(hello("n1", &[("v1/pods", false)]))),
    };
    to_server.unbounded_send(Ok(hello)).unwrap();
    fixture.pods(&[pod("p1", Some("n1"), 1)]);
    // The body polls the sender whenever it wants a message.
    let catch_up = tokio::select! {
        message = from_server.recv() => decode(&(*message.unwrap()).unwrap()),
        () = &mut run => panic!("the sender ended"),
    };
    assert!(catch_up.synced.is_some());
    fixture.pods(&[pod("p1", Some("n1"), 2)]);
    while from_server.is_empty() {
        assert!(futures::poll!(&mut run).is_pending());
        tokio::task::yield_now().await;
    }
    // The queue is full; the next delta waits for room, and then HTTP/2 stops polling.
    fixture.pods(&[pod("p1", Some("n1"), 3)]);
    for _ in 0..10 {
        assert!(futures::poll!(&mut run).is_pending());
        tokio::task::yield_now().await;
    }
    tokio::time::advance(Duration::from_secs(31)).await;
    // The agent reads again: both deltas go, then the stall ends the stream, with its status.
    let second = decode(&(*from_server.recv().await.unwrap()).unwrap());
    assert_eq!(second.frames[0].revision, 2);
    assert!(
        futures::poll!(&mut run).is_pending(),
        "the status waits for room"
    );
    let third = decode(&(*from_server.recv().await.unwrap()).unwrap());
    assert_eq!(third.frames[0].revision, 3);
    assert!(futures::poll!(&mut run).is_ready());
    let status = (*from_server.recv().await.unwrap()).unwrap_err();
    assert!(matches!(status, Error::WriteTimeout(_)), "{status}");
    assert!(from_server.recv().await.is_none());
}

/// A log that holds two batches.
fn two_batch_log() -> FanoutConfig {
    FanoutConfig {
        log: LogLimits {
            max_entries: 2,
            ..LogLimits::default()
        },
        ..FanoutConfig::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_lagging_agent_is_resynced_instead_of_dropped() {
    let config = two_batch_log();
    let mut harness = Harness::start(config, 1);
    harness.hello();
    assert_eq!(harness.synced().await, 0);
    for version in 1..=6 {
        harness
            .fixture
            .pods(&[pod(&format!("p{version}"), Some("n1"), 1)]);
    }
    let mut replaced = 0;
    loop {
        let message = harness.recv().await.unwrap();
        replaced += message.frames.iter().filter(|f| f.replace).count();
        if message.synced.map(|s| s.revision) == Some(6) {
            break;
        }
    }
    assert!(replaced > 0, "no resync");
    assert_eq!(harness.fixture.hub.stats().connected_agents, 1);
    harness.shutdown.cancel();
    let error = harness.recv().await.unwrap_err();
    assert!(matches!(error, Error::ShuttingDown), "{error}");
}

#[tokio::test(start_paused = true)]
async fn a_quiet_scoped_agent_skips_other_nodes_batches_without_a_resync() {
    // A log of two batches: reading its way through six batches for n2 would resync n1.
    let config = two_batch_log();
    let interval = config.heartbeat_interval;
    let mut harness = Harness::start(config, 1);
    harness.say(Message::Hello(hello("n1", &[("v1/pods", true)])));
    assert_eq!(harness.synced().await, 0);
    for i in 0..6 {
        harness
            .fixture
            .pods(&[pod(&format!("x{i}"), Some("n2"), 1)]);
    }
    let mine = harness.fixture.pods(&[pod("a", Some("n1"), 1)]).revision;
    let message = harness.recv().await.unwrap();
    assert_eq!(message.frames.len(), 1, "{message:?}");
    let frame = &message.frames[0];
    assert!(!frame.replace, "a resync instead of the one delta");
    assert_eq!((frame.revision, frame.scope.as_str()), (mine.get(), "n1"));

    // Batches for other nodes move a quiet agent's revision without a message.
    let start = Instant::now();
    for i in 0..3 {
        harness
            .fixture
            .pods(&[pod(&format!("y{i}"), Some("n2"), 1)]);
    }
    let beat = harness.recv().await.unwrap().heartbeat.unwrap();
    assert_eq!(
        start.elapsed(),
        interval,
        "something was sent before the heartbeat"
    );
    assert_eq!(beat.head_revision, harness.fixture.hub.head().get());
}

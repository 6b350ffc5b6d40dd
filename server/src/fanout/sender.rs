//! [`AgentSender`]: the work of one agent's stream, run by its response body (in hyper's task
//! for the stream) or as a task of its own. It reads the Hello within its deadline, waits for the
//! hub to be in sync, catches the agent up, then follows the head until the stream ends.
//!
//! Backpressure: the outbound queue is bounded by the caller (a message or two); a send that
//! stays blocked past `write_timeout` ends the stream. A lagging agent is never queued more:
//! each wake-up takes everything since its cursor as one message, or a resync from the shared
//! snapshot once the log no longer holds its cursor. The task wakes only for batches of its
//! topics (see `topics`). Acks are read while the task waits, and every 500 ms while it is busy
//! delivering; they are never waited for. Cancel-safety: every wait selects on the shutdown token and
//! on the agent going away; shutdown, or being shed by a drain, ends the stream with `UNAVAILABLE`.

use std::future::Future;
use std::time::{Duration, SystemTime};

use cattail_proto::pb::agent_message::Message;
use cattail_proto::pb::{AgentMessage, Hello};
use futures::{FutureExt, Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::store::Revision;

use super::catchup::{self, Plan, Step, heartbeat_piece, synced_piece};
use super::drain::AgentLease;
use super::fleet::{AgentInfo, FleetEntry};
use super::hello::{self, AgentHello};
use super::message::{MessageSplitter, OutgoingMessage};
use super::metrics::{self, AgentMetrics};
use super::peer::Peer;
use super::{Error, Hub, Result};

/// The longest a stream's final status waits for room in the agent's queue.
const STATUS_WAIT: Duration = Duration::from_secs(5);
/// How often a sender that is busy delivering looks at what the agent sent.
const INBOUND_DRAIN_INTERVAL: Duration = Duration::from_millis(500);

/// Why the agent's side of the stream failed, as the transport reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundError {
    /// A message over the size limit.
    TooLarge(String),
    /// A message that is not a valid `AgentMessage`.
    Malformed(String),
    /// The connection or stream broke: the agent is gone.
    Closed(String),
}

/// What one [`AgentSender::deliver`] did.
struct Delivered {
    /// The agent's revision now.
    cursor: Revision,
    /// Whether anything went out.
    sent: bool,
    /// Whether the cursor reached the log's head.
    done: bool,
}

/// One item of an agent's outbound queue: a message, or the error that ends its stream.
///
/// Boxed because the queue is per agent and tokio's channel keeps its slots in blocks of 32:
/// two blocks of 8-byte slots instead of two of 56-byte ones saves about 3 KiB per agent.
pub type Outgoing = Box<Result<OutgoingMessage>>;

/// Where an agent's messages go: the response stream of its gRPC call.
pub type Outbound = mpsc::Sender<Outgoing>;

/// The sender of one agent.
#[derive(Debug)]
pub struct AgentSender<S> {
    hub: Hub,
    inbound: S,
    inbound_open: bool,
    outbound: Outbound,
    /// This stream's token: cancelled when the server sheds the agent (drain) or shuts down.
    shutdown: CancellationToken,
    /// Keeps the stream listed for a drain.
    lease: AgentLease,
    metrics: AgentMetrics,
    /// Who opened the stream, for admission with the Hello.
    peer: Peer,
    /// The agent's place in the fleet view, once its catch-up is planned.
    fleet: Option<FleetEntry>,
}

impl<S> AgentSender<S>
where
    S: Stream<Item = std::result::Result<AgentMessage, InboundError>> + Unpin + Send,
{
    /// A sender for `peer`, reading `inbound` and writing to `outbound` until `shutdown`, or
    /// until a drain of the hub sheds it. A stream opened while the hub drains is refused.
    pub fn new(
        hub: Hub,
        peer: Peer,
        inbound: S,
        outbound: Outbound,
        shutdown: CancellationToken,
    ) -> Self {
        let lease = hub.lease(&shutdown);
        Self {
            peer,
            hub,
            inbound,
            inbound_open: true,
            outbound,
            shutdown: lease.token.clone(),
            lease,
            metrics: AgentMetrics::new(),
            fleet: None,
        }
    }

    /// Serves the agent until its stream ends. The reason, unless the agent left on its own, is
    /// sent as the last item of `outbound`.
    ///
    /// Dropping the future before it finishes counts as the agent going away: that is how the
    /// response body, which runs it, ends it when hyper drops the stream.
    pub async fn run(mut self) {
        let _connected = self.hub.agent_connected();
        let mut gone = Gone { armed: true };
        let result = self.serve().await;
        gone.armed = false;
        let Err(error) = result else {
            return;
        };
        metrics::stream_ended(reason(&error));
        match &error {
            Error::AgentGone => {
                tracing::debug!("agent went away");
                return;
            }
            Error::ShuttingDown | Error::Draining(_) => {
                tracing::debug!(%error, "stream ended: shutting down");
            }
            // Admission has logged why, once, with the identity.
            Error::Unauthenticated(_) | Error::PermissionDenied(_) | Error::AuthUnavailable(_) => {
                tracing::debug!(%error, "stream ended: not admitted");
            }
            Error::Encode(_) | Error::Task(_) => tracing::error!(%error, "stream ended"),
            _ => tracing::info!(%error, "stream ended"),
        }
        // A slow agent gets a moment to take its status; it must not hold a shutdown long. An
        // agent that read nothing for the write timeout is likely to take nothing now either:
        // its status goes if it makes room, and the transport's keepalive closes a dead
        // connection.
        let wait = self.hub.config().write_timeout.min(STATUS_WAIT);
        let _ = tokio::time::timeout(wait, self.outbound.send(Box::new(Err(error)))).await;
    }

    async fn serve(&mut self) -> Result<()> {
        let hello = self.read_hello().await?;
        let mut agent = hello::accept(hello, self.hub.config(), self.hub.resources())?;
        tracing::Span::current().record("agent_id", agent.agent_id.as_str());
        tracing::info!(
            agent_id = %agent.agent_id, node = %agent.node_name, version = %agent.agent_version,
            subscriptions = agent.subscriptions.len(), "agent said hello"
        );
        // The credentials are needed only here: the stream keeps nothing of them.
        let peer = std::mem::take(&mut self.peer);
        let transport = peer.transport;
        tracing::debug!(peer = ?peer, "the agent's credentials");
        if let Some(admission) = self.hub.admission().cloned() {
            let request = agent.admission_request(self.hub.resources());
            // Boxed: the stream's future keeps no room for a check that runs once.
            Box::pin(self.guarded(async { Ok(admission.admit(&peer, &request).await?) })).await?;
        }
        drop(peer);
        if let Some(target) = self.hub.over_target() {
            return Err(Error::OverTarget {
                target,
                try_endpoints: self.lease.try_endpoints(),
            });
        }
        if !self.hub.in_sync() {
            let wait = self.hub.config().sync_wait_timeout;
            let hub = self.hub.clone();
            Box::pin(self.guarded(async {
                tokio::time::timeout(wait, hub.wait_in_sync())
                    .await
                    .map_err(|_| Error::NotInSync(wait))
            }))
            .await?;
        }
        // Boxed, as is a resync below: the stream's future stays the size of what it keeps
        // while following the head, not of a catch-up that runs once (docs/BENCHMARKS.md).
        let cursor = Box::pin(self.catch_up(&mut agent, transport)).await?;
        if let Some(fleet) = &self.fleet {
            fleet.written(cursor);
        }
        self.live(&agent, cursor).await
    }

    async fn read_hello(&mut self) -> Result<Hello> {
        let deadline = self.hub.config().hello_timeout;
        let first = tokio::select! {
            biased;
            () = self.shutdown.cancelled() => return Err(self.leaving()),
            first = tokio::time::timeout(deadline, self.inbound.next()) => first,
        };
        match first.map_err(|_| Error::HelloTimeout(deadline))? {
            None => Err(Error::NotHello("the stream ended before it")),
            Some(Err(error)) => Err(inbound_error(error)),
            Some(Ok(AgentMessage {
                message: Some(Message::Hello(hello)),
            })) => Ok(hello),
            Some(Ok(_)) => Err(Error::NotHello("the first message was something else")),
        }
    }

    /// Sends the Welcome and brings the agent to a `Synced`; returns the agent's revision.
    async fn catch_up(
        &mut self,
        agent: &mut AgentHello,
        transport: &'static str,
    ) -> Result<Revision> {
        let plan = catchup::plan(&self.hub, agent);
        self.fleet = Some(self.hub.join_fleet(AgentInfo {
            node: agent.node_name.clone(),
            agent_id: agent.agent_id.clone(),
            version: agent.agent_version.clone(),
            transport,
            resume_mode: match &plan {
                Plan::Snapshot { .. } => "snapshot",
                Plan::Digest(_) => "digest",
                Plan::Deltas { .. } => "deltas",
            },
            connected_since: SystemTime::now(),
        }));
        // The plan holds what it needs of the digests: the agent keeps O(1) state from here.
        agent.resume = None;
        let agent = &*agent;
        let mut splitter = MessageSplitter::new(self.hub.config().target_message_bytes);
        splitter.control(catchup::welcome_piece(&self.hub, plan.head(), plan.mode()));
        let hub = self.hub.clone();
        let revision = match plan {
            Plan::Snapshot { .. } => {
                metrics::resync("snapshot", "connect");
                let cache = hub.snapshot_cache(Revision::ZERO);
                self.guarded(catchup::add_snapshot_resync(
                    &hub,
                    agent,
                    &cache,
                    &mut splitter,
                ))
                .await?
            }
            Plan::Digest(plan) => {
                metrics::resync("digest", "connect");
                self.guarded(catchup::add_digest_resync(&hub, agent, plan, &mut splitter))
                    .await?
            }
            Plan::Deltas { from, .. } => {
                metrics::resync("deltas", "connect");
                let welcome = splitter.finish().into_iter().next().unwrap_or_default();
                return self.catch_up_deltas(agent, welcome, from).await;
            }
        };
        for message in splitter.finish() {
            self.send(message).await?;
        }
        Ok(revision)
    }

    /// Sends the deltas after `from` behind `welcome`, then `Synced`.
    async fn catch_up_deltas(
        &mut self,
        agent: &AgentHello,
        mut pending: OutgoingMessage,
        mut cursor: Revision,
    ) -> Result<Revision> {
        let target = self.hub.config().target_message_bytes;
        loop {
            match catchup::next_deltas(&self.hub, agent, cursor) {
                Step::UpToDate => break,
                Step::Deltas {
                    message,
                    cursor: reached,
                    at_head,
                } => {
                    cursor = reached;
                    if pending.len() + message.len() <= target {
                        pending.append(message);
                    } else {
                        self.send(std::mem::replace(&mut pending, message)).await?;
                    }
                    if at_head {
                        break;
                    }
                }
                Step::Resync {
                    min_revision,
                    reason,
                } => {
                    self.send(pending).await?;
                    return self.resync(agent, min_revision, reason).await;
                }
            }
        }
        pending.push_control(synced_piece(cursor));
        self.send(pending).await?;
        Ok(cursor)
    }

    /// Follows the head: deltas, resyncs and heartbeats, until the stream ends.
    ///
    /// The sender sleeps until a batch touches one of its topics; batches for other nodes do
    /// not wake it. Its cursor would then lag the head, so before it waits, reads the log or
    /// sends a heartbeat, it skips the batches its topics say did not concern it: a quiet
    /// agent neither falls off the log nor reads old batches when it wakes.
    async fn live(&mut self, agent: &AgentHello, mut cursor: Revision) -> Result<()> {
        let interval = self.hub.config().heartbeat_interval;
        let mut interest = self.hub.interest(&agent.subscriptions);
        let heartbeat = tokio::time::sleep(interval);
        tokio::pin!(heartbeat);
        // The log may hold batches published before `interest` existed.
        let mut pending = true;
        let mut drained = Instant::now();
        let mut last_sent = Instant::now();
        loop {
            if pending {
                // Acks are read while waiting below; an agent that never lets the sender wait
                // still has them read, but not at the cost of a transport poll per message.
                if drained.elapsed() >= INBOUND_DRAIN_INTERVAL {
                    self.drain_inbound(agent)?;
                    drained = Instant::now();
                }
                cursor = interest.skip(cursor, self.hub.head());
                let delivered = self.deliver(agent, cursor).await?;
                cursor = delivered.cursor;
                if delivered.sent {
                    // The timer is moved only when it fires: cheaper than per message.
                    last_sent = Instant::now();
                }
                pending = !delivered.done;
                continue;
            }
            cursor = interest.skip(cursor, self.hub.head());
            if let Some(fleet) = &self.fleet {
                fleet.cursor(cursor);
            }
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return Err(self.leaving()),
                () = self.outbound.closed() => return Err(Error::AgentGone),
                changed = interest.changed() => {
                    if !changed {
                        return Ok(());
                    }
                    pending = true;
                }
                message = self.inbound.next(), if self.inbound_open => {
                    self.on_inbound(agent, message)?;
                }
                () = &mut heartbeat => {
                    let due = last_sent + interval;
                    if due > Instant::now() {
                        heartbeat.as_mut().reset(due);
                        continue;
                    }
                    cursor = interest.skip(cursor, self.hub.head());
                    let piece = heartbeat_piece(cursor, SystemTime::now());
                    self.send(OutgoingMessage::control(piece)).await?;
                    last_sent = Instant::now();
                    heartbeat.as_mut().reset(last_sent + interval);
                }
            }
        }
    }

    /// Moves the agent towards the head by one message (or a resync).
    async fn deliver(&mut self, agent: &AgentHello, cursor: Revision) -> Result<Delivered> {
        let delivered = match catchup::next_deltas(&self.hub, agent, cursor) {
            Step::UpToDate => {
                return Ok(Delivered {
                    cursor,
                    sent: false,
                    done: true,
                });
            }
            Step::Deltas {
                message,
                cursor,
                at_head,
            } => {
                let sent = !message.is_empty();
                self.send(message).await?;
                Delivered {
                    cursor,
                    sent,
                    done: at_head,
                }
            }
            Step::Resync {
                min_revision,
                reason,
            } => Delivered {
                cursor: Box::pin(self.resync(agent, min_revision, reason)).await?,
                sent: true,
                // Batches after the snapshot may be in the log.
                done: false,
            },
        };
        // Frames up to the cursor went out (an empty message for batches of other nodes too).
        if let Some(fleet) = &self.fleet {
            fleet.written(delivered.cursor);
        }
        Ok(delivered)
    }

    /// Resyncs the agent from a shared snapshot at `min_revision` or later.
    async fn resync(
        &mut self,
        agent: &AgentHello,
        min_revision: Revision,
        reason: &'static str,
    ) -> Result<Revision> {
        metrics::resync("snapshot", reason);
        tracing::debug!(agent_id = %agent.agent_id, reason, "resyncing agent");
        let hub = self.hub.clone();
        let cache = hub.snapshot_cache(min_revision);
        let mut splitter = MessageSplitter::new(self.hub.config().target_message_bytes);
        let revision = self
            .guarded(catchup::add_snapshot_resync(
                &hub,
                agent,
                &cache,
                &mut splitter,
            ))
            .await?;
        for message in splitter.finish() {
            self.send(message).await?;
        }
        Ok(revision)
    }

    /// Hands one message to the transport, waiting at most `write_timeout` for room.
    async fn send(&mut self, message: OutgoingMessage) -> Result<()> {
        if message.is_empty() {
            return Ok(());
        }
        let (frames, len) = (message.frame_count(), message.len());
        let timeout = self.hub.config().write_timeout;
        let started = Instant::now();
        let item = Box::new(Ok(message));
        tokio::select! {
            biased;
            () = self.shutdown.cancelled() => return Err(self.leaving()),
            sent = tokio::time::timeout(timeout, self.outbound.send(item)) => match sent {
                Err(_) => return Err(Error::WriteTimeout(timeout)),
                Ok(Err(_)) => return Err(Error::AgentGone),
                Ok(Ok(())) => {}
            },
        }
        self.metrics.sent(frames, len);
        if let Some(fleet) = &self.fleet {
            fleet.sent(len);
        }
        // Run by the response body, this future is not polled while HTTP/2 has no room for the
        // agent, so the timer above cannot end a stalled send; the stall shows here instead, once
        // the agent reads again.
        if started.elapsed() > timeout {
            return Err(Error::WriteTimeout(timeout));
        }
        Ok(())
    }

    /// Why the stream's token was cancelled: a drain (with the replicas to try), or a shutdown.
    fn leaving(&self) -> Error {
        if self.hub.is_draining() {
            Error::Draining(self.lease.try_endpoints())
        } else {
            Error::ShuttingDown
        }
    }

    /// Runs `work` unless the server shuts down or the agent goes away first.
    async fn guarded<T>(&self, work: impl Future<Output = Result<T>>) -> Result<T> {
        tokio::select! {
            biased;
            () = self.shutdown.cancelled() => Err(self.leaving()),
            () = self.outbound.closed() => Err(Error::AgentGone),
            done = work => done,
        }
    }

    /// Handles whatever the agent has already sent, without waiting.
    fn drain_inbound(&mut self, agent: &AgentHello) -> Result<()> {
        while self.inbound_open {
            match self.inbound.next().now_or_never() {
                Some(message) => self.on_inbound(agent, message)?,
                None => break,
            }
        }
        Ok(())
    }

    fn on_inbound(
        &mut self,
        agent: &AgentHello,
        message: Option<std::result::Result<AgentMessage, InboundError>>,
    ) -> Result<()> {
        match message {
            // The agent closed its side; it may still read, so keep sending.
            None => self.inbound_open = false,
            Some(Err(error)) => return Err(inbound_error(error)),
            Some(Ok(message)) => match message.message {
                Some(Message::Hello(_)) => return Err(Error::SecondHello),
                Some(Message::Ack(ack)) => {
                    let lag = self.hub.head().get().saturating_sub(ack.revision);
                    self.metrics.lag(lag);
                    if let Some(fleet) = &self.fleet {
                        fleet.acked(ack.revision);
                    }
                    tracing::trace!(agent_id = %agent.agent_id, revision = ack.revision, lag, "ack");
                }
                // A message from a newer protocol revision: ignored.
                None => {}
            },
        }
        Ok(())
    }
}

/// Counts a sender dropped while it was serving as `agent_gone`.
struct Gone {
    armed: bool,
}

impl Drop for Gone {
    fn drop(&mut self) {
        if self.armed {
            tracing::debug!("agent went away");
            metrics::stream_ended("agent_gone");
        }
    }
}

fn inbound_error(error: InboundError) -> Error {
    match error {
        InboundError::TooLarge(message) => Error::MessageTooLarge(message),
        InboundError::Malformed(message) => Error::Malformed(message),
        InboundError::Closed(_) => Error::AgentGone,
    }
}

/// The `reason` label of `cattail_streams_ended_total`.
fn reason(error: &Error) -> &'static str {
    match error {
        Error::HelloTimeout(_) => "hello_timeout",
        Error::Hello(_) => "invalid_hello",
        Error::NotHello(_) | Error::SecondHello | Error::Malformed(_) => "invalid_message",
        Error::HelloTooLarge { .. } | Error::MessageTooLarge(_) => "too_large",
        Error::NotInSync(_) => "not_in_sync",
        Error::ShuttingDown => "shutting_down",
        Error::Draining(_) => "draining",
        Error::OverTarget { .. } => "over_target",
        Error::WriteTimeout(_) => "write_timeout",
        Error::AgentGone => "agent_gone",
        Error::Unauthenticated(_) => "unauthenticated",
        Error::PermissionDenied(_) => "permission_denied",
        Error::AuthUnavailable(_) => "auth_unavailable",
        Error::Encode(_) | Error::Task(_) => "internal",
    }
}

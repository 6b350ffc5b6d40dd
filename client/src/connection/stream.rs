//! One stream to one endpoint: connect, send the `Hello`, feed the session, send acks.
//!
//! The read loop never waits on the server for anything but the next message: acks go through
//! a `watch` channel that a separate request stream drains at most once per ack interval, so
//! they coalesce and never block reading. The loop waits on the application only when handing
//! it events, which is the backpressure the application asks for by reading slowly. It stops
//! at once when the event stream is dropped.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cattail_proto::pb::{self, AgentMessage, agent_message, sync_client::SyncClient};
use futures::{Stream, StreamExt, stream};
use tokio::sync::{mpsc, watch};
use tonic::transport::Endpoint;

use super::Settings;
use super::{Error, EventBatch};
use crate::session::Session;

/// How one stream ended.
#[derive(Debug)]
pub(crate) enum StreamEnd {
    /// The application dropped the event stream.
    Dropped,
    /// The stream failed; `synced` tells whether it had delivered a `Synced` first.
    Failed {
        /// What ended it.
        error: Error,
        /// True when the stream reached a `Synced`, so it counts as a success for backoff.
        synced: bool,
    },
}

/// Runs one stream to `endpoint` until it fails or the application goes away.
pub(crate) async fn run_stream(
    settings: &Settings,
    endpoint: &str,
    session: &mut Session,
    events: &mpsc::Sender<EventBatch>,
) -> StreamEnd {
    let failed = |error| StreamEnd::Failed {
        error,
        synced: false,
    };
    let hello = session.begin_stream();
    // Read at every connect: kubelet rewrites a projected token before it expires.
    let token = match settings
        .token
        .as_ref()
        .map(|token| token.header())
        .transpose()
    {
        Ok(token) => token,
        Err(error) => return failed(error),
    };
    let channel = match connect(settings, endpoint).await {
        Ok(channel) => channel,
        Err(error) => return failed(error),
    };
    // gRPC compression stays off (the default): payloads are compressed once by the server.
    let mut grpc = SyncClient::new(channel)
        .max_decoding_message_size(settings.max_message_bytes)
        .max_encoding_message_size(settings.max_message_bytes);
    let (ack_sender, ack_receiver) = watch::channel(0);
    let mut request = tonic::Request::new(outgoing(hello, ack_receiver, settings.ack_interval));
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", token);
    }
    let response = tokio::select! {
        response = grpc.watch(request) => response,
        () = events.closed() => return StreamEnd::Dropped,
    };
    let mut inbound = match response {
        Ok(response) => response.into_inner(),
        Err(status) => {
            return failed(Error::Status {
                endpoint: endpoint.to_owned(),
                status,
            });
        }
    };
    let mut idle_limit = settings.welcome_timeout;
    let mut synced = false;
    loop {
        let next = tokio::select! {
            next = tokio::time::timeout(idle_limit, inbound.message()) => next,
            () = events.closed() => return StreamEnd::Dropped,
        };
        let error = match next {
            Err(_elapsed) => Error::Idle {
                endpoint: endpoint.to_owned(),
                idle: idle_limit,
            },
            Ok(Err(status)) => Error::Status {
                endpoint: endpoint.to_owned(),
                status,
            },
            Ok(Ok(None)) => Error::Closed {
                endpoint: endpoint.to_owned(),
            },
            Ok(Ok(Some(message))) => {
                if let Some(welcome) = &message.welcome {
                    idle_limit = liveness_limit(welcome);
                    tracing::info!(
                        endpoint,
                        server_id = %welcome.server_id,
                        head_revision = welcome.head_revision,
                        resume_mode = ?welcome.resume_mode(),
                        "stream accepted"
                    );
                }
                record_frames(&message.frames);
                match session.apply(message) {
                    Ok(applied) => {
                        synced |= applied.synced.is_some();
                        if let Some(revision) = applied.ack {
                            ack_sender.send_replace(revision.get());
                            metrics::gauge!("cattail_client_complete_revision")
                                .set(revision.get() as f64);
                        }
                        if !applied.events.is_empty() {
                            record_events(&applied.events);
                            if events.send(Ok(applied.events)).await.is_err() {
                                return StreamEnd::Dropped;
                            }
                        }
                        continue;
                    }
                    Err(source) => Error::Protocol {
                        endpoint: endpoint.to_owned(),
                        source,
                    },
                }
            }
        };
        return StreamEnd::Failed { error, synced };
    }
}

async fn connect(settings: &Settings, endpoint: &str) -> Result<tonic::transport::Channel, Error> {
    let endpoint_config = Endpoint::from_shared(endpoint.to_owned())
        .map_err(|source| Error::InvalidEndpoint {
            endpoint: endpoint.to_owned(),
            source,
        })?
        .connect_timeout(settings.connect_timeout)
        .tcp_nodelay(true)
        .max_frame_size(cattail_proto::AGENT_MAX_FRAME_BYTES);
    let endpoint_config = match &settings.tls {
        Some(tls) if endpoint.starts_with("https://") => endpoint_config
            .tls_config(tls.config())
            .map_err(|source| Error::Connect {
            endpoint: endpoint.to_owned(),
            source,
        })?,
        _ => endpoint_config,
    };
    #[cfg(test)]
    if let Some(connector) = super::tests::memory::connector(endpoint) {
        return endpoint_config
            .connect_with_connector(connector)
            .await
            .map_err(|source| Error::Connect {
                endpoint: endpoint.to_owned(),
                source,
            });
    }
    endpoint_config
        .connect()
        .await
        .map_err(|source| Error::Connect {
            endpoint: endpoint.to_owned(),
            source,
        })
}

/// Three heartbeat intervals: how long a live stream may stay silent (docs/PROTOCOL.md, 4.5).
fn liveness_limit(welcome: &pb::Welcome) -> Duration {
    let interval_ms = welcome
        .limits
        .map(|limits| limits.heartbeat_interval_ms)
        .filter(|&ms| ms > 0)
        .unwrap_or(10_000);
    Duration::from_millis(u64::from(interval_ms) * 3)
}

/// The request stream: the `Hello`, then the newest complete revision whenever it changes, at
/// most once per `interval`.
fn outgoing(
    hello: pb::Hello,
    acks: watch::Receiver<u64>,
    interval: Duration,
) -> impl Stream<Item = AgentMessage> + Send + 'static {
    let hello = AgentMessage {
        message: Some(agent_message::Message::Hello(hello)),
    };
    let acks = stream::unfold((acks, false), move |(mut acks, sent_one)| async move {
        if sent_one {
            tokio::time::sleep(interval).await;
        }
        // Ends the request stream once the read loop drops its sender.
        acks.changed().await.ok()?;
        let revision = *acks.borrow_and_update();
        let ack = AgentMessage {
            message: Some(agent_message::Message::Ack(pb::Ack { revision })),
        };
        Some((ack, (acks, true)))
    });
    stream::once(async move { hello }).chain(acks)
}

/// Fan-out lag (now minus each frame's publish time) and payload bytes received.
fn record_frames(frames: &[pb::Frame]) {
    if frames.is_empty() {
        return;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_nanos()).unwrap_or(i64::MAX)
        });
    let lag = metrics::histogram!("cattail_client_frame_lag_seconds");
    let mut bytes = 0u64;
    for frame in frames {
        bytes += frame.payload.len() as u64;
        if frame.publish_time_unix_nanos > 0 && !frame.replace {
            let nanos = now.saturating_sub(frame.publish_time_unix_nanos).max(0);
            lag.record(nanos as f64 / 1e9);
        }
    }
    metrics::counter!("cattail_client_received_bytes_total").increment(bytes);
}

fn record_events(events: &[crate::projected::SubscriptionEvent]) {
    use kube::runtime::watcher::Event;
    let (mut applied, mut deleted) = (0u64, 0u64);
    for tagged in events {
        match tagged.event {
            Event::Apply(_) | Event::InitApply(_) => applied += 1,
            Event::Delete(_) => deleted += 1,
            Event::Init | Event::InitDone => {}
        }
    }
    metrics::counter!("cattail_client_events_total", "kind" => "apply").increment(applied);
    metrics::counter!("cattail_client_events_total", "kind" => "delete").increment(deleted);
}

//! The long-lived connection to a cattail fleet: one background task per [`EventStream`].
//!
//! The task connects to an endpoint (a random one first, then round-robin), runs a stream
//! until it fails, reports the failure as an `Err` item, waits (exponential backoff with
//! jitter, reset after a stream that reached `Synced`), and resumes on the next endpoint with
//! the session's epoch, revision and digests. A server over its agent target is not waited on:
//! the next endpoint (or one it suggested) is tried at once, until every endpoint refused.
//!
//! Dropping the [`EventStream`] stops the task, whatever it is doing.
//!
//! This module knows nothing of [`crate::Client`]: the client hands it a [`Settings`] and the
//! subscriptions ([`open`]), so configuration depends on the connection and not the reverse.

pub(crate) mod backoff;
mod credentials;
pub(crate) mod endpoints;
mod error;
mod stream;

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::Instrument;

pub use self::backoff::Backoff;
use self::backoff::{BackoffState, random_u64};
pub use self::credentials::{ClientTls, MAX_TOKEN_BYTES, TokenFile};
use self::endpoints::{EndpointRotation, TRY_ENDPOINTS_METADATA};
pub use self::error::{Error, Result};
use self::stream::{StreamEnd, run_stream};
use crate::projected::SubscriptionEvent;
use crate::session::{Session, SessionConfig};
use crate::subscription::Subscription;

/// What the task hands the application at once: the events of one message, or an error.
type EventBatch = Result<Vec<SubscriptionEvent>>;

/// Refusals with hints in a row that are followed at once, before the backoff applies.
const MAX_HINTED_HOPS: usize = 4;

/// How many batches may wait for the application before the task stops reading.
const EVENT_BUFFER: usize = 16;

/// The events of every subscription of one cattail stream, across reconnects.
///
/// Items are events in order, or errors: an error reports one failed stream and is followed by
/// a reconnect, unless [`Error::is_fatal`], after which the stream ends. The stream never ends
/// otherwise. Dropping it stops the background task.
pub struct EventStream {
    receiver: mpsc::Receiver<EventBatch>,
    pending: VecDeque<SubscriptionEvent>,
    _stop: DropGuard,
}

impl Stream for EventStream {
    type Item = Result<SubscriptionEvent>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(event) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(event)));
            }
            match this.receiver.poll_recv(cx) {
                Poll::Ready(Some(Ok(batch))) => this.pending.extend(batch),
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Everything a connection needs to know about the agent and its streams.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// Server endpoints, as URIs.
    pub(crate) endpoints: Vec<String>,
    /// `Hello.agent_id`.
    pub(crate) agent_id: String,
    /// `Hello.node_name`.
    pub(crate) node_name: String,
    /// `Hello.agent_version`.
    pub(crate) agent_version: String,
    /// The reconnect backoff.
    pub(crate) backoff: Backoff,
    /// The largest message, and decoded frame payload, accepted.
    pub(crate) max_message_bytes: usize,
    /// How long connecting to one endpoint may take.
    pub(crate) connect_timeout: Duration,
    /// How long to wait for the first message of a stream.
    pub(crate) welcome_timeout: Duration,
    /// The shortest time between two acks.
    pub(crate) ack_interval: Duration,
    /// TLS for `https://` endpoints.
    pub(crate) tls: Option<ClientTls>,
    /// A bearer token, read again before every connect.
    pub(crate) token: Option<TokenFile>,
}

/// Opens one cattail stream for several subscriptions and returns its events, tagged with
/// their resource. Every subscription must name its resource explicitly.
///
/// Must be called within a Tokio runtime: it spawns the connection task.
///
/// # Errors
/// A fatal [`Error`]: no or invalid endpoints, a subscription without a resource, or
/// subscriptions that cannot make a valid `Hello`.
pub(crate) fn open(settings: Settings, subscriptions: &[Subscription]) -> Result<EventStream> {
    if settings.endpoints.is_empty() {
        return Err(Error::NoEndpoints);
    }
    for endpoint in &settings.endpoints {
        tonic::transport::Endpoint::from_shared(endpoint.clone()).map_err(|source| {
            Error::InvalidEndpoint {
                endpoint: endpoint.clone(),
                source,
            }
        })?;
        if endpoint.starts_with("https://") && !settings.tls.as_ref().is_some_and(ClientTls::has_ca)
        {
            return Err(Error::TlsWithoutCa {
                endpoint: endpoint.clone(),
            });
        }
    }
    let resolved = subscriptions
        .iter()
        .map(|subscription| subscription.resolve(None).ok_or(Error::MissingResource))
        .collect::<Result<Vec<_>>>()?;
    let session = Session::new(SessionConfig {
        agent_id: settings.agent_id.clone(),
        node_name: settings.node_name.clone(),
        agent_version: settings.agent_version.clone(),
        subscriptions: resolved,
        max_payload_bytes: settings.max_message_bytes,
    })
    .map_err(Error::Config)?;
    let (sender, receiver) = mpsc::channel(EVENT_BUFFER);
    let stop = CancellationToken::new();
    let span = tracing::info_span!("cattail_connection", agent_id = %settings.agent_id);
    tokio::spawn(drive(settings, session, sender, stop.clone()).instrument(span));
    Ok(EventStream {
        receiver,
        pending: VecDeque::new(),
        _stop: stop.drop_guard(),
    })
}

/// The connection task: streams, failures, backoff, until the application goes away.
async fn drive(
    settings: Settings,
    mut session: Session,
    events: mpsc::Sender<EventBatch>,
    stop: CancellationToken,
) {
    let mut rotation = EndpointRotation::new(settings.endpoints.clone(), random_u64());
    let mut backoff = BackoffState::new(settings.backoff.clone());
    // Refusals by overloaded servers in a row: retried at once until every endpoint refused.
    let mut overloaded_in_a_row = 0usize;
    loop {
        let Some(endpoint) = rotation.next_endpoint() else {
            return;
        };
        let end = tokio::select! {
            end = run_stream(&settings, &endpoint, &mut session, &events) => end,
            () = stop.cancelled() => return,
        };
        let (error, synced) = match end {
            StreamEnd::Dropped => return,
            StreamEnd::Failed { error, synced } => (error, synced),
        };
        metrics::counter!("cattail_client_reconnects_total").increment(1);
        if synced {
            backoff.reset();
        }
        let delay = if error.is_overloaded() {
            overloaded_in_a_row += 1;
            let mut hinted = false;
            if let Error::Status { status, .. } = &error
                && let Some(hints) = status.metadata().get(TRY_ENDPOINTS_METADATA)
                && let Ok(hints) = hints.to_str()
            {
                hinted = rotation.add_hints(&endpoint, hints);
            }
            // Hints are followed at once, but only a few times in a row: replicas that are all
            // at their targets would otherwise send the agent round them without a pause.
            if (hinted && overloaded_in_a_row <= MAX_HINTED_HOPS)
                || overloaded_in_a_row < rotation.len()
            {
                Duration::ZERO
            } else {
                overloaded_in_a_row = 0;
                backoff.next_delay(random_u64())
            }
        } else {
            overloaded_in_a_row = 0;
            // A draining server names replicas too: they are tried next, after the backoff
            // (reset when the stream had synced, so a shed agent moves within a moment).
            if let Error::Status { status, .. } = &error
                && let Some(hints) = status.metadata().get(TRY_ENDPOINTS_METADATA)
                && let Ok(hints) = hints.to_str()
            {
                rotation.add_hints(&endpoint, hints);
            }
            backoff.next_delay(random_u64())
        };
        tracing::warn!(%error, ?delay, "cattail stream ended; reconnecting");
        let fatal = error.is_fatal();
        if events.send(Err(error)).await.is_err() || fatal {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = events.closed() => return,
            () = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;

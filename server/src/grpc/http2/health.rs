//! `grpc.health.v1.Health` on the native transport: `Check` and `Watch` for `""` and
//! `cattail.v1.Sync`, `SERVING` only while the hub is in sync and not draining, as on the tonic
//! transport.
//!
//! Health calls are rare (probes, operators), so their messages are encoded per call. A Watch
//! sends the status when it changes, `NOT_SERVING` for good once a drain starts, and ends, after
//! a last `NOT_SERVING`, at shutdown.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use cattail_proto::pb::sync_server::SERVICE_NAME;
use futures::StreamExt;
use prost::Message;
use tokio_stream::wrappers::WatchStream;
use tokio_util::sync::WaitForCancellationFutureOwned;
use tonic::Status;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::grpc::framing::MESSAGE_PREFIX_BYTES;

use crate::fanout::{Hub, OutgoingMessage};

/// The largest health request read: a service name.
const MAX_REQUEST_BYTES: usize = 1024;

/// One health call.
pub(super) struct HealthCall {
    state: State,
    hub: Hub,
    /// For `Watch`: resolves at shutdown, when the watch ends with a last `NOT_SERVING`.
    shutdown: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    /// For `Watch`: resolves when a drain starts, from when the status is `NOT_SERVING` for good
    /// (`None` once it has).
    drain: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
}

enum State {
    /// Reading the request.
    Request { buf: BytesMut, watch: bool },
    /// `Check`: the answer, once.
    Check(Option<Result<ServingStatus, Status>>),
    /// `Watch`: following the hub's sync status.
    Watch {
        in_sync: WatchStream<bool>,
        last: Option<ServingStatus>,
    },
    /// `Watch` after shutdown: nothing more.
    Done,
}

impl std::fmt::Debug for HealthCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Request { watch, .. } => {
                if *watch {
                    "watch request"
                } else {
                    "check request"
                }
            }
            State::Check(_) => "check",
            State::Watch { .. } => "watch",
            State::Done => "done",
        };
        f.debug_struct("HealthCall").field("state", &state).finish()
    }
}

impl HealthCall {
    /// The call for `method` (`Check` or `Watch`), or `None` for another method.
    pub(super) fn new(
        method: &str,
        hub: Hub,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Option<Self> {
        let watch = match method {
            "Check" => false,
            "Watch" => true,
            _ => return None,
        };
        Some(Self {
            state: State::Request {
                buf: BytesMut::new(),
                watch,
            },
            shutdown: watch.then(|| Box::pin(shutdown.clone().cancelled_owned())),
            drain: watch.then(|| Box::pin(hub.drain_started().cancelled_owned())),
            hub,
        })
    }

    /// Whether the response streams (its headers go out before the first message).
    pub(super) fn is_watch(&self) -> bool {
        matches!(
            self.state,
            State::Request { watch: true, .. } | State::Watch { .. } | State::Done
        )
    }

    /// Request bytes from a DATA frame. `end` when the client finished its side.
    pub(super) fn push(&mut self, data: &[u8], end: bool) {
        let State::Request { buf, watch } = &mut self.state else {
            return;
        };
        let watch = *watch;
        if buf.len() + data.len() > MESSAGE_PREFIX_BYTES + MAX_REQUEST_BYTES {
            self.state = State::Check(Some(Err(Status::resource_exhausted(format!(
                "a health request over {MAX_REQUEST_BYTES} bytes"
            )))));
            return;
        }
        buf.extend_from_slice(data);
        let request = match parse(buf) {
            Some(request) => request,
            None if end => Err(Status::invalid_argument(
                "the request ended before its message",
            )),
            None => return,
        };
        self.state = match request {
            Ok(service) if watch => {
                if known(&service) {
                    State::Watch {
                        in_sync: WatchStream::new(self.hub.watch_in_sync()),
                        last: None,
                    }
                } else {
                    State::Check(Some(Err(not_found())))
                }
            }
            Ok(service) => State::Check(Some(if known(&service) {
                Ok(serving(self.hub.in_sync() && !self.hub.is_draining()))
            } else {
                Err(not_found())
            })),
            Err(status) => State::Check(Some(Err(status))),
        };
    }

    /// The next response message, an error status, or the end of the call (`None`: OK).
    pub(super) fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<OutgoingMessage, Status>>> {
        match &mut self.state {
            State::Request { .. } => Poll::Pending,
            State::Check(answer) => Poll::Ready(answer.take().map(|answer| answer.map(message))),
            State::Done => Poll::Ready(None),
            State::Watch { in_sync, last } => {
                let shut = self
                    .shutdown
                    .as_mut()
                    .is_some_and(|shutdown| shutdown.as_mut().poll(cx).is_ready());
                if shut {
                    let send = *last != Some(ServingStatus::NotServing);
                    self.state = State::Done;
                    return Poll::Ready(send.then(|| Ok(message(ServingStatus::NotServing))));
                }
                let drained = match &mut self.drain {
                    Some(drain) => drain.as_mut().poll(cx).is_ready(),
                    None => true,
                };
                if drained {
                    // Draining: NOT_SERVING until shutdown ends the watch.
                    self.drain = None;
                    let now = ServingStatus::NotServing;
                    if *last == Some(now) {
                        return Poll::Pending;
                    }
                    *last = Some(now);
                    return Poll::Ready(Some(Ok(message(now))));
                }
                loop {
                    let now = match in_sync.poll_next_unpin(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Some(in_sync)) => serving(in_sync),
                        // The hub is gone: the server is stopping.
                        Poll::Ready(None) => {
                            self.state = State::Done;
                            return Poll::Ready(None);
                        }
                    };
                    if *last != Some(now) {
                        *last = Some(now);
                        return Poll::Ready(Some(Ok(message(now))));
                    }
                }
            }
        }
    }
}

/// The service named by a whole request in `buf`, once there is one.
fn parse(buf: &[u8]) -> Option<Result<String, Status>> {
    let prefix = buf.get(..MESSAGE_PREFIX_BYTES)?;
    let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    if prefix[0] != 0 {
        return Some(Err(Status::unimplemented(
            "compressed health requests are not supported",
        )));
    }
    let body = buf.get(MESSAGE_PREFIX_BYTES..MESSAGE_PREFIX_BYTES + len)?;
    Some(
        HealthCheckRequest::decode(body)
            .map(|request| request.service)
            .map_err(|error| {
                Status::invalid_argument(format!("not a HealthCheckRequest: {error}"))
            }),
    )
}

fn known(service: &str) -> bool {
    service.is_empty() || service == SERVICE_NAME
}

fn serving(in_sync: bool) -> ServingStatus {
    if in_sync {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

/// tonic-health's answer for a service it does not know, kept for clients of either transport.
fn not_found() -> Status {
    Status::not_found("service not registered")
}

fn message(status: ServingStatus) -> OutgoingMessage {
    let response = HealthCheckResponse {
        status: status as i32,
    };
    OutgoingMessage::control(Bytes::from(response.encode_to_vec()))
}

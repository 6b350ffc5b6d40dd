//! A client connection built from frames the fuzzer picks: the preface and SETTINGS first, then
//! requests (HPACK-encoded by loona-hpack), gRPC Hellos and Acks, every control frame, raw
//! frames and pauses, so the fuzzer spends its time past the handshake, in the streams.
#![no_main]

use std::time::Duration;

use arbitrary::Arbitrary;
use cattail_proto::pb::{self, AgentMessage, agent_message::Message};
use cattail_server::grpc::http2_fuzz::{self, PREFACE, Step};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

#[derive(Debug, Arbitrary)]
enum Id {
    One,
    Three,
    Five,
    Other(u32),
}

impl Id {
    fn get(&self) -> u32 {
        match self {
            Self::One => 1,
            Self::Three => 3,
            Self::Five => 5,
            Self::Other(id) => *id,
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Path {
    Watch,
    HealthCheck,
    HealthWatch,
    Other(String),
}

#[derive(Debug, Arbitrary)]
enum Frame {
    Settings {
        ack: bool,
        settings: Vec<(u16, u32)>,
    },
    Request {
        id: Id,
        end_stream: bool,
        /// Send the block in two pieces: HEADERS then CONTINUATION.
        split: Option<u8>,
        padding: Option<u8>,
        method_get: bool,
        path: Path,
        extra: Vec<(String, String)>,
    },
    Hello {
        id: Id,
        end_stream: bool,
        node_name: String,
        subscriptions: Vec<(u8, bool)>,
        resume: Option<(Vec<u8>, u64)>,
        encodings: Vec<i32>,
    },
    Ack {
        id: Id,
        revision: u64,
    },
    Data {
        id: Id,
        flags: u8,
        payload: Vec<u8>,
    },
    WindowUpdate {
        id: Id,
        increment: u32,
    },
    RstStream {
        id: Id,
        code: u32,
    },
    Ping {
        ack: bool,
        payload: [u8; 8],
    },
    Goaway {
        last: u32,
        code: u32,
    },
    Raw {
        kind: u8,
        flags: u8,
        id: Id,
        payload: Vec<u8>,
    },
    /// Ends a write; the client waits this many tenths of a second (virtual time) before the
    /// next.
    Pause(u8),
}

const RESOURCES: [&str; 3] = ["v1/pods", "v1/nodes", "apps/v1/deployments"];

fn put(out: &mut Vec<u8>, kind: u8, flags: u8, id: u32, payload: &[u8]) {
    let len = (payload.len().min((1 << 24) - 1) as u32).to_be_bytes();
    out.extend_from_slice(&len[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&payload[..payload.len().min((1 << 24) - 1)]);
}

fn grpc(message: &AgentMessage) -> Vec<u8> {
    let body = message.encode_to_vec();
    let mut out = vec![0];
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

fuzz_target!(|frames: Vec<Frame>| {
    let mut encoder = loona_hpack::Encoder::new();
    let mut steps = vec![Step::default()];
    let mut out = PREFACE.to_vec();
    put(&mut out, 0x4, 0, 0, &[]);
    for frame in frames {
        match frame {
            Frame::Settings { ack, settings } => {
                let payload: Vec<u8> = settings
                    .iter()
                    .flat_map(|(id, value)| id.to_be_bytes().into_iter().chain(value.to_be_bytes()))
                    .collect();
                put(&mut out, 0x4, u8::from(ack), 0, &payload);
            }
            Frame::Request {
                id,
                end_stream,
                split,
                padding,
                method_get,
                path,
                extra,
            } => {
                let path = match &path {
                    Path::Watch => "/cattail.v1.Sync/Watch",
                    Path::HealthCheck => "/grpc.health.v1.Health/Check",
                    Path::HealthWatch => "/grpc.health.v1.Health/Watch",
                    Path::Other(path) => path.as_str(),
                };
                let mut fields: Vec<(&[u8], &[u8])> = vec![
                    (b":method", if method_get { b"GET" } else { b"POST" }),
                    (b":scheme", b"http"),
                    (b":path", path.as_bytes()),
                    (b"content-type", b"application/grpc"),
                    (b"te", b"trailers"),
                ];
                fields.extend(extra.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
                let block = encoder.encode(fields);
                let end = if end_stream { 0x1 } else { 0 };
                let cut = split.map_or(block.len(), |at| usize::from(at).min(block.len()));
                let mut payload = Vec::new();
                let mut flags = end;
                if let Some(pad) = padding {
                    flags |= 0x8;
                    payload.push(pad);
                }
                payload.extend_from_slice(&block[..cut]);
                payload.resize(payload.len() + usize::from(padding.unwrap_or(0)), 0);
                if cut == block.len() {
                    flags |= 0x4;
                }
                put(&mut out, 0x1, flags, id.get(), &payload);
                if cut < block.len() {
                    put(&mut out, 0x9, 0x4, id.get(), &block[cut..]);
                }
            }
            Frame::Hello {
                id,
                end_stream,
                node_name,
                subscriptions,
                resume,
                encodings,
            } => {
                let hello = pb::Hello {
                    protocol_version: cattail_proto::PROTOCOL_VERSION,
                    agent_id: "fuzz".into(),
                    node_name,
                    agent_version: String::new(),
                    subscriptions: subscriptions
                        .iter()
                        .map(|&(resource, node_scoped)| pb::Subscription {
                            resource: RESOURCES[usize::from(resource) % RESOURCES.len()].into(),
                            node_scoped,
                        })
                        .collect(),
                    resume: resume.map(|(epoch, revision)| pb::Resume {
                        epoch: epoch.into(),
                        revision,
                        digests: Vec::new(),
                        covered: Vec::new(),
                    }),
                    accepted_encodings: encodings,
                };
                let message = AgentMessage {
                    message: Some(Message::Hello(hello)),
                };
                put(
                    &mut out,
                    0x0,
                    u8::from(end_stream),
                    id.get(),
                    &grpc(&message),
                );
            }
            Frame::Ack { id, revision } => {
                let message = AgentMessage {
                    message: Some(Message::Ack(pb::Ack { revision })),
                };
                put(&mut out, 0x0, 0, id.get(), &grpc(&message));
            }
            Frame::Data { id, flags, payload } => put(&mut out, 0x0, flags, id.get(), &payload),
            Frame::WindowUpdate { id, increment } => {
                put(&mut out, 0x8, 0, id.get(), &increment.to_be_bytes());
            }
            Frame::RstStream { id, code } => put(&mut out, 0x3, 0, id.get(), &code.to_be_bytes()),
            Frame::Ping { ack, payload } => put(&mut out, 0x6, u8::from(ack), 0, &payload),
            Frame::Goaway { last, code } => {
                let mut payload = last.to_be_bytes().to_vec();
                payload.extend_from_slice(&code.to_be_bytes());
                put(&mut out, 0x7, 0, 0, &payload);
            }
            Frame::Raw {
                kind,
                flags,
                id,
                payload,
            } => put(&mut out, kind, flags, id.get(), &payload),
            Frame::Pause(tenths) => {
                let step = steps.last_mut().unwrap_or_else(|| unreachable!());
                step.bytes = std::mem::take(&mut out);
                step.pause = Duration::from_millis(u64::from(tenths) * 100);
                steps.push(Step::default());
            }
        }
    }
    if let Some(step) = steps.last_mut() {
        step.bytes = out;
    }
    http2_fuzz::connection(&steps);
});

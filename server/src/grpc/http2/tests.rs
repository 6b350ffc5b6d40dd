//! The native transport against a client that writes raw frames: the handshake, windows,
//! limits, every protocol error this server detects, shutdown and keepalive. (Well-behaved
//! gRPC clients are in `server/tests/fanout_grpc.rs`, on both transports.)

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use cattail_proto::pb::agent_message::Message as AgentPart;
use cattail_proto::pb::{self, AgentMessage, Encoding, ServerMessage};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Resource;
use crate::fanout::{FanoutConfig, Hub, ResourceInfo};
use crate::grpc::GrpcConfig;
use crate::store::{Batch, ProjectedObject, Store};

use super::frame::{self, Frame, Head, Reason, flag, kind, setting};

mod bounds;
mod conformance;

/// How long any one expected frame may take.
const DEADLINE: Duration = Duration::from_secs(10);

struct Server {
    addr: SocketAddr,
    hub: Hub,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

fn pods() -> Resource {
    Resource::parse("v1/pods").unwrap_or_else(|e| panic!("{e}"))
}

/// A server in sync, holding `count` pods of about 200 bytes each on node `n1`.
async fn start(config: GrpcConfig, count: usize) -> Server {
    start_with(config, FanoutConfig::default(), count).await
}

/// As [`start`], with the hub's config.
async fn start_with(config: GrpcConfig, fanout: FanoutConfig, count: usize) -> Server {
    let mut store = Store::new([pods()]);
    let mut batch = Batch::new();
    for i in 0..count {
        batch.apply(
            &pods(),
            ProjectedObject {
                namespace: "a".into(),
                name: format!("pod-{i}"),
                value: Bytes::from(format!(r#"{{"n":"pod-{i}","pad":"{}"}}"#, "x".repeat(180))),
                resource_version: "1".into(),
                scope: Some("n1".into()),
            },
        );
    }
    let hub = Hub::new(
        fanout,
        store.snapshot(),
        vec![ResourceInfo {
            resource: pods(),
            fingerprint: 1,
            scope_field: Some("spec.nodeName".into()),
        }],
    );
    if count > 0
        && let Ok(Some(published)) = store.commit(batch)
    {
        hub.publish(&published, store.snapshot());
    }
    hub.set_in_sync(true);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(super::serve(
        listener,
        hub.clone(),
        config,
        shutdown.clone(),
    ));
    Server {
        addr,
        hub,
        shutdown,
        task,
    }
}

/// A client that speaks frames by hand.
struct Raw {
    io: TcpStream,
    buf: BytesMut,
    hpack: loona_hpack::Encoder<'static>,
}

/// A frame as read.
#[derive(Debug)]
struct Got {
    head: Head,
    payload: Bytes,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Self {
        Self {
            io: TcpStream::connect(addr)
                .await
                .unwrap_or_else(|e| panic!("{e}")),
            buf: BytesMut::new(),
            hpack: loona_hpack::Encoder::new(),
        }
    }

    /// Preface and SETTINGS, then reads until the server's SETTINGS and its ACK of ours.
    async fn handshake(addr: SocketAddr, settings: &[(u16, u32)]) -> Self {
        let mut raw = Self::connect(addr).await;
        let mut out = frame::PREFACE.to_vec();
        Frame::Settings(settings).write(&mut out);
        raw.send(&out).await;
        let (mut theirs, mut ack) = (false, false);
        while !(theirs && ack) {
            let got = raw
                .frame()
                .await
                .unwrap_or_else(|| panic!("closed in the handshake"));
            if got.head.kind == kind::SETTINGS {
                if got.head.has(flag::ACK) {
                    ack = true;
                } else {
                    theirs = true;
                    let mut reply = Vec::new();
                    frame::put_head(&mut reply, 0, kind::SETTINGS, flag::ACK, 0);
                    raw.send(&reply).await;
                }
            }
        }
        raw
    }

    async fn send(&mut self, bytes: &[u8]) {
        // A server that already closed may refuse the write; the reads tell the story.
        let _ = self.io.write_all(bytes).await;
    }

    /// The next frame, or `None` once the server closed the connection.
    async fn frame(&mut self) -> Option<Got> {
        loop {
            if let Some(head) = Head::parse(&self.buf)
                && self.buf.len() >= frame::HEADER_LEN + head.len as usize
            {
                self.buf.advance(frame::HEADER_LEN);
                let payload = self.buf.split_to(head.len as usize).freeze();
                return Some(Got { head, payload });
            }
            let read = tokio::time::timeout(DEADLINE, self.io.read_buf(&mut self.buf))
                .await
                .unwrap_or_else(|_| panic!("no frame within {DEADLINE:?}"));
            match read {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Frames until one of `kind` (skipping others), or `None` at the end of the connection.
    async fn until(&mut self, kind: u8) -> Option<Got> {
        loop {
            let got = self.frame().await?;
            if got.head.kind == kind {
                return Some(got);
            }
        }
    }

    /// Reads to the GOAWAY the server ends with and returns its code, then expects the close.
    async fn goaway(&mut self) -> Reason {
        let got = self
            .until(kind::GOAWAY)
            .await
            .unwrap_or_else(|| panic!("closed without GOAWAY"));
        let code = Reason(u32::from_be_bytes(
            got.payload[4..8].try_into().unwrap_or_default(),
        ));
        while self.frame().await.is_some() {}
        code
    }

    fn headers(&mut self, stream: u32, fields: &[(&str, &str)], flags: u8) -> Vec<u8> {
        let block = self
            .hpack
            .encode(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
        let mut out = Vec::new();
        frame::put_head(&mut out, block.len(), kind::HEADERS, flags, stream);
        out.extend_from_slice(&block);
        out
    }

    fn request(&mut self, stream: u32, path: &str, flags: u8) -> Vec<u8> {
        self.headers(
            stream,
            &[
                (":method", "POST"),
                (":scheme", "http"),
                (":path", path),
                (":authority", "cattail"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
            ],
            flags | flag::END_HEADERS,
        )
    }
}

/// A Watch request's HEADERS from an encoder of its own (a new connection's first block).
fn fresh_request(stream: u32) -> Vec<u8> {
    let mut hpack = loona_hpack::Encoder::new();
    let block = hpack.encode([
        (&b":method"[..], &b"POST"[..]),
        (b":path", b"/cattail.v1.Sync/Watch"),
        (b"content-type", b"application/grpc"),
    ]);
    let mut out = Vec::new();
    frame::put_head(
        &mut out,
        block.len(),
        kind::HEADERS,
        flag::END_HEADERS,
        stream,
    );
    out.extend_from_slice(&block);
    out
}

fn data(stream: u32, payload: &[u8], flags: u8) -> Vec<u8> {
    let mut out = Vec::new();
    frame::put_head(&mut out, payload.len(), kind::DATA, flags, stream);
    out.extend_from_slice(payload);
    out
}

fn grpc_message(message: &impl Message) -> Vec<u8> {
    let body = message.encode_to_vec();
    let mut out = vec![0];
    out.put_u32(body.len() as u32);
    out.extend_from_slice(&body);
    out
}

fn hello(node_scoped: bool) -> AgentMessage {
    AgentMessage {
        message: Some(AgentPart::Hello(pb::Hello {
            protocol_version: 1,
            agent_id: "raw".into(),
            node_name: "n1".into(),
            agent_version: "test".into(),
            subscriptions: vec![pb::Subscription {
                resource: "v1/pods".into(),
                node_scoped,
            }],
            resume: None,
            accepted_encodings: vec![Encoding::Proto as i32],
        })),
    }
}

/// The header fields of a HEADERS payload (this server's blocks are never padded).
fn fields(payload: &[u8]) -> Vec<(String, String)> {
    loona_hpack::Decoder::new()
        .decode(payload)
        .unwrap_or_else(|e| panic!("{e:?}"))
        .into_iter()
        .map(|(n, v)| {
            (
                String::from_utf8_lossy(&n).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            )
        })
        .collect()
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Reads a Watch response until `Synced`: its DATA frames' sizes and the messages.
async fn read_until_synced(raw: &mut Raw, stream: u32) -> (Vec<usize>, Vec<ServerMessage>) {
    read_until_synced_after(raw, stream, BytesMut::new()).await
}

/// As [`read_until_synced`], with `body` the stream's DATA already read.
async fn read_until_synced_after(
    raw: &mut Raw,
    stream: u32,
    mut body: BytesMut,
) -> (Vec<usize>, Vec<ServerMessage>) {
    let mut sizes = Vec::new();
    let mut messages = Vec::new();
    loop {
        let got = raw
            .frame()
            .await
            .unwrap_or_else(|| panic!("closed before Synced"));
        if got.head.stream != stream || got.head.kind != kind::DATA {
            assert_ne!(got.head.kind, kind::RST_STREAM, "{got:?}");
            continue;
        }
        sizes.push(got.payload.len());
        body.extend_from_slice(&got.payload);
        // Give the credit back, as a client that consumes what it reads does.
        let mut credit = Vec::new();
        if let Ok(len) = u32::try_from(got.payload.len())
            && len > 0
        {
            Frame::WindowUpdate {
                stream: 0,
                increment: len,
            }
            .write(&mut credit);
            Frame::WindowUpdate {
                stream,
                increment: len,
            }
            .write(&mut credit);
        }
        raw.send(&credit).await;
        while body.len() >= 5 {
            let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
            if body.len() < 5 + len {
                break;
            }
            body.advance(5);
            let message = ServerMessage::decode(body.split_to(len).freeze())
                .unwrap_or_else(|e| panic!("{e}"));
            let synced = message.synced.is_some();
            messages.push(message);
            if synced {
                return (sizes, messages);
            }
        }
    }
}

#[tokio::test]
async fn a_watch_over_raw_frames_gets_headers_then_the_snapshot_then_synced() {
    let server = start(GrpcConfig::default(), 300).await;
    let mut raw = Raw::handshake(server.addr, &[]).await;
    let mut out = raw.request(1, "/cattail.v1.Sync/Watch", 0);
    out.extend(data(1, &grpc_message(&hello(true)), 0));
    raw.send(&out).await;
    let headers = raw
        .until(kind::HEADERS)
        .await
        .unwrap_or_else(|| panic!("no headers"));
    let fields = fields(&headers.payload);
    assert_eq!(field(&fields, ":status"), Some("200"));
    assert_eq!(field(&fields, "content-type"), Some("application/grpc"));
    assert!(!headers.head.has(flag::END_STREAM));
    let (sizes, messages) = read_until_synced(&mut raw, 1).await;
    // The default max frame size bounds every DATA frame, and a snapshot of 300 plain pods
    // (about 60 KB) takes several.
    assert!(
        sizes
            .iter()
            .all(|&size| size <= frame::DEFAULT_MAX_FRAME_SIZE as usize),
        "{sizes:?}"
    );
    assert!(sizes.len() > 3, "{sizes:?}");
    let welcome = messages[0]
        .welcome
        .as_ref()
        .unwrap_or_else(|| panic!("no welcome"));
    let synced = messages
        .last()
        .and_then(|m| m.synced.as_ref())
        .unwrap_or_else(|| panic!("no synced"));
    assert_eq!(synced.revision, welcome.head_revision);
    assert_eq!(server.hub.stats().connected_agents, 1);
    // The agent resets its stream: its sender goes.
    let mut out = Vec::new();
    Frame::RstStream {
        stream: 1,
        reason: Reason::CANCEL,
    }
    .write(&mut out);
    raw.send(&out).await;
    wait_for(|| server.hub.stats().connected_agents == 0).await;
}

#[tokio::test]
async fn data_goes_out_only_within_the_peers_windows() {
    let server = start(GrpcConfig::default(), 300).await;
    let mut raw = Raw::handshake(server.addr, &[(setting::INITIAL_WINDOW_SIZE, 1000)]).await;
    let mut out = raw.request(1, "/cattail.v1.Sync/Watch", 0);
    out.extend(data(1, &grpc_message(&hello(true)), 0));
    raw.send(&out).await;
    let mut received = BytesMut::new();
    while received.len() < 1000 {
        let got = raw.frame().await.unwrap_or_else(|| panic!("closed"));
        if got.head.kind == kind::DATA {
            received.extend_from_slice(&got.payload);
        }
    }
    assert_eq!(received.len(), 1000, "exactly the stream window, no more");
    // Nothing more comes until the window opens (a PING round trip shows the server idle).
    let mut out = Vec::new();
    Frame::Ping {
        ack: false,
        payload: *b"probe\0\0\0",
    }
    .write(&mut out);
    raw.send(&out).await;
    let got = raw.frame().await.unwrap_or_else(|| panic!("closed"));
    assert_eq!(
        (got.head.kind, got.head.has(flag::ACK)),
        (kind::PING, true),
        "{got:?}"
    );
    let mut out = Vec::new();
    Frame::WindowUpdate {
        stream: 1,
        increment: 1 << 20,
    }
    .write(&mut out);
    Frame::WindowUpdate {
        stream: 0,
        increment: 1 << 20,
    }
    .write(&mut out);
    raw.send(&out).await;
    let (_, messages) = read_until_synced_after(&mut raw, 1, received).await;
    assert!(messages[0].welcome.is_some());
    assert!(messages.last().is_some_and(|m| m.synced.is_some()));
}

#[tokio::test]
async fn a_large_hello_in_padded_frames_and_continuations_is_read() {
    let server = start(GrpcConfig::default(), 10).await;
    let mut raw = Raw::handshake(server.addr, &[]).await;
    // The request's header block in three pieces: HEADERS (padded), CONTINUATION, CONTINUATION.
    let block = raw.request(1, "/cattail.v1.Sync/Watch", 0)[frame::HEADER_LEN..].to_vec();
    let (a, rest) = block.split_at(block.len() / 3);
    let (b, c) = rest.split_at(rest.len() / 2);
    let mut out = Vec::new();
    frame::put_head(&mut out, 1 + a.len() + 4, kind::HEADERS, flag::PADDED, 1);
    out.push(4);
    out.extend_from_slice(a);
    out.extend_from_slice(&[0; 4]);
    frame::put_head(&mut out, b.len(), kind::CONTINUATION, 0, 1);
    out.extend_from_slice(b);
    frame::put_head(&mut out, c.len(), kind::CONTINUATION, flag::END_HEADERS, 1);
    out.extend_from_slice(c);
    // In DATA frames of at most 16 KiB, with padding.
    // A Hello of about 130 KB: a resume with a digest of 16,384 buckets.
    let mut big = hello(true);
    if let Some(AgentPart::Hello(h)) = &mut big.message {
        h.resume = Some(pb::Resume {
            epoch: vec![9; 16].into(),
            revision: 1,
            digests: vec![pb::ResourceDigest {
                resource: "v1/pods".into(),
                scope: "n1".into(),
                fingerprint: 1,
                bucket_count: 16_384,
                buckets: vec![0; 16_384],
            }],
            covered: Vec::new(),
        });
    }
    assert!(big.encoded_len() > 100_000);
    for chunk in grpc_message(&big).chunks(16_000) {
        frame::put_head(&mut out, 1 + chunk.len() + 10, kind::DATA, flag::PADDED, 1);
        out.push(10);
        out.extend_from_slice(chunk);
        out.extend_from_slice(&[0; 10]);
    }
    raw.send(&out).await;
    let (_, messages) = read_until_synced(&mut raw, 1).await;
    assert!(messages[0].welcome.is_some());
}

#[tokio::test]
async fn protocol_errors_close_the_connection_with_their_code_and_nothing_else() {
    let server = start(GrpcConfig::default(), 10).await;
    let mut cases: Vec<(&str, Vec<u8>, Reason)> = Vec::new();
    let mut big = Vec::new();
    frame::put_head(&mut big, 20_000, kind::DATA, 0, 1);
    big.extend(vec![0; 20_000]);
    cases.push(("a frame over 16 KiB", big, Reason::FRAME_SIZE_ERROR));
    let mut out = Vec::new();
    frame::put_head(&mut out, 3, kind::CONTINUATION, flag::END_HEADERS, 1);
    out.extend_from_slice(&[0x82, 0x86, 0x84]);
    cases.push(("CONTINUATION without HEADERS", out, Reason::PROTOCOL_ERROR));
    let mut out = Vec::new();
    frame::put_head(&mut out, 4, kind::HEADERS, flag::END_HEADERS, 1);
    out.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
    cases.push((
        "a header block that is not HPACK",
        out,
        Reason::COMPRESSION_ERROR,
    ));
    cases.push((
        "an even stream id",
        fresh_request(2),
        Reason::PROTOCOL_ERROR,
    ));
    let mut out = Vec::new();
    Frame::WindowUpdate {
        stream: 0,
        increment: 0,
    }
    .write(&mut out);
    cases.push((
        "a zero WINDOW_UPDATE for the connection",
        out,
        Reason::PROTOCOL_ERROR,
    ));
    let mut out = Vec::new();
    Frame::WindowUpdate {
        stream: 0,
        increment: 0x7fff_ffff,
    }
    .write(&mut out);
    cases.push((
        "a connection window over 2^31-1",
        out,
        Reason::FLOW_CONTROL_ERROR,
    ));
    let mut out = Vec::new();
    Frame::Settings(&[(setting::MAX_FRAME_SIZE, 100)]).write(&mut out);
    cases.push((
        "SETTINGS_MAX_FRAME_SIZE under 16 KiB",
        out,
        Reason::PROTOCOL_ERROR,
    ));
    let mut out = Vec::new();
    frame::put_head(&mut out, 5, kind::SETTINGS, 0, 0);
    out.extend_from_slice(&[0; 5]);
    cases.push((
        "a SETTINGS payload not a multiple of 6",
        out,
        Reason::FRAME_SIZE_ERROR,
    ));
    let mut out = Vec::new();
    frame::put_head(&mut out, 4, kind::PING, 0, 0);
    out.extend_from_slice(&[0; 4]);
    cases.push(("a short PING", out, Reason::FRAME_SIZE_ERROR));
    let mut out = Vec::new();
    frame::put_head(&mut out, 0, kind::PUSH_PROMISE, flag::END_HEADERS, 1);
    cases.push(("a PUSH_PROMISE from a client", out, Reason::PROTOCOL_ERROR));
    cases.push((
        "DATA on a stream never opened",
        data(9, b"x", 0),
        Reason::PROTOCOL_ERROR,
    ));
    for (what, bytes, reason) in cases {
        let mut raw = Raw::handshake(server.addr, &[]).await;
        raw.send(&bytes).await;
        assert_eq!(raw.goaway().await, reason, "{what}");
    }
    // A frame before SETTINGS, and a preface that is not HTTP/2.
    let mut raw = Raw::connect(server.addr).await;
    let mut out = frame::PREFACE.to_vec();
    Frame::Ping {
        ack: false,
        payload: [0; 8],
    }
    .write(&mut out);
    raw.send(&out).await;
    assert_eq!(raw.goaway().await, Reason::PROTOCOL_ERROR);
    let mut raw = Raw::connect(server.addr).await;
    raw.send(b"GET / HTTP/1.1\r\nHost: cattail\r\n\r\n").await;
    while raw.frame().await.is_some() {}
    // The server is unharmed: a good stream still gets its snapshot.
    let mut raw = Raw::handshake(server.addr, &[]).await;
    let mut out = raw.request(1, "/cattail.v1.Sync/Watch", 0);
    out.extend(data(1, &grpc_message(&hello(true)), 0));
    raw.send(&out).await;
    read_until_synced(&mut raw, 1).await;
}

#[tokio::test]
async fn stream_errors_reset_only_their_stream() {
    let config = GrpcConfig {
        initial_stream_window_bytes: 1000,
        ..GrpcConfig::default()
    };
    let server = start(config, 10).await;
    let mut raw = Raw::handshake(server.addr, &[]).await;
    let mut out = raw.request(1, "/cattail.v1.Sync/Watch", 0);
    out.extend(data(1, &grpc_message(&hello(true)), 0));
    // Stream 3 sends more than its window of 1,000 bytes (the connection's is larger).
    out.extend(raw.request(3, "/cattail.v1.Sync/Watch", 0));
    out.extend(data(3, &vec![0; 16_000], 0));
    // Stream 5 gets a WINDOW_UPDATE of 0.
    out.extend(raw.request(5, "/cattail.v1.Sync/Watch", 0));
    Frame::WindowUpdate {
        stream: 5,
        increment: 0,
    }
    .write(&mut out);
    raw.send(&out).await;
    let mut resets = Vec::new();
    while resets.len() < 2 {
        let got = raw.frame().await.unwrap_or_else(|| panic!("closed"));
        if got.head.kind != kind::RST_STREAM {
            continue;
        }
        let code = u32::from_be_bytes(got.payload[..4].try_into().unwrap_or_default());
        resets.push((got.head.stream, Reason(code)));
    }
    resets.sort_by_key(|(stream, _)| *stream);
    assert_eq!(
        resets,
        [(3, Reason::FLOW_CONTROL_ERROR), (5, Reason::PROTOCOL_ERROR)]
    );
    // Stream 1 is unharmed: its sender is the one still connected.
    wait_for(|| server.hub.stats().connected_agents == 1).await;
}

#[tokio::test]
async fn requests_that_are_not_watch_calls_get_a_clear_answer() {
    let server = start(GrpcConfig::default(), 0).await;
    let mut raw = Raw::handshake(server.addr, &[]).await;
    let get = raw.headers(
        1,
        &[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "x"),
        ],
        flag::END_HEADERS | flag::END_STREAM,
    );
    raw.send(&get).await;
    let text = raw.headers(
        3,
        &[
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/cattail.v1.Sync/Watch"),
            (":authority", "x"),
            ("content-type", "text/plain"),
        ],
        flag::END_HEADERS | flag::END_STREAM,
    );
    raw.send(&text).await;
    let other = raw.request(5, "/cattail.v1.Sync/List", flag::END_STREAM);
    raw.send(&other).await;
    let unknown = raw.request(7, "/foo.Bar/Baz", flag::END_STREAM);
    raw.send(&unknown).await;
    let gzip = raw.headers(
        9,
        &[
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/cattail.v1.Sync/Watch"),
            (":authority", "x"),
            ("content-type", "application/grpc+proto"),
            ("grpc-encoding", "gzip"),
        ],
        flag::END_HEADERS,
    );
    raw.send(&gzip).await;
    let (mut answers, mut bodies, mut resets) = (Vec::new(), Vec::new(), Vec::new());
    while answers.len() < 5 || bodies.len() < 2 || resets.is_empty() {
        let got = raw.frame().await.unwrap_or_else(|| panic!("closed"));
        let stream = got.head.stream;
        match got.head.kind {
            kind::HEADERS => {
                // gRPC refusals are trailers-only; HTTP errors have a text body.
                let http_error = stream == 1 || stream == 3;
                assert_eq!(got.head.has(flag::END_STREAM), !http_error, "{got:?}");
                answers.push((stream, fields(&got.payload)));
            }
            kind::DATA => {
                assert!(got.head.has(flag::END_STREAM), "{got:?}");
                bodies.push((stream, String::from_utf8_lossy(&got.payload).into_owned()));
            }
            kind::RST_STREAM => resets.push(stream),
            _ => {}
        }
    }
    bodies.sort();
    assert_eq!(bodies.len(), 2);
    for (i, (stream, body)) in bodies.iter().enumerate() {
        assert_eq!(*stream, 2 * i as u32 + 1);
        assert!(body.contains("gRPC only"), "{body}");
    }
    answers.sort_by_key(|(stream, _)| *stream);
    let status = |i: usize| field(&answers[i].1, ":status").map(str::to_owned);
    let grpc = |i: usize| field(&answers[i].1, "grpc-status").map(str::to_owned);
    let message = |i: usize| {
        field(&answers[i].1, "grpc-message")
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(status(0).as_deref(), Some("405"));
    assert_eq!(status(1).as_deref(), Some("415"));
    assert_eq!(grpc(2).as_deref(), Some("12"));
    assert!(message(2).contains("only Watch"), "{}", message(2));
    assert_eq!(grpc(3).as_deref(), Some("12"));
    assert!(message(3).contains("foo.Bar"), "{}", message(3));
    assert_eq!(grpc(4).as_deref(), Some("12"));
    assert!(message(4).contains("gzip"), "{}", message(4));
    // The stream that had not ended its side is told to stop sending.
    assert_eq!(resets, [9]);
}

#[tokio::test]
async fn streams_over_the_limit_are_refused() {
    let config = GrpcConfig {
        max_concurrent_streams: 1,
        ..GrpcConfig::default()
    };
    let server = start(config, 0).await;
    let mut raw = Raw::handshake(server.addr, &[]).await;
    let mut out = raw.request(1, "/cattail.v1.Sync/Watch", 0);
    out.extend(data(1, &grpc_message(&hello(false)), 0));
    out.extend(raw.request(3, "/cattail.v1.Sync/Watch", 0));
    raw.send(&out).await;
    let reset = raw
        .until(kind::RST_STREAM)
        .await
        .unwrap_or_else(|| panic!("closed"));
    assert_eq!(reset.head.stream, 3);
    assert_eq!(&reset.payload[..], &Reason::REFUSED_STREAM.0.to_be_bytes());
}

#[tokio::test]
async fn shutdown_ends_streams_with_unavailable_then_says_goaway() {
    let server = start(GrpcConfig::default(), 10).await;
    let mut raw = Raw::handshake(server.addr, &[]).await;
    let mut out = raw.request(1, "/cattail.v1.Sync/Watch", 0);
    out.extend(data(1, &grpc_message(&hello(true)), 0));
    raw.send(&out).await;
    read_until_synced(&mut raw, 1).await;
    server.shutdown.cancel();
    let (mut trailers, mut goaway) = (None, None);
    while let Some(got) = raw.frame().await {
        match got.head.kind {
            kind::HEADERS => trailers = Some(fields(&got.payload)),
            kind::GOAWAY => {
                goaway = Some(u32::from_be_bytes(
                    got.payload[4..8].try_into().unwrap_or_default(),
                ))
            }
            _ => {}
        }
    }
    let trailers = trailers.unwrap_or_else(|| panic!("no trailers"));
    assert_eq!(field(&trailers, "grpc-status"), Some("14"));
    assert!(field(&trailers, "grpc-message").is_some_and(|m| m.contains("shutting down")));
    assert_eq!(goaway, Some(Reason::NO_ERROR.0));
    tokio::time::timeout(DEADLINE, server.task)
        .await
        .unwrap_or_else(|_| panic!("serve did not return"))
        .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn a_peer_that_stops_answering_pings_is_closed_and_one_that_answers_stays() {
    let config = GrpcConfig {
        http2_keepalive_interval: Some(Duration::from_millis(100)),
        http2_keepalive_timeout: Some(Duration::from_millis(200)),
        ..GrpcConfig::default()
    };
    let server = start(config, 0).await;
    let mut silent = Raw::handshake(server.addr, &[]).await;
    let mut polite = Raw::handshake(server.addr, &[]).await;
    let mut pings = 0;
    while pings < 5 {
        let got = polite
            .until(kind::PING)
            .await
            .unwrap_or_else(|| panic!("the polite peer was closed"));
        let mut out = Vec::new();
        Frame::Ping {
            ack: true,
            payload: got.payload[..8].try_into().unwrap_or_default(),
        }
        .write(&mut out);
        polite.send(&out).await;
        pings += 1;
    }
    // By now the silent peer is long past its deadline.
    let mut saw_ping = false;
    while let Some(got) = silent.frame().await {
        saw_ping |= got.head.kind == kind::PING;
    }
    assert!(saw_ping);
}

/// Waits for `condition`, up to the deadline.
async fn wait_for(condition: impl Fn() -> bool) {
    tokio::time::timeout(DEADLINE, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("condition not met within {DEADLINE:?}"));
}

#[tokio::test]
async fn a_peer_that_opens_and_resets_streams_by_the_thousand_is_told_to_calm_down() {
    let server = start(GrpcConfig::default(), 0).await;
    let mut raw = Raw::handshake(server.addr, &[]).await;
    let mut out = Vec::new();
    for i in 0..1001u32 {
        let stream = 2 * i + 1;
        out.extend(raw.request(stream, "/cattail.v1.Sync/Watch", 0));
        Frame::RstStream {
            stream,
            reason: Reason::CANCEL,
        }
        .write(&mut out);
    }
    raw.send(&out).await;
    assert_eq!(raw.goaway().await, Reason::ENHANCE_YOUR_CALM);
    // No sender outlives its stream.
    wait_for(|| server.hub.stats().connected_agents == 0).await;
}

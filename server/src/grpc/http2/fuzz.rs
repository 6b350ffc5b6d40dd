//! Entry points for the fuzz targets in `fuzz/` (docs/FUZZING.md): thin wrappers that hand
//! arbitrary input to the native transport's frame parser, HPACK decoder, gRPC message reader
//! and whole connection, which are private to this module tree. Each panics when the code
//! breaks its contract, which is what the fuzzer looks for; the regression tests at the end
//! feed the inputs it found. Built with the `fuzzing` feature and for tests only.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cattail_proto::pb::AgentMessage;
use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::config::Resource;
use crate::fanout::{FanoutConfig, Hub, ResourceInfo};
use crate::grpc::GrpcConfig;
use crate::store::{Batch, ProjectedObject, Store};

use super::connection::Connection;
use super::frame::{self, Head, Reason, flag, kind};
use super::hpack::Decoder;
use super::inbound::MessageReader;
use super::{HELLO_ENVELOPE_BYTES, Services};

/// The HTTP/2 connection preface, for targets that build a connection's input.
pub const PREFACE: &[u8] = frame::PREFACE;

/// Parses `data` as a frame header and payload with every payload parser, and checks each
/// against the rules of RFC 9113 section 6 written out again here.
pub fn parse_frame(data: &[u8]) {
    let Some(head) = Head::parse(data) else {
        assert!(
            data.len() < frame::HEADER_LEN,
            "no header in {} bytes",
            data.len()
        );
        return;
    };
    assert!(head.len <= frame::MAX_MAX_FRAME_SIZE && head.stream <= 0x7fff_ffff);
    let mut written = Vec::new();
    frame::put_head(
        &mut written,
        head.len as usize,
        head.kind,
        head.flags,
        head.stream,
    );
    let mut expected = data[..frame::HEADER_LEN].to_vec();
    expected[5] &= 0x7f;
    assert_eq!(written, expected, "the header does not round-trip");

    let rest = &data[frame::HEADER_LEN..];
    let payload = rest.get(..head.len as usize).unwrap_or(rest);
    let settings = frame::settings(payload).map(Iterator::count);
    assert_eq!(
        settings.ok(),
        payload.len().is_multiple_of(6).then_some(payload.len() / 6)
    );
    assert_eq!(
        frame::u32_payload(head, payload).is_ok(),
        payload.len() == 4
    );
    assert_eq!(frame::ping_payload(payload).is_ok(), payload.len() == 8);

    let unpadded = frame::unpad(head, payload);
    match (unpadded, unpad_model(head, payload)) {
        (Ok(body), Ok(range)) => assert!(
            std::ptr::eq(body, &payload[range.clone()]),
            "unpad gave {} bytes, not {range:?} of {}",
            body.len(),
            payload.len()
        ),
        (Err(error), Err(reason)) => assert_eq!(error.reason, reason, "{error}"),
        (got, want) => panic!("unpad gave {got:?}; the RFC says {want:?}"),
    }

    // The writers: each frame's length field counts exactly what follows it.
    let debug = String::from_utf8_lossy(payload);
    let mut goaway = Vec::new();
    frame::put_goaway(&mut goaway, head.stream, Reason(head.flags.into()), &debug);
    let settings: Vec<(u16, u32)> = payload
        .chunks_exact(6)
        .map(|s| (u16::from(s[0]), u32::from(s[1])))
        .collect();
    let mut written = Vec::new();
    frame::put_settings(&mut written, &settings);
    for bytes in [&goaway, &written] {
        let parsed = Head::parse(bytes).unwrap_or_else(|| panic!("no header written"));
        assert_eq!(parsed.len as usize + frame::HEADER_LEN, bytes.len());
    }
    assert!(goaway.len() <= frame::HEADER_LEN + 8 + 256);
}

/// Where the body of a DATA or HEADERS payload is, by RFC 9113 6.1 and 6.2, or the error code.
fn unpad_model(head: Head, payload: &[u8]) -> Result<std::ops::Range<usize>, Reason> {
    let padded = head.flags & flag::PADDED != 0;
    let priority = head.kind == kind::HEADERS && head.flags & flag::PRIORITY != 0;
    let start = usize::from(padded) + if priority { 5 } else { 0 };
    if payload.len() < start {
        return Err(Reason::FRAME_SIZE_ERROR);
    }
    let pad = if padded { usize::from(payload[0]) } else { 0 };
    if pad > payload.len() - start {
        return Err(Reason::PROTOCOL_ERROR);
    }
    Ok(start..payload.len() - pad)
}

/// Splits a fuzz input into pieces, each written as a 2-byte big-endian length and that many
/// bytes (the last piece may be cut short): the seed generator below writes the same format.
pub fn split(mut data: &[u8]) -> Vec<&[u8]> {
    let mut pieces = Vec::new();
    while let [high, low, rest @ ..] = data {
        let len = usize::from(u16::from_be_bytes([*high, *low])).min(rest.len());
        let (piece, after) = rest.split_at(len);
        pieces.push(piece);
        data = after;
    }
    pieces
}

/// Joins pieces in the format [`split`] reads.
pub fn join(pieces: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in pieces {
        let len = u16::try_from(piece.len()).unwrap_or_else(|_| panic!("a piece over 64 KiB"));
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(piece);
    }
    out
}

/// A connection's HPACK decoder, for a differential target.
#[derive(Debug)]
pub struct Hpack(Decoder);

/// A decoded header field: name and value.
pub type Field = (Vec<u8>, Vec<u8>);

impl Hpack {
    /// A decoder whose dynamic table may grow to `table_size` bytes.
    pub fn new(table_size: usize) -> Self {
        Self(Decoder::new(table_size))
    }

    /// Decodes one header block.
    ///
    /// # Errors
    /// The decoder's message for a malformed block.
    pub fn decode(&mut self, block: &[u8]) -> Result<Vec<Field>, String> {
        let mut fields = Vec::new();
        self.0.decode(block, |name, value| {
            fields.push((name.to_vec(), value.to_vec()))
        })?;
        Ok(fields)
    }
}

/// Feeds DATA payloads to a stream's gRPC message reader, and checks what it delivers against
/// the gRPC length-prefixed framing written out again here: every whole message in order, then
/// at most one error, and nothing after it. `data` is the message limit (2 bytes, big-endian)
/// then the payloads in the format [`split`] reads.
pub fn message_reader(data: &[u8]) {
    let [high, low, rest @ ..] = data else {
        return;
    };
    let limit = usize::from(u16::from_be_bytes([*high, *low]));
    let chunks = split(rest);
    let mut reader = MessageReader::new(limit);
    let mut got = Vec::new();
    for chunk in &chunks {
        reader.push(chunk, |item| got.push(item));
    }
    let all: Vec<u8> = chunks.concat();
    let (want, partial) = read_model(limit, &all);
    let got_ok: Vec<_> = got.iter().map(|item| item.as_ref().ok()).collect();
    let want_ok: Vec<_> = want.iter().map(|item| item.as_ref().ok()).collect();
    assert_eq!(
        got_ok, want_ok,
        "messages, or where reading stopped, differ"
    );
    if let Some(Err(_)) = got.last() {
        assert!(
            !reader.is_partial(),
            "a failed reader still holds a message"
        );
    } else {
        assert_eq!(reader.is_partial(), partial);
    }
}

/// The messages in `bytes` and whether a message is left part-way; reading stops at the first
/// error (over the limit, compressed, or not an `AgentMessage`).
fn read_model(limit: usize, mut bytes: &[u8]) -> (Vec<Result<AgentMessage, ()>>, bool) {
    let mut out = Vec::new();
    while bytes.len() >= 5 {
        let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        if len > limit || bytes[0] != 0 {
            out.push(Err(()));
            return (out, false);
        }
        let Some(body) = bytes.get(5..5 + len) else {
            return (out, true);
        };
        match AgentMessage::decode(body) {
            Ok(message) => out.push(Ok(message)),
            Err(_) => {
                out.push(Err(()));
                return (out, false);
            }
        }
        bytes = &bytes[5 + len..];
    }
    (out, !bytes.is_empty())
}

/// A piece of a connection's input: bytes the client writes, then how long it waits.
#[derive(Debug, Clone, Default)]
pub struct Step {
    /// Written at once.
    pub bytes: Vec<u8>,
    /// Virtual time before the next step.
    pub pause: Duration,
}

/// The longest a connection may live after its input's pauses: the keepalive (a PING after
/// 30 s, unanswered for 10 s) closes it well before.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(600);

thread_local! {
    /// One runtime per fuzzing thread, with the clock paused: the connection's timers (the
    /// handshake deadline, keepalive, Hello deadline, linger) fire as soon as nothing else can
    /// run, so every connection ends in a few milliseconds of real time.
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap_or_else(|e| panic!("cannot build a runtime: {e}"));
}

/// The most of the server's answer [`connection`] keeps (it reads it all).
const KEEP_OUTPUT_BYTES: usize = 1 << 20;

/// Runs one connection of the native transport, in sync and holding a few pods, against a
/// client that writes `steps` and reads everything the server sends; returns the first
/// [`KEEP_OUTPUT_BYTES`] of it. Panics if the server panics or if the connection does not end
/// within [`CONNECTION_DEADLINE`] of virtual time after the steps' pauses.
///
/// The connection runs over loopback TCP, the one kind of socket `Connection` takes.
pub fn connection(steps: &[Step]) -> Vec<u8> {
    RUNTIME.with(|runtime| runtime.block_on(run_connection(steps)))
}

async fn run_connection(steps: &[Step]) -> Vec<u8> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("cannot listen on loopback: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("no local address: {e}"));
    let (client, accepted) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
    let client = client.unwrap_or_else(|e| panic!("cannot connect: {e}"));
    let (socket, peer) = accepted.unwrap_or_else(|e| panic!("cannot accept: {e}"));
    let config = GrpcConfig {
        http2_keepalive_interval: Some(Duration::from_secs(30)),
        http2_keepalive_timeout: Some(Duration::from_secs(10)),
        ..GrpcConfig::default()
    };
    let hub = hub();
    let fanout = hub.config();
    let services = Arc::new(Services {
        max_inbound_bytes: fanout.max_hello_bytes as usize + HELLO_ENVELOPE_BYTES,
        max_message_bytes: fanout.max_message_bytes as usize,
        hub,
        shutdown: CancellationToken::new(),
        config,
    });
    let server = Connection::new(socket, peer, services);
    let (mut read, mut write) = client.into_split();
    let writer = async move {
        for step in steps {
            if write.write_all(&step.bytes).await.is_err() {
                // The server closed the connection: the rest cannot be sent.
                break;
            }
            tokio::time::sleep(step.pause).await;
        }
        // The write half stays open: the server ends the connection itself.
        write
    };
    let reader = async move {
        let mut output = Vec::new();
        let mut buf = vec![0; 64 * 1024];
        while let Ok(n) = read.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let keep = n.min(KEEP_OUTPUT_BYTES - output.len());
            output.extend_from_slice(&buf[..keep]);
        }
        output
    };
    let deadline = CONNECTION_DEADLINE + steps.iter().map(|step| step.pause).sum::<Duration>();
    let all = async { tokio::join!(server, writer, reader) };
    match tokio::time::timeout(deadline, all).await {
        Ok(((), _, output)) => output,
        Err(_) => panic!("the connection did not end within {deadline:?} of virtual time"),
    }
}

/// A hub in sync, holding three pods on node `n1`.
fn hub() -> Hub {
    let pods = Resource::parse("v1/pods").unwrap_or_else(|e| panic!("{e}"));
    let mut store = Store::new([pods.clone()]);
    let mut batch = Batch::new();
    for i in 0..3 {
        batch.apply(
            &pods,
            ProjectedObject {
                namespace: "a".into(),
                name: format!("pod-{i}"),
                value: Bytes::from(format!(r#"{{"n":"pod-{i}"}}"#)),
                resource_version: "1".into(),
                scope: Some("n1".into()),
            },
        );
    }
    let hub = Hub::new(
        FanoutConfig::default(),
        store.snapshot(),
        vec![ResourceInfo {
            resource: pods,
            fingerprint: 1,
            scope_field: Some("spec.nodeName".into()),
        }],
    );
    if let Ok(Some(published)) = store.commit(batch) {
        hub.publish(&published, store.snapshot());
    }
    hub.set_in_sync(true);
    hub
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use cattail_proto::pb::agent_message::Message;
    use cattail_proto::pb::{Ack, Hello, Subscription};

    use super::*;

    /// The committed seed corpus, one folder per target.
    fn seeds_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds")
    }

    /// Bytes from hex digits, spaces ignored (as RFC 7541 prints its examples).
    fn hex(text: &str) -> Vec<u8> {
        let text: String = text.split_whitespace().collect();
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap_or_else(|e| panic!("{e}")))
            .collect()
    }

    fn put(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        frame::put_head(out, payload.len(), kind, flags, stream);
        out.extend_from_slice(payload);
    }

    fn grpc(message: &AgentMessage) -> Vec<u8> {
        let body = message.encode_to_vec();
        let mut out = vec![0];
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    fn hello() -> AgentMessage {
        AgentMessage {
            message: Some(Message::Hello(Hello {
                protocol_version: cattail_proto::PROTOCOL_VERSION,
                agent_id: "seed".into(),
                node_name: "n1".into(),
                subscriptions: vec![Subscription {
                    resource: "v1/pods".into(),
                    node_scoped: true,
                }],
                ..Hello::default()
            })),
        }
    }

    fn ack(revision: u64) -> AgentMessage {
        AgentMessage {
            message: Some(Message::Ack(Ack { revision })),
        }
    }

    /// A client's preface, SETTINGS, the ACK of the server's, and a request for `path`.
    fn request(path: &str, end_stream: bool) -> Vec<u8> {
        let mut out = PREFACE.to_vec();
        frame::put_settings(&mut out, &[(0x4, 1 << 20)]);
        put(&mut out, kind::SETTINGS, flag::ACK, 0, &[]);
        let block = loona_hpack::Encoder::new().encode([
            (&b":method"[..], &b"POST"[..]),
            (b":scheme", b"http"),
            (b":path", path.as_bytes()),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        ]);
        let flags = flag::END_HEADERS | if end_stream { flag::END_STREAM } else { 0 };
        put(&mut out, kind::HEADERS, flags, 1, &block);
        out
    }

    /// The headers of the whole frames in a server's output, after its first SETTINGS.
    fn frames(mut output: &[u8]) -> Vec<Head> {
        let mut heads = Vec::new();
        while let Some(head) = Head::parse(output) {
            let Some(rest) = output.get(frame::HEADER_LEN + head.len as usize..) else {
                break;
            };
            heads.push(head);
            output = rest;
        }
        heads
    }

    /// Every seed: target, file name, bytes.
    fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
        let mut seeds = Vec::new();
        let mut frame_seed = |name, kind, flags, stream, payload: &[u8]| {
            let mut out = Vec::new();
            put(&mut out, kind, flags, stream, payload);
            seeds.push(("frame", name, out));
        };
        frame_seed(
            "settings",
            kind::SETTINGS,
            0,
            0,
            &hex("0003 0000 0064 0004 0004 0000"),
        );
        frame_seed("settings-ack", kind::SETTINGS, flag::ACK, 0, &[]);
        frame_seed(
            "headers-padded-priority",
            kind::HEADERS,
            0x2d,
            1,
            &hex("02 8000 0003 0f 8286 0000"),
        );
        frame_seed(
            "data-padded",
            kind::DATA,
            0x9,
            1,
            &hex("03 0000 0000 00 000000"),
        );
        frame_seed(
            "window-update",
            kind::WINDOW_UPDATE,
            0,
            1,
            &hex("0000 ffff"),
        );
        frame_seed("rst-stream", kind::RST_STREAM, 0, 3, &hex("0000 0008"));
        frame_seed("ping", kind::PING, 0, 0, b"cattail\0");
        frame_seed(
            "goaway",
            kind::GOAWAY,
            0,
            0,
            &hex("0000 0001 0000 0000 6279 65"),
        );
        frame_seed("continuation", kind::CONTINUATION, 0x4, 1, &hex("8286"));

        let rfc = |blocks: &[&str]| {
            join(
                &blocks
                    .iter()
                    .map(|b| hex(b))
                    .collect::<Vec<_>>()
                    .iter()
                    .map(Vec::as_slice)
                    .collect::<Vec<_>>(),
            )
        };
        seeds.push((
            "hpack",
            "rfc7541-c3",
            rfc(&[
                "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
                "8286 84be 5808 6e6f 2d63 6163 6865",
                "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
            ]),
        ));
        seeds.push((
            "hpack",
            "rfc7541-c4-huffman",
            rfc(&[
                "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
                "8286 84be 5886 a8eb 1064 9cbf",
                "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
            ]),
        ));
        seeds.push((
            "hpack",
            "size-update-then-field",
            rfc(&["3fe1 1f 82", "20 418c f1e3 c2e5 f23a 6ba0 ab90 f4ff"]),
        ));
        let mut encoder = loona_hpack::Encoder::new();
        let grpc_request: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":path", b"/cattail.v1.Sync/Watch"),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        ];
        let first = encoder.encode(grpc_request.iter().copied());
        let second = encoder.encode(grpc_request.iter().copied());
        seeds.push(("hpack", "grpc-requests", join(&[&first, &second])));

        let framed_hello = grpc(&hello());
        let (a, b) = framed_hello.split_at(7);
        let limit = 1024u16.to_be_bytes();
        let inbound = |pieces: &[&[u8]]| [&limit[..], &join(pieces)].concat();
        seeds.push(("inbound", "hello-split", inbound(&[a, b])));
        seeds.push((
            "inbound",
            "hello-acks",
            inbound(&[&[framed_hello.as_slice(), &grpc(&ack(7)), &grpc(&ack(8))].concat()]),
        ));
        let mut compressed = grpc(&ack(1));
        compressed[0] = 1;
        seeds.push(("inbound", "compressed", inbound(&[&compressed])));
        seeds.push((
            "inbound",
            "over-limit",
            [&[0, 4][..], &join(&[&framed_hello])].concat(),
        ));

        let mut watch = request(super::super::WATCH_PATH, false);
        put(&mut watch, kind::DATA, 0, 1, &framed_hello);
        put(&mut watch, kind::DATA, 0, 1, &grpc(&ack(1)));
        seeds.push(("connection_bytes", "watch", watch.clone()));
        let mut reset = watch.clone();
        put(&mut reset, kind::RST_STREAM, 0, 1, &hex("0000 0008"));
        seeds.push(("connection_bytes", "watch-reset", reset));
        let mut goaway = watch;
        put(&mut goaway, kind::WINDOW_UPDATE, 0, 0, &hex("0001 0000"));
        put(&mut goaway, kind::PING, 0, 0, b"12345678");
        put(&mut goaway, kind::GOAWAY, 0, 0, &hex("0000 0001 0000 0000"));
        seeds.push(("connection_bytes", "watch-goaway", goaway));
        seeds.push(("connection_bytes", "health-check", {
            let mut out = request("/grpc.health.v1.Health/Check", false);
            put(&mut out, kind::DATA, flag::END_STREAM, 1, &[0, 0, 0, 0, 0]);
            out
        }));
        seeds
    }

    /// The committed seeds are what [`seeds`] writes, and each passes its target's checks.
    /// `CATTAIL_WRITE_FUZZ_SEEDS=1 cargo test -p cattail-server --lib fuzz::tests::seeds`
    /// rewrites them.
    #[test]
    fn seeds_are_current_and_pass_their_targets() {
        let write = std::env::var_os("CATTAIL_WRITE_FUZZ_SEEDS").is_some();
        for (target, name, bytes) in seeds() {
            match target {
                "frame" => parse_frame(&bytes),
                "hpack" => {
                    let mut decoder = Hpack::new(4096);
                    for block in split(&bytes) {
                        if let Err(error) = decoder.decode(block) {
                            panic!("{name}: {error}");
                        }
                    }
                }
                "inbound" => message_reader(&bytes),
                _ => {
                    let output = connection(&[Step {
                        bytes: bytes.clone(),
                        pause: Duration::ZERO,
                    }]);
                    // Each request not reset at once is answered: HEADERS on stream 1, and
                    // a Welcome for a Watch.
                    let answered = |kind| {
                        frames(&output)
                            .iter()
                            .any(|head| head.kind == kind && head.stream == 1)
                    };
                    if name != "watch-reset" {
                        assert!(
                            answered(kind::HEADERS),
                            "{name}: no response in {output:02x?}"
                        );
                    }
                    if name.starts_with("watch") {
                        assert_eq!(answered(kind::DATA), name != "watch-reset", "{name}");
                    }
                }
            }
            let path = seeds_dir().join(target).join(name);
            if write {
                std::fs::create_dir_all(seeds_dir().join(target)).unwrap_or_else(|e| panic!("{e}"));
                std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("{e}"));
            }
            let committed =
                std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                committed == bytes,
                "{} is stale: rewrite the seeds",
                path.display()
            );
        }
    }
}

//! The fuzz targets' seed corpus (`fuzz/seeds`), written and checked by a test, and the
//! regression tests for what the fuzzer found.

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

use crate::grpc::framing::tests::framed as grpc;

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
    frame::Frame::Settings(&[(0x4, 1 << 20)]).write(&mut out);
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

    let mut watch = request("/cattail.v1.Sync/Watch", false);
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
        let committed = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            committed == bytes,
            "{} is stale: rewrite the seeds",
            path.display()
        );
    }
}

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

use super::Services;
use super::connection::Connection;
use super::frame::{self, Frame, Head, Reason, flag, kind};
use super::hpack::Decoder;
use crate::grpc::framing::InboundBudget;
use crate::grpc::framing::MessageReader;

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
    Frame::GoAway {
        last_stream: head.stream,
        reason: Reason(head.flags.into()),
        debug: &debug,
    }
    .write(&mut goaway);
    let settings: Vec<(u16, u32)> = payload
        .chunks_exact(6)
        .map(|s| (u16::from(s[0]), u32::from(s[1])))
        .collect();
    let mut written = Vec::new();
    Frame::Settings(&settings).write(&mut written);
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
    // A budget no single reader can exhaust: the shared budget is tested on its own.
    let budget = Arc::new(InboundBudget::for_messages(limit));
    let mut reader = MessageReader::new(limit, budget);
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
    let services = Arc::new(Services::new(hub(), config, CancellationToken::new()));
    let server = Connection::new(super::io::Io::Plain(socket), peer, None, services);
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
mod tests;

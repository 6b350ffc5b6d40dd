//! Tests for payload encoding, bounded decoding and the concatenation of pieces.

use std::io::Write;

use super::*;
use crate::pb::{Heartbeat, ObjectKey, Synced, Upsert};

const LIMIT: usize = 1 << 20;

fn pod(name: &str) -> Upsert {
    Upsert {
        namespace: "default".to_owned(),
        name: name.to_owned(),
        value: Bytes::from(format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","namespace":"default"}}}}"#
        )),
        resource_version: "12345".to_owned(),
    }
}

fn payload(pods: usize) -> FramePayload {
    FramePayload {
        upserts: (0..pods).map(|i| pod(&format!("web-{i}"))).collect(),
        deletes: vec![ObjectKey {
            namespace: "default".to_owned(),
            name: "gone".to_owned(),
        }],
    }
}

fn header(revision: u64) -> FrameHeader {
    FrameHeader {
        revision,
        resource: "v1/pods".to_owned(),
        scope: "node-1".to_owned(),
        replace: false,
        publish_time_unix_nanos: 1_700_000_000_000_000_000,
        replaced_buckets: Vec::new(),
    }
}

fn frame(encoding: Encoding, pods: usize) -> Frame {
    encode_frame(header(7), &payload(pods), encoding, DEFAULT_ZSTD_LEVEL).unwrap()
}

#[test]
fn frames_round_trip_in_both_encodings() {
    for encoding in [Encoding::Proto, Encoding::ProtoZstd] {
        let frame = frame(encoding, 50);
        assert_eq!(frame.encoding, encoding as i32);
        assert_eq!(frame.revision, 7);
        assert_eq!(frame.resource, "v1/pods");
        assert_eq!(frame.scope, "node-1");
        assert_eq!(frame.publish_time_unix_nanos, 1_700_000_000_000_000_000);
        assert_eq!(
            frame.uncompressed_length as usize,
            payload(50).encoded_len()
        );
        assert_eq!(
            decode_payload(&frame, LIMIT).unwrap(),
            payload(50),
            "{encoding:?}"
        );
    }
}

#[test]
fn zstd_compresses_and_is_one_frame() {
    let plain = frame(Encoding::Proto, 200);
    let compressed = frame(Encoding::ProtoZstd, 200);
    assert!(
        compressed.payload.len() * 4 < plain.payload.len(),
        "{} compressed bytes for {} plain",
        compressed.payload.len(),
        plain.payload.len()
    );
    let decompressed = zstd::bulk::decompress(&compressed.payload, LIMIT).unwrap();
    assert_eq!(decompressed, plain.payload.as_ref());
}

#[test]
fn empty_payloads_round_trip() {
    for encoding in [Encoding::Proto, Encoding::ProtoZstd] {
        let frame = encode_frame(header(1), &FramePayload::default(), encoding, 3).unwrap();
        assert_eq!(frame.uncompressed_length, 0);
        assert_eq!(decode_payload(&frame, 0).unwrap(), FramePayload::default());
    }
}

#[test]
fn plain_payloads_share_the_frame_buffer() {
    let frame = frame(Encoding::Proto, 3);
    let decoded = decode_payload(&frame, LIMIT).unwrap();
    let buffer = frame.payload.as_ptr_range();
    for upsert in &decoded.upserts {
        assert!(buffer.contains(&upsert.value.as_ptr()), "value was copied");
    }
}

#[test]
fn declared_sizes_over_the_limit_are_refused() {
    for encoding in [Encoding::Proto, Encoding::ProtoZstd] {
        let frame = frame(encoding, 20);
        let limit = frame.uncompressed_length as usize - 1;
        let error = decode_payload(&frame, limit).unwrap_err();
        assert!(
            matches!(error, Error::PayloadTooLarge { size, .. } if size == u64::from(frame.uncompressed_length)),
            "{encoding:?}: {error:?}"
        );
        assert!(decode_payload(&frame, limit + 1).is_ok());
    }
}

#[test]
fn recorded_sizes_over_the_limit_are_refused_whatever_the_declaration() {
    // A hostile frame: a megabyte of zeros that claims to be 100 bytes.
    let zeros = vec![0u8; 1 << 20];
    let mut frame = frame(Encoding::ProtoZstd, 1);
    frame.payload = Bytes::from(zstd::bulk::compress(&zeros, 3).unwrap());
    frame.uncompressed_length = 100;
    let error = decode_payload(&frame, 1000).unwrap_err();
    assert!(
        matches!(error, Error::PayloadTooLarge { size, limit: 1000 } if size == 1 << 20),
        "{error:?}"
    );
}

#[test]
fn unrecorded_sizes_cannot_decompress_past_the_declaration() {
    // A streaming encoder does not record the size in the frame header.
    let zeros = vec![0u8; 1 << 20];
    let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    encoder.write_all(&zeros).unwrap();
    let stream = encoder.finish().unwrap();
    assert!(matches!(
        zstd::zstd_safe::get_frame_content_size(&stream),
        Ok(None)
    ));

    let mut frame = frame(Encoding::ProtoZstd, 1);
    frame.payload = Bytes::from(stream);
    frame.uncompressed_length = 100;
    let error = decode_payload(&frame, LIMIT * 4).unwrap_err();
    assert!(
        matches!(error, Error::Decompress { declared: 100, .. }),
        "{error:?}"
    );
}

#[test]
fn lengths_that_disagree_with_the_payload_are_refused() {
    for encoding in [Encoding::Proto, Encoding::ProtoZstd] {
        let mut frame = frame(encoding, 5);
        frame.uncompressed_length -= 1;
        let error = decode_payload(&frame, LIMIT).unwrap_err();
        assert!(
            matches!(error, Error::UncompressedLengthMismatch { .. }),
            "{error:?}"
        );
    }
}

#[test]
fn corrupt_or_padded_zstd_is_refused() {
    let good = frame(Encoding::ProtoZstd, 5);

    let mut padded = good.clone();
    padded.payload = Bytes::from([good.payload.as_ref(), b"junk"].concat());
    let error = decode_payload(&padded, LIMIT).unwrap_err();
    assert!(
        error.to_string().contains("4 bytes follow the zstd frame"),
        "{error}"
    );

    let mut corrupt = good.clone();
    corrupt.payload = Bytes::from_static(b"this is not zstd");
    assert!(matches!(
        decode_payload(&corrupt, LIMIT),
        Err(Error::Decompress { .. })
    ));

    let mut truncated = good.clone();
    truncated.payload = good.payload.slice(..good.payload.len() - 3);
    assert!(matches!(
        decode_payload(&truncated, LIMIT),
        Err(Error::Decompress { .. })
    ));
}

#[test]
fn garbage_protobuf_is_a_decode_error() {
    let mut frame = frame(Encoding::Proto, 1);
    frame.payload = Bytes::from_static(&[0x0a, 0xff, 0xff]);
    frame.uncompressed_length = 3;
    assert!(matches!(
        decode_payload(&frame, LIMIT),
        Err(Error::Decode(_))
    ));
}

#[test]
fn unknown_encodings_are_refused() {
    assert!(matches!(
        encode_payload(&payload(1), Encoding::Unspecified, 3),
        Err(Error::UnsupportedEncoding(0))
    ));
    for bad in [0, 3, 99] {
        let mut frame = frame(Encoding::Proto, 1);
        frame.encoding = bad;
        assert!(
            matches!(decode_payload(&frame, LIMIT), Err(Error::UnsupportedEncoding(n)) if n == bad),
            "{bad}"
        );
    }
}

#[test]
fn a_frames_piece_is_a_server_message_with_those_frames() {
    let frames = vec![frame(Encoding::Proto, 2), frame(Encoding::ProtoZstd, 3)];
    let piece = encode_frames_piece(&frames);
    let whole = ServerMessage {
        frames: frames.clone(),
        ..ServerMessage::default()
    };
    assert_eq!(piece.as_ref(), whole.encode_to_vec().as_slice());
    assert!(encode_frames_piece(&[]).is_empty());
}

#[test]
fn concatenated_pieces_decode_as_one_message() {
    let first = encode_frame(header(8), &payload(1), Encoding::Proto, 3).unwrap();
    let mut second_header = header(9);
    second_header.resource = "v1/namespaces".to_owned();
    second_header.scope = String::new();
    let second = encode_frame(second_header, &payload(2), Encoding::ProtoZstd, 3).unwrap();
    let synced = encode_piece(&ServerMessage {
        synced: Some(Synced { revision: 9 }),
        ..ServerMessage::default()
    });
    let heartbeat = encode_piece(&ServerMessage {
        heartbeat: Some(Heartbeat {
            head_revision: 9,
            server_time_unix_nanos: 42,
        }),
        ..ServerMessage::default()
    });

    let pieces = [
        encode_frames_piece(std::slice::from_ref(&first)),
        encode_frames_piece(std::slice::from_ref(&second)),
        synced,
        heartbeat,
    ];
    let joined: Vec<u8> = pieces.concat();
    let message = ServerMessage::decode(joined.as_slice()).unwrap();

    assert_eq!(message.frames, vec![first, second]);
    assert_eq!(message.synced, Some(Synced { revision: 9 }));
    assert_eq!(message.heartbeat.map(|h| h.head_revision), Some(9));
    assert_eq!(message.welcome, None);
}

#[test]
fn zstd_is_chosen_only_when_the_agent_accepts_it() {
    assert_eq!(negotiate_encoding(&[]), Encoding::Proto);
    assert_eq!(
        negotiate_encoding(&[Encoding::Proto as i32]),
        Encoding::Proto
    );
    assert_eq!(negotiate_encoding(&[1, 2]), Encoding::ProtoZstd);
    assert_eq!(negotiate_encoding(&[2]), Encoding::ProtoZstd);
    assert_eq!(negotiate_encoding(&[7]), Encoding::Proto);
}

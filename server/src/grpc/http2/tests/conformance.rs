//! RFC 9113 over raw frames: malformed requests (8.1.1, 8.2, 8.3), frames on closed and
//! lower-numbered streams (5.1, 5.1.1), PRIORITY (5.3.1, 6.3) and the CONTINUATION bound. Each
//! case is one h2spec found; `server/tests/h2spec.rs` runs h2spec itself.

use super::*;

/// A request's fields, well formed, as gRPC clients send them.
const GOOD: [(&str, &str); 6] = [
    (":method", "POST"),
    (":scheme", "http"),
    (":path", "/cattail.v1.Sync/Watch"),
    (":authority", "cattail"),
    ("content-type", "application/grpc"),
    ("te", "trailers"),
];

/// The RST_STREAM codes read until `count` streams were reset, by stream.
async fn resets(raw: &mut Raw, count: usize) -> Vec<(u32, Reason)> {
    let mut resets = Vec::new();
    while resets.len() < count {
        let got = raw
            .until(kind::RST_STREAM)
            .await
            .unwrap_or_else(|| panic!("closed after {resets:?}"));
        let code = u32::from_be_bytes(got.payload[..4].try_into().unwrap_or_default());
        resets.push((got.head.stream, Reason(code)));
    }
    resets.sort_by_key(|(stream, _)| *stream);
    resets
}

/// Sends a PING and reads to its ACK: what the server had to say before it is read by then.
pub(super) async fn ping_pong(raw: &mut Raw) -> Vec<Got> {
    let mut out = Vec::new();
    Frame::Ping {
        ack: false,
        payload: *b"pingpong",
    }
    .write(&mut out);
    raw.send(&out).await;
    let mut before = Vec::new();
    loop {
        let got = raw.frame().await.unwrap_or_else(|| panic!("closed"));
        if got.head.kind == kind::PING && got.head.has(flag::ACK) {
            return before;
        }
        before.push(got);
    }
}

#[tokio::test]
async fn malformed_requests_are_reset_with_protocol_error_and_the_connection_stays() {
    let server = start(GrpcConfig::default(), 0).await;
    let mut raw = Raw::handshake(server.addr, &[]).await;
    let mut cases: Vec<Vec<(&str, &str)>> = Vec::new();
    let with = |extra: (&'static str, &'static str)| {
        let mut fields = GOOD.to_vec();
        fields.push(extra);
        fields
    };
    cases.push(with(("X-Upper", "1")));
    cases.push(with(("connection", "keep-alive")));
    cases.push(with((":status", "200")));
    cases.push(with((":path", "/again")));
    cases.push(with(("content-length", "abc")));
    let mut te = GOOD.to_vec();
    te[5] = ("te", "gzip");
    cases.push(te);
    let mut late = GOOD.to_vec();
    late.swap(0, 4);
    cases.push(late);
    cases.push(GOOD.iter().copied().filter(|f| f.0 != ":scheme").collect());
    cases.push(GOOD.iter().copied().filter(|f| f.0 != ":path").collect());
    cases.push(vec![
        (":method", "POST"),
        (":scheme", "http"),
        (":path", ""),
    ]);
    let mut out = Vec::new();
    for (i, fields) in cases.iter().enumerate() {
        let stream = 2 * i as u32 + 1;
        out.extend(raw.headers(stream, fields, flag::END_HEADERS));
    }
    raw.send(&out).await;
    let got = resets(&mut raw, cases.len()).await;
    let expected: Vec<(u32, Reason)> = (0..cases.len())
        .map(|i| (2 * i as u32 + 1, Reason::PROTOCOL_ERROR))
        .collect();
    assert_eq!(got, expected);
    // The connection (and its HPACK table) is intact: a good request is served.
    let next = 2 * cases.len() as u32 + 1;
    let mut out = raw.headers(next, &GOOD, flag::END_HEADERS);
    out.extend(data(next, &grpc_message(&hello(true)), 0));
    raw.send(&out).await;
    read_until_synced(&mut raw, next).await;
}

#[tokio::test]
async fn trailers_and_bodies_are_checked_until_the_request_ends() {
    let server = start(GrpcConfig::default(), 0).await;
    let mut raw = Raw::handshake(server.addr, &[]).await;
    let get = [
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "x"),
    ];
    // A GET is answered only when it ends, so its trailers and body are still checked.
    let mut out = raw.headers(1, &get, flag::END_HEADERS);
    out.extend(raw.headers(1, &[(":path", "/")], flag::END_HEADERS | flag::END_STREAM));
    let mut long = get.to_vec();
    long.push(("content-length", "1"));
    out.extend(raw.headers(3, &long, flag::END_HEADERS));
    out.extend(data(3, b"test", flag::END_STREAM));
    out.extend(raw.headers(5, &long, flag::END_HEADERS));
    out.extend(data(5, b"", flag::END_STREAM));
    // A second HEADERS that does not end the stream.
    out.extend(raw.headers(7, &get, flag::END_HEADERS));
    out.extend(raw.headers(7, &[("x-trailer", "1")], flag::END_HEADERS));
    raw.send(&out).await;
    assert_eq!(
        resets(&mut raw, 4).await,
        [
            (1, Reason::PROTOCOL_ERROR),
            (3, Reason::PROTOCOL_ERROR),
            (5, Reason::PROTOCOL_ERROR),
            (7, Reason::PROTOCOL_ERROR),
        ]
    );
    // A body that matches its content-length, and good trailers: the 405 comes at the end.
    let mut right = get.to_vec();
    right.push(("content-length", "4"));
    let mut out = raw.headers(9, &right, flag::END_HEADERS);
    out.extend(data(9, b"te", 0));
    out.extend(data(9, b"st", 0));
    raw.send(&out).await;
    let early = ping_pong(&mut raw).await;
    assert!(
        early.iter().all(|got| got.head.stream != 9),
        "answered before the request ended: {early:?}"
    );
    let end = raw.headers(
        9,
        &[("x-trailer", "1")],
        flag::END_HEADERS | flag::END_STREAM,
    );
    raw.send(&end).await;
    let answer = raw
        .until(kind::HEADERS)
        .await
        .unwrap_or_else(|| panic!("closed"));
    assert_eq!(answer.head.stream, 9);
    assert_eq!(field(&fields(&answer.payload), ":status"), Some("405"));
}

#[tokio::test]
async fn frames_on_closed_streams_get_the_answer_rfc_9113_5_1_gives_them() {
    let server = start(GrpcConfig::default(), 0).await;
    let get = [
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "x"),
    ];
    // DATA after the peer ended the stream, once the server finished it too.
    let mut raw = Raw::handshake(server.addr, &[]).await;
    let out = raw.headers(1, &get, flag::END_HEADERS | flag::END_STREAM);
    raw.send(&out).await;
    // The answer ends with its body.
    let body = raw
        .until(kind::DATA)
        .await
        .unwrap_or_else(|| panic!("closed"));
    assert!(body.head.has(flag::END_STREAM), "{body:?}");
    raw.send(&data(1, b"test", flag::END_STREAM)).await;
    assert_eq!(raw.goaway().await, Reason::STREAM_CLOSED);
    // DATA after the peer reset the stream.
    let mut raw = Raw::handshake(server.addr, &[]).await;
    let mut out = raw.request(1, "/cattail.v1.Sync/Watch", 0);
    Frame::RstStream {
        stream: 1,
        reason: Reason::CANCEL,
    }
    .write(&mut out);
    out.extend(data(1, b"test", 0));
    raw.send(&out).await;
    assert_eq!(raw.goaway().await, Reason::STREAM_CLOSED);
    // A new stream below one already opened.
    let mut raw = Raw::handshake(server.addr, &[]).await;
    let mut out = raw.headers(5, &get, flag::END_HEADERS | flag::END_STREAM);
    out.extend(raw.headers(3, &get, flag::END_HEADERS | flag::END_STREAM));
    raw.send(&out).await;
    assert_eq!(raw.goaway().await, Reason::PROTOCOL_ERROR);
    // Frames the peer sent before it saw the server's reset are ignored.
    let mut raw = Raw::handshake(server.addr, &[]).await;
    let mut out = raw.request(1, "/cattail.v1.Sync/Watch", 0);
    Frame::WindowUpdate {
        stream: 1,
        increment: 0,
    }
    .write(&mut out);
    raw.send(&out).await;
    assert_eq!(resets(&mut raw, 1).await, [(1, Reason::PROTOCOL_ERROR)]);
    let late = data(1, &grpc_message(&hello(true)), 0);
    raw.send(&late).await;
    let between = ping_pong(&mut raw).await;
    assert!(between.is_empty(), "{between:?}");
}

#[tokio::test]
async fn priority_on_stream_0_or_on_itself_and_endless_continuations_are_errors() {
    let server = start(GrpcConfig::default(), 0).await;
    let mut raw = Raw::handshake(server.addr, &[]).await;
    let mut out = Vec::new();
    frame::put_head(&mut out, 5, kind::PRIORITY, 0, 0);
    out.extend_from_slice(&[0, 0, 0, 1, 16]);
    raw.send(&out).await;
    assert_eq!(raw.goaway().await, Reason::PROTOCOL_ERROR);
    // A stream may not depend on itself, in PRIORITY or in HEADERS.
    let mut raw = Raw::handshake(server.addr, &[]).await;
    let mut out = Vec::new();
    frame::put_head(&mut out, 5, kind::PRIORITY, 0, 1);
    out.extend_from_slice(&[0, 0, 0, 1, 16]);
    let request = raw.request(3, "/cattail.v1.Sync/Watch", 0);
    let block = &request[frame::HEADER_LEN..];
    frame::put_head(
        &mut out,
        5 + block.len(),
        kind::HEADERS,
        flag::END_HEADERS | flag::PRIORITY,
        3,
    );
    out.extend_from_slice(&[0, 0, 0, 3, 16]);
    out.extend_from_slice(block);
    raw.send(&out).await;
    assert_eq!(
        resets(&mut raw, 2).await,
        [(1, Reason::PROTOCOL_ERROR), (3, Reason::PROTOCOL_ERROR)]
    );
    // Empty CONTINUATION frames add no bytes to a block, but they are counted.
    let mut raw = Raw::handshake(server.addr, &[]).await;
    let mut out = Vec::new();
    frame::put_head(&mut out, 0, kind::HEADERS, 0, 1);
    for _ in 0..1000 {
        frame::put_head(&mut out, 0, kind::CONTINUATION, 0, 1);
    }
    raw.send(&out).await;
    assert_eq!(raw.goaway().await, Reason::ENHANCE_YOUR_CALM);
}

//! Memory bounded before trust, over raw frames: streams waiting for their Hello per
//! connection, and bytes of incomplete messages across connections.

use super::*;

/// The gRPC status of the trailers-only answer on `stream`.
async fn refusal(raw: &mut Raw, stream: u32) -> (String, String) {
    loop {
        let got = raw
            .until(kind::HEADERS)
            .await
            .unwrap_or_else(|| panic!("closed"));
        let fields = fields(&got.payload);
        if got.head.stream == stream && field(&fields, "grpc-status").is_some() {
            let status = field(&fields, "grpc-status").unwrap_or_default().to_owned();
            let message = field(&fields, "grpc-message")
                .unwrap_or_default()
                .to_owned();
            return (status, message);
        }
    }
}

#[tokio::test]
async fn a_connection_gets_eight_streams_waiting_for_their_hello_and_no_more() {
    let server = start(GrpcConfig::default(), 0).await;
    let mut raw = Raw::handshake(server.addr, &[]).await;
    let mut out = Vec::new();
    for i in 0..9u32 {
        out.extend(raw.request(2 * i + 1, "/cattail.v1.Sync/Watch", 0));
    }
    raw.send(&out).await;
    let (status, message) = refusal(&mut raw, 17).await;
    assert_eq!(status, "8", "{message}");
    assert!(message.contains("waiting for their Hello"), "{message}");
    // The refused stream is told to stop sending.
    let reset = raw
        .until(kind::RST_STREAM)
        .await
        .unwrap_or_else(|| panic!("closed"));
    assert_eq!(reset.head.stream, 17);
    // Once one of them has sent its Hello, another stream may open.
    let mut out = data(1, &grpc_message(&hello(true)), 0);
    out.extend(raw.request(19, "/cattail.v1.Sync/Watch", 0));
    out.extend(data(19, &grpc_message(&hello(true)), 0));
    raw.send(&out).await;
    read_until_synced(&mut raw, 19).await;
}

#[tokio::test]
async fn incomplete_messages_are_held_only_within_a_budget_across_connections() {
    let fanout = FanoutConfig {
        max_hello_bytes: 1000,
        ..FanoutConfig::default()
    };
    let server = start_with(GrpcConfig::default(), fanout, 0).await;
    // A message of 1,000 bytes, all but its last byte: each stream holds 1,004 bytes. The
    // budget is 64 messages at the limit of 1,000 bytes with their 5-byte prefixes (64,320
    // bytes), so the 65th stream does not fit.
    let mut partial = vec![0, 0, 0, 0x03, 0xe8];
    partial.extend(vec![0; 999]);
    let mut connections = Vec::new();
    let mut refused = Vec::new();
    for connection in 0..9 {
        let mut raw = Raw::handshake(server.addr, &[]).await;
        for i in 0..8u32 {
            let stream = 2 * i + 1;
            let mut out = raw.request(stream, "/cattail.v1.Sync/Watch", 0);
            out.extend(data(stream, &partial, 0));
            raw.send(&out).await;
            // After a PING round trip the server has read the stream's bytes and held them, or
            // not: streams are taken in the order they were sent.
            for got in conformance::ping_pong(&mut raw).await {
                refused.extend(trailers(connection, &got));
            }
        }
        connections.push(raw);
    }
    // The first 64 streams fit; the 8 of the last connection did not, and they hear so.
    while refused.len() < 8 {
        let got = connections[8]
            .frame()
            .await
            .unwrap_or_else(|| panic!("closed"));
        refused.extend(trailers(8, &got));
    }
    refused.sort();
    for (i, (connection, stream, status, message)) in refused.into_iter().enumerate() {
        assert_eq!((connection, stream), (8, 2 * i as u32 + 1));
        assert_eq!(status, "8", "{message}");
        assert!(message.contains("incomplete messages"), "{message}");
    }
    for raw in &mut connections[..8] {
        let answers = conformance::ping_pong(raw).await;
        assert!(
            answers.iter().all(|got| trailers(0, got).is_none()),
            "{answers:?}"
        );
    }
}

/// `(connection, stream, grpc-status, grpc-message)` if `got` is trailers.
fn trailers(connection: usize, got: &Got) -> Option<(usize, u32, String, String)> {
    if got.head.kind != kind::HEADERS {
        return None;
    }
    let fields = fields(&got.payload);
    let status = field(&fields, "grpc-status")?.to_owned();
    let message = field(&fields, "grpc-message")
        .unwrap_or_default()
        .to_owned();
    Some((connection, got.head.stream, status, message))
}

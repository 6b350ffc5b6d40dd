//! Tests of the status mapping: every fan-out error gets the code docs/PROTOCOL.md gives it.

use std::time::Duration;

use tonic::Code;

use crate::fanout::Error;

use super::status;

#[test]
fn every_error_maps_to_its_documented_code() {
    let cases = [
        (
            Error::HelloTimeout(Duration::from_secs(10)),
            Code::DeadlineExceeded,
        ),
        (
            Error::NotHello("the stream ended before it"),
            Code::InvalidArgument,
        ),
        (Error::SecondHello, Code::InvalidArgument),
        (Error::Malformed("bad".into()), Code::InvalidArgument),
        (
            Error::Hello(cattail_proto::Error::UnsupportedProtocolVersion {
                got: 2,
                supported: 1,
            }),
            Code::FailedPrecondition,
        ),
        (
            Error::Hello(cattail_proto::Error::InvalidHello(
                "no subscriptions".into(),
            )),
            Code::InvalidArgument,
        ),
        (
            Error::Hello(cattail_proto::Error::UnknownResource {
                resource: "v1/secrets".into(),
                served: "v1/pods".into(),
            }),
            Code::InvalidArgument,
        ),
        (
            Error::HelloTooLarge { size: 10, limit: 5 },
            Code::ResourceExhausted,
        ),
        (
            Error::MessageTooLarge("too large".into()),
            Code::ResourceExhausted,
        ),
        (Error::NotInSync(Duration::from_secs(1)), Code::Unavailable),
        (Error::ShuttingDown, Code::Unavailable),
        (Error::Draining("a:1".into()), Code::Unavailable),
        (
            Error::WriteTimeout(Duration::from_secs(30)),
            Code::Unavailable,
        ),
        (Error::Encode("bug".into()), Code::Internal),
        (Error::Task("panicked".into()), Code::Internal),
        (Error::Unauthenticated("no".into()), Code::Unauthenticated),
        (Error::PermissionDenied("no".into()), Code::PermissionDenied),
        (Error::AuthUnavailable("later".into()), Code::Unavailable),
    ];
    for (error, code) in cases {
        assert_eq!(status(&error).code(), code, "{error}");
    }
}

#[test]
fn a_drain_names_the_replicas_to_try_in_the_message_and_the_trailer() {
    let draining = status(&Error::Draining("10.0.0.2:5473,10.0.0.3:5473".into()));
    assert_eq!(
        draining.message(),
        "server draining (shutting down); reconnect to another replica with a Resume; \
         try: 10.0.0.2:5473, 10.0.0.3:5473"
    );
    assert_eq!(
        draining
            .metadata()
            .get(super::TRY_ENDPOINTS_METADATA)
            .unwrap(),
        "10.0.0.2:5473,10.0.0.3:5473"
    );
    // No replica known: the trailer is there and empty, and the message names none.
    let alone = status(&Error::Draining("".into()));
    assert!(!alone.message().contains("try:"), "{}", alone.message());
    assert_eq!(
        alone.metadata().get(super::TRY_ENDPOINTS_METADATA).unwrap(),
        ""
    );
    assert!(
        status(&Error::ShuttingDown)
            .metadata()
            .get(super::TRY_ENDPOINTS_METADATA)
            .is_none()
    );
}

#[test]
fn shutdown_says_so_and_unknown_resources_list_what_is_served() {
    let shutdown = status(&Error::ShuttingDown);
    assert!(
        shutdown.message().starts_with("server shutting down"),
        "{}",
        shutdown.message()
    );
    let unknown = status(&Error::Hello(cattail_proto::Error::UnknownResource {
        resource: "v1/secrets".into(),
        served: "v1/pods, v1/nodes".into(),
    }));
    assert!(
        unknown.message().contains("v1/pods, v1/nodes"),
        "{}",
        unknown.message()
    );
}

mod body {
    use std::pin::Pin;

    use bytes::Bytes;
    use http_body::Body as _;
    use tokio::sync::mpsc;
    use tonic::Code;
    use tonic::codegen::http::HeaderMap;

    use crate::fanout::{Error, OutgoingMessage};

    use super::super::body::{SHARE_AT_BYTES, WatchBody};

    enum Item {
        Data(Bytes),
        Trailers(HeaderMap),
    }

    async fn next(body: &mut WatchBody) -> Option<Item> {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await?;
        let frame = frame.unwrap();
        match frame.into_data() {
            Ok(data) => Some(Item::Data(data)),
            Err(frame) => Some(Item::Trailers(frame.into_trailers().unwrap())),
        }
    }

    /// Every DATA chunk up to the trailers, and the trailers.
    async fn drain(body: &mut WatchBody) -> (Vec<Bytes>, HeaderMap) {
        let mut chunks = Vec::new();
        loop {
            match next(body).await.expect("the body ended without trailers") {
                Item::Data(chunk) => chunks.push(chunk),
                Item::Trailers(trailers) => return (chunks, trailers),
            }
        }
    }

    fn grpc_status(trailers: &HeaderMap) -> i32 {
        trailers["grpc-status"].to_str().unwrap().parse().unwrap()
    }

    #[tokio::test]
    async fn large_pieces_are_shared_and_small_ones_copied_behind_the_prefix() {
        let small = Bytes::from(vec![1u8; 10]);
        let large = Bytes::from(vec![2u8; SHARE_AT_BYTES]);
        let tail = Bytes::from(vec![3u8; 20]);
        let mut message = OutgoingMessage::default();
        message.push_frame(small.clone());
        message.push_frame(large.clone());
        message.push_frame(tail.clone());
        let (tx, rx) = mpsc::channel(4);
        tx.send(Box::new(Ok(message.clone()))).await.unwrap();
        tx.send(Box::new(Ok(OutgoingMessage::control(small.clone()))))
            .await
            .unwrap();
        drop(tx);
        let mut body = WatchBody::new(rx, 1 << 20);
        let (chunks, trailers) = drain(&mut body).await;

        assert_eq!(
            chunks.len(),
            4,
            "prefix+small, large, tail, then the next message"
        );
        assert_eq!(chunks[0].len(), 5 + small.len());
        assert_eq!(chunks[0][0], 0, "compression flag");
        assert_eq!(&chunks[0][1..5], &(message.len() as u32).to_be_bytes()[..]);
        assert_eq!(
            chunks[1].as_ptr(),
            large.as_ptr(),
            "the large piece was copied"
        );
        assert_eq!(chunks[2], tail);
        let joined: Vec<u8> = chunks[..3].iter().flat_map(|c| c.iter().copied()).collect();
        assert_eq!(&joined[5..], &message.to_bytes()[..]);
        assert_eq!(&chunks[3][..5], &[0, 0, 0, 0, small.len() as u8][..]);
        assert_eq!(&chunks[3][5..], &small[..]);

        assert_eq!(grpc_status(&trailers), 0);
        assert!(next(&mut body).await.is_none());
        assert!(body.is_end_stream());
    }

    #[tokio::test]
    async fn a_sender_error_ends_the_stream_with_its_status() {
        let (tx, rx) = mpsc::channel(4);
        tx.send(Box::new(Ok(OutgoingMessage::control(Bytes::from_static(
            b"hi",
        )))))
        .await
        .unwrap();
        tx.send(Box::new(Err(Error::ShuttingDown))).await.unwrap();
        let mut body = WatchBody::new(rx, 1 << 20);
        let (chunks, trailers) = drain(&mut body).await;
        assert_eq!(chunks.len(), 1);
        assert_eq!(grpc_status(&trailers), Code::Unavailable as i32);
        let message = trailers["grpc-message"].to_str().unwrap();
        assert!(message.contains("shutting"), "{message}");
        // Nothing more is taken from the queue: the sender sees it closed.
        assert!(tx.is_closed());
    }

    fn control(text: &'static str) -> crate::fanout::Outgoing {
        Box::new(Ok(OutgoingMessage::control(Bytes::from_static(
            text.as_bytes(),
        ))))
    }

    #[tokio::test]
    async fn a_driven_sender_runs_inside_the_body_and_its_queue_never_outgrows_one() {
        use futures::FutureExt;

        let (tx, rx) = mpsc::channel(1);
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let sender = Box::pin(async move {
            // Three messages through a queue of one: each send waits for the body to take
            // the one before, which only the body polling this future can allow.
            for text in ["one", "two", "three"] {
                tx.send(control(text)).await.unwrap();
            }
            wait.await.unwrap();
            tx.send(control("four")).await.unwrap();
        });
        let mut body = WatchBody::driving(rx, sender, 1 << 20);
        for text in ["one", "two", "three"] {
            let item = tokio::time::timeout(std::time::Duration::from_secs(10), next(&mut body))
                .await
                .expect("the body does not run its sender");
            match item {
                Some(Item::Data(chunk)) => assert_eq!(&chunk[5..], text.as_bytes()),
                _ => panic!("expected {text:?}"),
            }
        }
        assert!(
            std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx))
                .now_or_never()
                .is_none(),
            "the sender waits, so the body must wait too"
        );
        go.send(()).unwrap();
        let (chunks, trailers) = drain(&mut body).await;
        assert_eq!(chunks.len(), 1);
        assert_eq!(&chunks[0][5..], b"four");
        assert_eq!(grpc_status(&trailers), 0, "a finished sender ends with OK");
    }

    #[tokio::test]
    async fn dropping_a_body_drops_the_sender_it_runs() {
        use futures::FutureExt;
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};

        struct Flag(Arc<AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = Flag(dropped.clone());
        let (tx, rx) = mpsc::channel(1);
        let sender = Box::pin(async move {
            let _flag = flag;
            let _tx = tx;
            std::future::pending::<()>().await;
        });
        let mut body = WatchBody::driving(rx, sender, 1 << 20);
        assert!(
            std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx))
                .now_or_never()
                .is_none()
        );
        assert!(!dropped.load(Ordering::SeqCst));
        drop(body);
        assert!(
            dropped.load(Ordering::SeqCst),
            "the sender outlived its body"
        );
    }

    #[tokio::test]
    async fn a_long_burst_yields_to_the_connection() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::task::{Context, Poll, Wake, Waker};

        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let (tx, rx) = mpsc::channel(4);
        for _ in 0..3 {
            let mut message = OutgoingMessage::default();
            message.push_frame(Bytes::from(vec![7u8; 40 * 1024]));
            tx.send(Box::new(Ok(message))).await.unwrap();
        }
        drop(tx);
        let mut body = WatchBody::new(rx, 1 << 20);
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut poll = || match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => Some(frame.into_data().map_or(0, |d| d.len())),
            Poll::Ready(other) => panic!("{:?}", other.map(|r| r.map(|_| ()))),
            Poll::Pending => None,
        };
        // Two messages (prefix, then the shared 40 KiB piece) make 80 KiB without a pause.
        let sizes: Vec<_> = (0..4).map(|_| poll()).collect();
        assert_eq!(sizes, [Some(5), Some(40 * 1024), Some(5), Some(40 * 1024)]);
        assert_eq!(poll(), None, "the body yields before a third message");
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "and asks to be polled again"
        );
        assert_eq!(poll(), Some(5));
        assert_eq!(poll(), Some(40 * 1024));
    }

    #[tokio::test]
    async fn a_message_of_many_chunks_yields_after_a_few() {
        use futures::task::noop_waker;
        use std::task::{Context, Poll};

        use super::super::body::BURST_CHUNKS;

        let (tx, rx) = mpsc::channel(1);
        let mut message = OutgoingMessage::default();
        for i in 0..12u8 {
            message.push_frame(Bytes::from(vec![i; 1024]));
        }
        tx.send(Box::new(Ok(message))).await.unwrap();
        drop(tx);
        let mut body = WatchBody::new(rx, 1 << 20);
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut poll = || match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => Some(frame.into_data().map_or(0, |d| d.len())),
            Poll::Ready(other) => panic!("{:?}", other.map(|r| r.map(|_| ()))),
            Poll::Pending => None,
        };
        // The prefix, then the first shared pieces, up to the cap, far below the byte cap.
        let mut sizes = Vec::new();
        while let Some(size) = poll() {
            sizes.push(size);
        }
        assert_eq!(
            sizes.len(),
            BURST_CHUNKS,
            "the body yields within the message"
        );
        assert_eq!(sizes[0], 5);
        assert!(sizes[1..].iter().all(|size| *size == 1024), "{sizes:?}");
        // The rest follows, a burst at a time, then the trailers (a frame of no data).
        let mut pieces = sizes.len() - 1;
        let mut pauses = 1;
        loop {
            match poll() {
                Some(1024) => pieces += 1,
                Some(0) => break,
                Some(other) => panic!("a chunk of {other} bytes"),
                None => pauses += 1,
            }
            assert!(pauses <= 12, "the body stopped handing chunks");
        }
        assert_eq!(
            pauses,
            13_usize.div_ceil(BURST_CHUNKS) - 1,
            "a pause after each burst"
        );
        assert_eq!(pieces, 12);
    }

    #[tokio::test]
    async fn a_message_over_the_limit_is_refused_not_sent() {
        let (tx, rx) = mpsc::channel(4);
        let mut message = OutgoingMessage::default();
        message.push_frame(Bytes::from(vec![0u8; 100]));
        tx.send(Box::new(Ok(message))).await.unwrap();
        let mut body = WatchBody::new(rx, 99);
        let (chunks, trailers) = drain(&mut body).await;
        assert!(chunks.is_empty());
        assert_eq!(grpc_status(&trailers), Code::Internal as i32);
    }
}

mod service {
    use tokio_util::sync::CancellationToken;
    use tonic::codegen::http;

    use crate::config::Resource;
    use crate::fanout::{FanoutConfig, Hub, ResourceInfo};
    use crate::store::Store;

    use super::super::service::SyncService;

    fn service() -> SyncService {
        let pods = Resource::parse("v1/pods").unwrap();
        let store = Store::new([pods.clone()]);
        let info = ResourceInfo {
            resource: pods,
            fingerprint: 1,
            scope_field: None,
        };
        let hub = Hub::new(FanoutConfig::default(), store.snapshot(), vec![info]);
        SyncService::new(hub, CancellationToken::new(), 1)
    }

    fn request(path: &str, encoding: Option<&str>) -> http::Request<tonic::body::Body> {
        let mut request = http::Request::builder()
            .uri(format!("http://cattail{path}"))
            .header("content-type", "application/grpc");
        if let Some(encoding) = encoding {
            request = request.header("grpc-encoding", encoding);
        }
        request.body(tonic::body::Body::empty()).unwrap()
    }

    fn grpc_status(response: &http::Response<tonic::body::Body>) -> Option<(i32, String)> {
        let headers = response.headers();
        let code = headers
            .get("grpc-status")?
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let message = headers
            .get("grpc-message")
            .map(|m| m.to_str().unwrap().to_owned())
            .unwrap_or_default();
        Some((code, message))
    }

    #[tokio::test]
    async fn other_methods_and_compressed_requests_are_unimplemented() {
        let service = service();
        let response = service.watch(request("/cattail.v1.Sync/Other", None));
        assert_eq!(
            grpc_status(&response).unwrap().0,
            tonic::Code::Unimplemented as i32
        );

        let response = service.watch(request("/cattail.v1.Sync/Watch", Some("gzip")));
        let (code, message) = grpc_status(&response).unwrap();
        assert_eq!(code, tonic::Code::Unimplemented as i32);
        assert!(message.contains("compression"), "{message}");
    }

    /// A request body of `bytes` in one DATA frame, then its end.
    struct OneChunk(Option<bytes::Bytes>);

    impl http_body::Body for OneChunk {
        type Data = bytes::Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
            std::task::Poll::Ready(self.0.take().map(|data| Ok(http_body::Frame::data(data))))
        }
    }

    /// The status a Watch whose request body is `bytes` ends with, from its trailers.
    async fn status_for_body(bytes: &[u8]) -> (i32, String) {
        use http_body::Body as _;
        let request = http::Request::builder()
            .uri("http://cattail/cattail.v1.Sync/Watch")
            .header("content-type", "application/grpc")
            .body(OneChunk(Some(bytes::Bytes::copy_from_slice(bytes))))
            .unwrap();
        let mut body = service().watch(request).into_body();
        loop {
            let frame = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx))
                .await
                .expect("the response ended without trailers")
                .unwrap();
            if let Ok(trailers) = frame.into_trailers() {
                let code = trailers["grpc-status"].to_str().unwrap().parse().unwrap();
                let message = trailers
                    .get("grpc-message")
                    .map(|m| {
                        percent_encoding::percent_decode(m.as_bytes())
                            .decode_utf8_lossy()
                            .into_owned()
                    })
                    .unwrap_or_default();
                return (code, message);
            }
        }
    }

    // The native transport's answers to the same bytes are in http2/tests (raw frames) and
    // framing.rs: both read requests through one `MessageReader`.
    #[tokio::test]
    async fn compressed_and_truncated_requests_get_the_native_transports_status() {
        let (code, message) = status_for_body(&[1, 0, 0, 0, 2, 8, 1]).await;
        assert_eq!(code, tonic::Code::InvalidArgument as i32, "{message}");
        assert!(message.contains("compressed"), "{message}");

        let (code, message) = status_for_body(&[0, 0, 0, 0, 10, 1, 2]).await;
        assert_eq!(code, tonic::Code::InvalidArgument as i32, "{message}");
        assert!(message.contains("inside a message"), "{message}");

        let (code, message) = status_for_body(&[0, 0, 0, 0, 2, 0xff, 0xff]).await;
        assert_eq!(code, tonic::Code::InvalidArgument as i32, "{message}");
        assert!(message.contains("AgentMessage"), "{message}");

        let (code, message) = status_for_body(&[0, 0x7f, 0xff, 0xff, 0xff]).await;
        assert_eq!(code, tonic::Code::ResourceExhausted as i32, "{message}");
    }

    #[tokio::test]
    async fn a_watch_is_answered_with_a_grpc_stream() {
        let service = service();
        for encoding in [None, Some("identity")] {
            let response = service.watch(request("/cattail.v1.Sync/Watch", encoding));
            assert_eq!(grpc_status(&response), None, "a trailers-only refusal");
            assert_eq!(response.headers()["content-type"], "application/grpc");
        }
    }
}

//! Connection scenarios against the scripted server: resume, backoff, overload, liveness.

use super::*;

#[tokio::test(start_paused = true)]
async fn a_reconnect_resumes_with_epoch_revision_and_digests() {
    let mut server = Harness::start().await;
    let mut events = client(&[&server.endpoint])
        .subscribe(&subscriptions())
        .unwrap();
    let mut first = server.accept().await;
    assert_eq!(first.hello.agent_id, "agent-1");
    assert_eq!(first.hello.resume, None);
    first.send(snapshot(Epoch::from(7), 5)).await;
    assert_eq!(describe_next(&mut events, 6).await, INITIAL_SYNC);
    assert_eq!(first.acks_until(5).await, [5]);

    first.fail(Status::unavailable("draining")).await;
    let failure = describe_next(&mut events, 1).await;
    assert!(failure[0].contains("Unavailable"), "{failure:?}");

    let second = server.accept().await;
    let resume = second.hello.resume.clone().expect("a resume after a sync");
    assert_eq!(resume.epoch, Epoch::from(7).to_bytes());
    assert_eq!(resume.revision, 5);
    let pods = resume.digests.iter().find(|d| d.resource == PODS).unwrap();
    assert_eq!(pods.scope, NODE);
    assert_eq!(pods.buckets, expected_pod_digest().buckets());
    assert_eq!(resume.digests.len(), 2);
    // Deltas from the same epoch: only the change is seen, no second Init.
    second
        .send(join(vec![
            welcome(Epoch::from(7), ResumeMode::Deltas, 6),
            frames(&[FrameSpec::delta(PODS, 6).put("web-1", 1)]),
            synced(6),
        ]))
        .await;
    assert_eq!(describe_next(&mut events, 1).await, ["v1/pods apply web-1"]);
}

#[tokio::test(start_paused = true)]
async fn failed_attempts_back_off_exponentially_with_jitter() {
    let mut server = Harness::start().await;
    for _ in 0..4 {
        server.refuse_next(Status::unavailable("not in sync yet"));
    }
    let mut events = client(&[&server.endpoint])
        .subscribe(&subscriptions())
        .unwrap();
    let mut times = Vec::new();
    for _ in 0..5 {
        times.push(server.accept().await.at);
        // Each refusal is reported before the wait; drain it to keep the task moving.
        if times.len() < 5 {
            assert!(next_item(&mut events).await.is_err());
        }
    }
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    let mut step = Duration::from_millis(100);
    for gap in gaps {
        assert!(
            gap >= step / 2 && gap <= step + Duration::from_millis(5),
            "gap {gap:?} outside [{:?}, {step:?}]",
            step / 2
        );
        step *= 2;
    }
}

#[tokio::test(start_paused = true)]
async fn an_overloaded_server_sends_the_agent_to_the_next_endpoint_at_once() {
    let mut a = Harness::start().await;
    let mut b = Harness::start().await;
    a.refuse_next(Status::resource_exhausted("at target"));
    b.refuse_next(Status::resource_exhausted("at target"));
    let mut events = client(&[&a.endpoint, &b.endpoint])
        .subscribe(&subscriptions())
        .unwrap();
    // The first attempt goes to a random endpoint, the second to the other one, at once.
    let (first, first_was_a) = tokio::select! {
        first = a.accept() => (first, true),
        first = b.accept() => (first, false),
    };
    let second = if first_was_a {
        b.accept().await
    } else {
        a.accept().await
    };
    assert!(first.replies.is_none() && second.replies.is_none());
    assert_eq!(second.at - first.at, Duration::ZERO);
    for _ in 0..2 {
        let error = next_item(&mut events).await.unwrap_err();
        assert!(error.is_overloaded(), "{error}");
    }
    // Every endpoint refused: now the agent backs off before trying again.
    let third = tokio::select! {
        third = a.accept() => third,
        third = b.accept() => third,
    };
    assert!(third.at - second.at >= Duration::from_millis(50));
}

#[tokio::test(start_paused = true)]
async fn a_refusal_with_hints_sends_the_agent_to_the_hinted_replica() {
    let mut a = Harness::start().await;
    let mut b = Harness::start().await;
    let mut metadata = tonic::metadata::MetadataMap::new();
    let hint = b.endpoint.trim_start_matches("http://").to_owned();
    metadata.insert(TRY_ENDPOINTS_METADATA, hint.parse().unwrap());
    a.refuse_next(Status::with_metadata(
        tonic::Code::ResourceExhausted,
        format!("at target; try: {hint}"),
        metadata,
    ));
    // Only `a` is configured: `b` is known from the hint alone.
    let mut events = client(&[&a.endpoint]).subscribe(&subscriptions()).unwrap();
    let refused = a.accept().await;
    let hinted = b.accept().await;
    assert_eq!(hinted.at - refused.at, Duration::ZERO);
    assert!(next_item(&mut events).await.unwrap_err().is_overloaded());
    hinted.send(snapshot(Epoch::from(1), 3)).await;
    assert_eq!(describe_next(&mut events, 6).await, INITIAL_SYNC);
}

#[tokio::test(start_paused = true)]
async fn a_draining_server_sends_the_agent_to_the_hinted_replica_after_the_backoff() {
    let mut a = Harness::start().await;
    let mut b = Harness::start().await;
    let mut metadata = tonic::metadata::MetadataMap::new();
    let hint = b.endpoint.trim_start_matches("http://").to_owned();
    metadata.insert(TRY_ENDPOINTS_METADATA, hint.parse().unwrap());
    a.refuse_next(Status::with_metadata(
        tonic::Code::Unavailable,
        format!("server draining (shutting down); try: {hint}"),
        metadata,
    ));
    // Only `a` is configured: `b` is known from the hint alone.
    let mut events = client(&[&a.endpoint]).subscribe(&subscriptions()).unwrap();
    let refused = a.accept().await;
    let hinted = b.accept().await;
    assert!(hinted.at - refused.at > Duration::ZERO, "after the backoff");
    let error = next_item(&mut events).await.unwrap_err();
    assert!(!error.is_overloaded(), "{error}");
    hinted.send(snapshot(Epoch::from(1), 3)).await;
    assert_eq!(describe_next(&mut events, 6).await, INITIAL_SYNC);
}

#[tokio::test(start_paused = true)]
async fn a_silent_stream_is_abandoned_after_three_heartbeat_intervals() {
    let mut server = Harness::start().await;
    let mut events = client(&[&server.endpoint])
        .subscribe(&subscriptions())
        .unwrap();
    let first = server.accept().await;
    let mut opening = snapshot(Epoch::from(2), 9);
    let limits = opening.welcome.as_mut().unwrap().limits.as_mut().unwrap();
    limits.heartbeat_interval_ms = 1_000;
    first.send(opening).await;
    assert_eq!(describe_next(&mut events, 6).await, INITIAL_SYNC);
    let synced_at = Instant::now();
    // A heartbeat keeps it alive for another three intervals.
    tokio::time::sleep(Duration::from_secs(2)).await;
    first.send(heartbeat(9)).await;
    let error = next_item(&mut events).await.unwrap_err();
    assert!(matches!(error, Error::Idle { .. }), "{error}");
    let second = server.accept().await;
    let silent_for = second.at - synced_at;
    assert!(
        silent_for >= Duration::from_secs(5) && silent_for <= Duration::from_millis(5_200),
        "reconnected after {silent_for:?}"
    );
    // The stream had synced, so the backoff started over: the resume is immediate-ish.
    assert_eq!(second.hello.resume.unwrap().revision, 9);
    drop(first);
}

#[tokio::test(start_paused = true)]
async fn a_bad_frame_ends_the_stream_and_the_resume_is_unchanged() {
    let mut server = Harness::start().await;
    let mut events = client(&[&server.endpoint])
        .subscribe(&subscriptions())
        .unwrap();
    let first = server.accept().await;
    first.send(snapshot(Epoch::from(3), 4)).await;
    assert_eq!(describe_next(&mut events, 6).await, INITIAL_SYNC);
    let mut garbage = FrameSpec::delta(PODS, 5).put("web-9", 1).encode();
    garbage.payload = bytes::Bytes::from_static(b"\x28\xb5\x2f\xfd garbage");
    first
        .send(ServerMessage {
            frames: vec![garbage],
            ..ServerMessage::default()
        })
        .await;
    let error = next_item(&mut events).await.unwrap_err();
    assert!(matches!(error, Error::Protocol { .. }), "{error}");
    let second = server.accept().await;
    let resume = second.hello.resume.unwrap();
    assert_eq!(
        (resume.epoch, resume.revision),
        (Epoch::from(3).to_bytes(), 4)
    );
}

#[tokio::test(start_paused = true)]
async fn acks_are_coalesced_and_reach_the_newest_revision() {
    let mut server = Harness::start().await;
    let mut events = client(&[&server.endpoint])
        .subscribe(&subscriptions())
        .unwrap();
    let mut stream = server.accept().await;
    stream.send(snapshot(Epoch::from(4), 5)).await;
    assert_eq!(describe_next(&mut events, 6).await, INITIAL_SYNC);
    assert_eq!(stream.acks_until(5).await, [5]);
    for revision in 6..=45 {
        stream
            .send(frames(&[
                FrameSpec::delta(NODES, revision).put("n1", revision as u32)
            ]))
            .await;
    }
    let applied = describe_next(&mut events, 40).await;
    assert!(
        applied.iter().all(|event| event == "v1/nodes apply n1"),
        "{applied:?}"
    );
    let acks = stream.acks_until(45).await;
    assert!(acks.windows(2).all(|w| w[0] < w[1]), "{acks:?}");
    assert!(
        acks.len() < 10,
        "40 messages should coalesce into a few acks: {acks:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn dropping_the_event_stream_ends_the_connection() {
    let mut server = Harness::start().await;
    let events = client(&[&server.endpoint])
        .subscribe(&subscriptions())
        .unwrap();
    let stream = server.accept().await;
    stream.send(snapshot(Epoch::from(5), 1)).await;
    drop(events);
    let replies = stream.replies.clone().unwrap();
    timeout(DEADLINE, replies.closed())
        .await
        .expect("the agent kept the stream open after its event stream was dropped");
}

/// The same client over a real loopback socket, in real time: TCP, HTTP/2 and tonic end to end.
#[tokio::test]
async fn a_real_loopback_socket_carries_a_sync_and_a_resume() {
    let mut server = Harness::start_tcp().await;
    let mut events = client(&[&server.endpoint])
        .subscribe(&subscriptions())
        .unwrap();
    let mut first = server.accept().await;
    first.send(snapshot(Epoch::from(8), 2)).await;
    assert_eq!(describe_next(&mut events, 6).await, INITIAL_SYNC);
    assert_eq!(first.acks_until(2).await, [2]);
    drop(first);
    let closed = describe_next(&mut events, 1).await;
    assert!(closed[0].contains("closed the stream"), "{closed:?}");
    let second = server.accept().await;
    assert_eq!(second.hello.resume.unwrap().revision, 2);
}

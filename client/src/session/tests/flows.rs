//! Session flows: deltas, resyncs, reconnects, and the messages a session must refuse.

use super::*;

#[test]
fn deltas_after_a_snapshot_emit_apply_and_delete_and_move_the_ack() {
    let mut session = synced_session();
    let applied = session
        .apply(frames(&[
            FrameSpec::delta(PODS, 11).put("web-0", 2).put("web-2", 1),
            FrameSpec::delta(NODES, 12).del("n1").del("n-absent"),
        ]))
        .unwrap();
    assert_eq!(
        describe(&applied),
        [
            r#"v1/pods apply web-0 {"v":2}"#,
            r#"v1/pods apply web-2 {"v":1}"#,
            r#"v1/nodes delete n1 {"v":1}"#,
        ]
    );
    assert_eq!(applied.ack, Some(Revision(12)));
    assert_eq!(applied.synced, None);
    // An upsert of identical bytes is not a change.
    let applied = session
        .apply(frames(&[FrameSpec::delta(PODS, 13).put("web-0", 2)]))
        .unwrap();
    assert!(applied.events.is_empty());
    assert_eq!(applied.ack, Some(Revision(13)));
    assert_eq!(session.objects(PODS).len(), 3);
    assert_eq!(session.objects(NODES).len(), 0);
    assert_digests_consistent(&session);
}

#[test]
fn heartbeats_move_the_complete_revision_forward_only() {
    let mut session = synced_session();
    assert_eq!(
        session.apply(heartbeat(15)).unwrap().ack,
        Some(Revision(15))
    );
    assert_eq!(session.apply(heartbeat(12)).unwrap().ack, None);
    assert_eq!(session.complete().unwrap().revision, Revision(15));
}

#[test]
fn a_resync_after_a_reconnect_emits_only_real_changes() {
    let mut session = synced_session();
    let hello = session.begin_stream();
    let resume = hello.resume.unwrap();
    assert_eq!(resume.epoch, epoch(1).to_bytes());
    assert_eq!(resume.revision, 10);
    // Another replica: new epoch, full snapshot. web-0 is unchanged, web-1 changed, n1 gone,
    // web-2 and n2 new.
    let applied = session
        .apply(join(vec![
            welcome(epoch(2), ResumeMode::Snapshot, 40),
            frames(&[
                FrameSpec::replace(PODS, 40)
                    .put("web-0", 1)
                    .put("web-1", 5)
                    .put("web-2", 1),
                FrameSpec::replace(NODES, 40).put("n2", 1),
            ]),
            synced(40),
        ]))
        .unwrap();
    assert_eq!(
        describe(&applied),
        [
            r#"v1/pods apply web-1 {"v":5}"#,
            r#"v1/pods apply web-2 {"v":1}"#,
            r#"v1/nodes delete n1 {"v":1}"#,
            r#"v1/nodes apply n2 {"v":1}"#,
        ]
    );
    assert_eq!(applied.ack, Some(Revision(40)));
    assert_eq!(
        session.complete(),
        Some(CompletePoint {
            epoch: epoch(2),
            revision: Revision(40)
        })
    );
    assert_digests_consistent(&session);
}

#[test]
fn an_identical_resync_emits_nothing() {
    let mut session = synced_session();
    let digest_before = session.digest(PODS).unwrap().clone();
    session.begin_stream();
    let applied = session
        .apply(join(vec![
            welcome(epoch(2), ResumeMode::Snapshot, 77),
            frames(&[
                FrameSpec::replace(PODS, 77).put("web-1", 1).put("web-0", 1),
                FrameSpec::replace(NODES, 77).put("n1", 1),
            ]),
            synced(77),
        ]))
        .unwrap();
    assert!(applied.events.is_empty(), "{:?}", describe(&applied));
    assert_eq!(applied.synced, Some(Revision(77)));
    assert_eq!(session.digest(PODS), Some(&digest_before));
}

#[test]
fn a_digest_resync_replaces_only_the_named_buckets() {
    let mut session = synced_session();
    let bucket_of = |name| cattail_proto::digest::bucket_of("default", name, BUCKETS).unwrap();
    let (web0, web1) = (bucket_of("web-0"), bucket_of("web-1"));
    assert_ne!(
        web0, web1,
        "the test needs web-0 and web-1 in different buckets"
    );
    let resume = session.begin_stream().resume.unwrap();
    let pods_digest = resume.digests.iter().find(|d| d.resource == PODS).unwrap();
    assert_eq!(pods_digest.scope, NODE);
    assert_eq!(pods_digest.fingerprint, 0xfeed);
    assert_eq!(pods_digest.bucket_count, BUCKETS);
    // The server's bucket of web-0 is empty now: web-0 goes; web-1 is outside the resync.
    let applied = session
        .apply(join(vec![
            welcome(epoch(2), ResumeMode::Digest, 50),
            frames(&[FrameSpec::replace(PODS, 50).buckets(&[web0])]),
            synced(50),
        ]))
        .unwrap();
    assert_eq!(describe(&applied), [r#"v1/pods delete web-0 {"v":1}"#]);
    let names: Vec<String> = session.objects(PODS).into_iter().map(|o| o.name).collect();
    assert_eq!(names, ["web-1"]);
    assert_eq!(
        session.objects(NODES).len(),
        1,
        "uncovered pairs are untouched"
    );
    assert_digests_consistent(&session);
}

#[test]
fn a_resync_in_the_middle_of_a_stream_is_diffed() {
    let mut session = synced_session();
    let applied = session
        .apply(frames(&[FrameSpec::replace(NODES, 90).put("n1", 2)]))
        .unwrap();
    assert!(applied.events.is_empty());
    assert_eq!(
        applied.ack, None,
        "a resync does not move the complete revision"
    );
    assert_eq!(session.apply(heartbeat(95)).unwrap().ack, None);
    let applied = session.apply(synced(90)).unwrap();
    assert_eq!(describe(&applied), [r#"v1/nodes apply n1 {"v":2}"#]);
    assert_eq!(applied.ack, Some(Revision(90)));
    assert_eq!(session.objects(PODS).len(), 2);
}

#[test]
fn a_stream_broken_mid_resync_leaves_the_cache_and_resume_untouched() {
    let mut session = synced_session();
    let before = session.resume().unwrap();
    session.begin_stream();
    session
        .apply(join(vec![
            welcome(epoch(3), ResumeMode::Snapshot, 60),
            frames(&[FrameSpec::replace(PODS, 60).put("web-9", 1)]),
        ]))
        .unwrap();
    // The stream breaks before Synced.
    let hello = session.begin_stream();
    assert_eq!(hello.resume.as_ref(), Some(&before));
    assert_eq!(session.objects(PODS).len(), 2);
    assert!(!session.is_synced());
    // The next server resumes by deltas from the old epoch: the staged frames are gone.
    let applied = session
        .apply(join(vec![
            welcome(epoch(1), ResumeMode::Deltas, 11),
            frames(&[FrameSpec::delta(PODS, 11).del("web-1")]),
            synced(11),
        ]))
        .unwrap();
    assert_eq!(describe(&applied), [r#"v1/pods delete web-1 {"v":1}"#]);
    let names: Vec<String> = session.objects(PODS).into_iter().map(|o| o.name).collect();
    assert_eq!(names, ["web-0"]);
}

#[test]
fn bad_payloads_are_errors_that_change_nothing() {
    let mut session = synced_session();
    let before = session.resume();
    let good = FrameSpec::delta(PODS, 11).put("web-5", 1).encode();
    let mut garbage = FrameSpec::delta(NODES, 11).put("n9", 1).encode();
    garbage.payload = Bytes::from_static(b"\xff\xff\xff\xff not protobuf");
    garbage.encoding = Encoding::Proto as i32;
    garbage.uncompressed_length = garbage.payload.len() as u32;
    let message = ServerMessage {
        frames: vec![good.clone(), garbage],
        ..ServerMessage::default()
    };
    assert!(matches!(
        session.apply(message),
        Err(Error::BadFrame {
            revision: Revision(11),
            ..
        })
    ));
    let mut oversized = good.clone();
    oversized.uncompressed_length = 2 << 20;
    let error = session
        .apply(ServerMessage {
            frames: vec![oversized],
            ..ServerMessage::default()
        })
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::BadFrame {
                source: cattail_proto::Error::PayloadTooLarge { .. },
                ..
            }
        ),
        "{error}"
    );
    let mut unspecified = good;
    unspecified.encoding = Encoding::Unspecified as i32;
    assert!(session.apply(frames_of(vec![unspecified])).is_err());
    assert_eq!(session.resume(), before);
    assert_eq!(session.objects(PODS).len(), 2, "web-5 was not applied");
    // The stream itself is still usable for a correct message.
    let applied = session
        .apply(frames(&[FrameSpec::delta(PODS, 11).put("web-5", 1)]))
        .unwrap();
    assert_eq!(applied.ack, Some(Revision(11)));
}

fn frames_of(frames: Vec<pb::Frame>) -> ServerMessage {
    ServerMessage {
        frames,
        ..ServerMessage::default()
    }
}

#[test]
fn protocol_violations_are_refused() {
    let mut session = synced_session();
    let delta_during_resync = frames(&[
        FrameSpec::replace(PODS, 20).put("web-0", 1),
        FrameSpec::delta(NODES, 21).put("n1", 2),
    ]);
    assert!(matches!(
        session.apply(delta_during_resync),
        Err(Error::DeltaDuringResync { .. })
    ));
    assert!(matches!(
        session.apply(frames(&[FrameSpec::delta(PODS, 10).put("web-0", 3)])),
        Err(Error::RevisionWentBack {
            floor: Revision(10),
            ..
        })
    ));
    assert!(matches!(
        session.apply(frames(&[FrameSpec::delta("v1/services", 11)])),
        Err(Error::UnsubscribedFrame { .. })
    ));
    let mut wrong_scope = FrameSpec::delta(PODS, 11).encode();
    wrong_scope.scope = "node-b".into();
    assert!(matches!(
        session.apply(frames_of(vec![wrong_scope])),
        Err(Error::ScopeMismatch { .. })
    ));
    assert!(matches!(
        session.apply(frames(&[FrameSpec::replace(PODS, 20).buckets(&[BUCKETS])])),
        Err(Error::BucketOutOfRange { .. })
    ));
    assert!(matches!(
        session.apply(welcome(epoch(1), ResumeMode::Deltas, 10)),
        Err(Error::UnexpectedWelcome)
    ));
    assert_eq!(session.complete().unwrap().revision, Revision(10));
}

#[test]
fn a_welcome_the_session_cannot_follow_is_refused() {
    let mut session = session();
    session.begin_stream();
    assert!(matches!(
        session.apply(synced(1)),
        Err(Error::MissingWelcome)
    ));
    assert!(matches!(
        session.apply(welcome(epoch(1), ResumeMode::Deltas, 1)),
        Err(Error::DeltasWithoutResume { .. })
    ));
    assert!(matches!(
        session.apply(welcome(epoch(1), ResumeMode::Unspecified, 1)),
        Err(Error::InvalidResumeMode(0))
    ));
    let mut unserved = welcome(epoch(1), ResumeMode::Snapshot, 1);
    let info = unserved.welcome.as_mut().unwrap();
    info.resources.retain(|info| info.resource != NODES);
    assert!(matches!(
        session.apply(unserved),
        Err(Error::NotServed { .. })
    ));
    let mut old = welcome(epoch(1), ResumeMode::Snapshot, 1);
    old.welcome.as_mut().unwrap().protocol_version = 2;
    assert!(matches!(
        session.apply(old),
        Err(Error::UnsupportedProtocolVersion { got: 2 })
    ));
    // Deltas before the Synced of a snapshot catch-up.
    assert!(matches!(
        session.apply(join(vec![
            welcome(epoch(1), ResumeMode::Snapshot, 1),
            frames(&[FrameSpec::delta(PODS, 1)]),
        ])),
        Err(Error::DeltaBeforeSynced { .. })
    ));
    // A refused first message leaves the stream waiting for a Welcome still.
    session
        .apply(join(vec![
            welcome(epoch(1), ResumeMode::Snapshot, 1),
            synced(1),
        ]))
        .unwrap();
}

#[test]
fn deltas_resume_carries_on_from_the_resumed_revision() {
    let mut session = synced_session();
    session.begin_stream();
    let applied = session
        .apply(join(vec![
            welcome(epoch(1), ResumeMode::Deltas, 14),
            frames(&[
                FrameSpec::delta(PODS, 12).put("web-0", 2),
                FrameSpec::delta(PODS, 14).put("web-0", 3),
            ]),
        ]))
        .unwrap();
    assert_eq!(applied.ack, Some(Revision(14)));
    assert_eq!(
        describe(&applied),
        [
            r#"v1/pods apply web-0 {"v":2}"#,
            r#"v1/pods apply web-0 {"v":3}"#
        ]
    );
    let applied = session.apply(synced(14)).unwrap();
    assert!(applied.events.is_empty());
    assert_eq!(applied.ack, None, "already complete at 14");
    assert_digests_consistent(&session);
}

#[test]
fn a_hello_drops_digests_to_fit_the_servers_hello_limit() {
    let mut session = synced_session();
    let full = session.begin_stream();
    assert_eq!(full.resume.as_ref().unwrap().digests.len(), 2);
    let mut small = welcome(epoch(1), ResumeMode::Deltas, 10);
    let limits = small.welcome.as_mut().unwrap().limits.as_mut().unwrap();
    // Room for the Hello and one 16-bucket digest, not two.
    limits.max_hello_bytes = (full.encoded_len() - 100) as u32;
    session.apply(join(vec![small, synced(10)])).unwrap();
    let trimmed = session.begin_stream();
    assert_eq!(trimmed.resume.as_ref().unwrap().digests.len(), 1);
    assert!(trimmed.encoded_len() <= full.encoded_len() - 100);
}

#[test]
fn a_changed_bucket_count_rehashes_the_digest_at_synced() {
    let mut session = synced_session();
    session.begin_stream();
    let mut bigger = welcome(epoch(2), ResumeMode::Snapshot, 5);
    for info in &mut bigger.welcome.as_mut().unwrap().resources {
        info.digest_buckets = 64;
        info.fingerprint = 0xbeef;
    }
    session
        .apply(join(vec![
            bigger,
            frames(&[
                FrameSpec::replace(PODS, 5).put("web-0", 1),
                FrameSpec::replace(NODES, 5),
            ]),
            synced(5),
        ]))
        .unwrap();
    assert_eq!(session.digest(PODS).unwrap().bucket_count(), 64);
    let resume = session.resume().unwrap();
    assert!(resume.digests.iter().all(|d| d.fingerprint == 0xbeef));
    assert_digests_consistent(&session);
}

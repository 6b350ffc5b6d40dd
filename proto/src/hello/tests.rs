//! Tests for [`validate_hello`]: one good hello, then one broken rule at a time.

use bytes::Bytes;

use super::*;
use crate::pb::{Resume, Subscription};
use crate::{DEFAULT_DIGEST_BUCKETS, DEFAULT_MAX_HELLO_BYTES, DEFAULT_MAX_SUBSCRIPTIONS, Epoch};

fn subscription(resource: &str, node_scoped: bool) -> Subscription {
    Subscription {
        resource: resource.to_owned(),
        node_scoped,
    }
}

fn good_hello() -> Hello {
    let mut pods = Digest::new(16).unwrap();
    pods.insert("default", "web-0", b"{}");
    Hello {
        protocol_version: PROTOCOL_VERSION,
        agent_id: "agent-abc12".to_owned(),
        node_name: "node-1".to_owned(),
        agent_version: "cattail-agent/0.1.0".to_owned(),
        subscriptions: vec![
            subscription("v1/pods", true),
            subscription("networking.k8s.io/v1/networkpolicies", false),
        ],
        resume: Some(Resume {
            epoch: Epoch::from(7u128).to_bytes(),
            revision: 42,
            digests: vec![
                pods.to_proto("v1/pods", "node-1", 1),
                Digest::new(16)
                    .unwrap()
                    .to_proto("networking.k8s.io/v1/networkpolicies", "", 2),
            ],
            covered: Vec::new(),
        }),
        accepted_encodings: vec![1, 2, 99],
    }
}

/// Asserts that `hello` is refused as malformed, with a message that mentions `expected`.
#[track_caller]
fn assert_invalid(hello: &Hello, expected: &str) {
    match validate_hello(hello, DEFAULT_MAX_SUBSCRIPTIONS) {
        Err(Error::InvalidHello(message)) => assert!(
            message.contains(expected),
            "message {message:?} should mention {expected:?}"
        ),
        other => panic!("expected InvalidHello mentioning {expected:?}, got {other:?}"),
    }
}

#[test]
fn a_good_hello_yields_its_resources_in_order() {
    let resources = validate_hello(&good_hello(), DEFAULT_MAX_SUBSCRIPTIONS).unwrap();
    let names: Vec<String> = resources.iter().map(ToString::to_string).collect();
    assert_eq!(names, ["v1/pods", "networking.k8s.io/v1/networkpolicies"]);
}

#[test]
fn a_hello_without_resume_is_fine() {
    let mut hello = good_hello();
    hello.resume = None;
    assert!(validate_hello(&hello, DEFAULT_MAX_SUBSCRIPTIONS).is_ok());
}

#[test]
fn the_wrong_protocol_version_is_a_failed_precondition() {
    for version in [0, 2] {
        let mut hello = good_hello();
        hello.protocol_version = version;
        let error = validate_hello(&hello, DEFAULT_MAX_SUBSCRIPTIONS).unwrap_err();
        assert!(
            matches!(error, Error::UnsupportedProtocolVersion { got, supported: 1 } if got == version),
            "{error:?}"
        );
        assert_eq!(error.code(), tonic::Code::FailedPrecondition);
    }
}

#[test]
fn identity_fields_are_checked() {
    let mut hello = good_hello();
    hello.agent_id.clear();
    assert_invalid(&hello, "agent_id is empty");

    let mut hello = good_hello();
    hello.agent_version = "x".repeat(MAX_HELLO_STRING_LEN + 1);
    assert_invalid(&hello, "agent_version is 254 bytes");
}

#[test]
fn subscriptions_are_checked() {
    let mut hello = good_hello();
    hello.subscriptions.clear();
    assert_invalid(&hello, "no subscriptions");

    let mut hello = good_hello();
    hello.subscriptions.push(subscription("v1/pods", false));
    assert_invalid(&hello, "v1/pods is subscribed twice");

    let mut hello = good_hello();
    hello.node_name.clear();
    hello.resume = None;
    assert_invalid(&hello, "node_name is empty");

    let hello = good_hello();
    let error = validate_hello(&hello, 1).unwrap_err();
    assert!(error.to_string().contains("limit of 1"), "{error}");

    let mut hello = good_hello();
    hello.subscriptions.push(subscription("pods", false));
    let error = validate_hello(&hello, DEFAULT_MAX_SUBSCRIPTIONS).unwrap_err();
    assert!(matches!(error, Error::InvalidResource { .. }), "{error:?}");
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
}

#[test]
fn resume_is_checked() {
    let mut hello = good_hello();
    if let Some(resume) = hello.resume.as_mut() {
        resume.epoch = Bytes::from_static(b"short");
    }
    assert_invalid(&hello, "resume.epoch is 5 bytes");

    let mut hello = good_hello();
    if let Some(resume) = hello.resume.as_mut() {
        resume.digests[0].resource = "v1/services".to_owned();
    }
    assert_invalid(&hello, "not subscribed");

    let mut hello = good_hello();
    if let Some(resume) = hello.resume.as_mut() {
        resume.digests[0].scope = "node-2".to_owned();
    }
    assert_invalid(&hello, "implies scope \"node-1\"");

    let mut hello = good_hello();
    if let Some(resume) = hello.resume.as_mut() {
        let again = resume.digests[1].clone();
        resume.digests.push(again);
    }
    assert_invalid(&hello, "two digests");

    let mut hello = good_hello();
    if let Some(resume) = hello.resume.as_mut() {
        resume.digests[0].buckets.pop();
    }
    assert_invalid(&hello, "declares 16 buckets but carries 15");
}

fn served() -> Vec<ResourceInfo> {
    vec![
        ResourceInfo {
            resource: "v1/pods".to_owned(),
            fingerprint: 1,
            scope_field: "spec.nodeName".to_owned(),
            digest_buckets: 16,
        },
        ResourceInfo {
            resource: "networking.k8s.io/v1/networkpolicies".to_owned(),
            fingerprint: 2,
            scope_field: String::new(),
            digest_buckets: 16,
        },
    ]
}

#[test]
fn served_resources_are_accepted() {
    assert!(check_served(&good_hello(), &served()).is_ok());
}

#[test]
fn unknown_resources_are_named_with_the_alternatives() {
    let mut hello = good_hello();
    hello.subscriptions.push(subscription("v1/services", false));
    let error = check_served(&hello, &served()).unwrap_err();
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
    let message = error.to_string();
    assert!(
        message.contains("\"v1/services\" is not served"),
        "{message}"
    );
    assert!(
        message.contains("v1/pods, networking.k8s.io/v1/networkpolicies"),
        "{message}"
    );
}

#[test]
fn only_scopable_resources_can_be_node_scoped() {
    let mut hello = good_hello();
    hello.subscriptions[1].node_scoped = true;
    assert!(matches!(
        check_served(&hello, &served()),
        Err(Error::InvalidHello(message)) if message.contains("cannot be node scoped")
    ));
}

/// The largest Hello the defaults allow: every subscription resuming with a full default
/// digest, and every string as long as allowed. It must fit in the default Hello limit, or
/// digest resume could never be used at the limits the server advertises.
#[test]
fn a_full_default_hello_fits_the_default_limit() {
    let longest_resource = format!("{}/v1/{}", "g".repeat(253), "p".repeat(63));
    let node_name = "n".repeat(MAX_HELLO_STRING_LEN);
    let digest = Digest::new(DEFAULT_DIGEST_BUCKETS).unwrap();
    let subscriptions: Vec<Subscription> = (0..DEFAULT_MAX_SUBSCRIPTIONS)
        .map(|i| subscription(&format!("{longest_resource}{i}"), true))
        .collect();
    let digests = subscriptions
        .iter()
        .map(|s| digest.to_proto(&s.resource, &node_name, u64::MAX))
        .collect();
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        agent_id: "a".repeat(MAX_HELLO_STRING_LEN),
        node_name: node_name.clone(),
        agent_version: "v".repeat(MAX_HELLO_STRING_LEN),
        subscriptions,
        resume: Some(Resume {
            epoch: Epoch::from(u128::MAX).to_bytes(),
            revision: u64::MAX,
            digests,
            covered: Vec::new(),
        }),
        accepted_encodings: vec![1, 2],
    };
    let message = crate::pb::AgentMessage {
        message: Some(crate::pb::agent_message::Message::Hello(hello)),
    };
    let size = prost::Message::encoded_len(&message);
    assert!(
        size <= DEFAULT_MAX_HELLO_BYTES as usize,
        "a full default Hello is {size} bytes, over the {DEFAULT_MAX_HELLO_BYTES}-byte limit"
    );
}

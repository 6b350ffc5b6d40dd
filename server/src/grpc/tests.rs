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
        (
            Error::WriteTimeout(Duration::from_secs(30)),
            Code::Unavailable,
        ),
        (Error::Encode("bug".into()), Code::Internal),
        (Error::Task("panicked".into()), Code::Internal),
    ];
    for (error, code) in cases {
        assert_eq!(status(&error).code(), code, "{error}");
    }
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

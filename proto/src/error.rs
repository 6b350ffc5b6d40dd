//! The crate's one error type, and the gRPC status code each error maps to.
//!
//! Every fallible function in `cattail-proto` returns [`Result`]. Each variant's message says
//! what was wrong and what to do about it, so a server can hand it to the agent as the text of
//! a `tonic::Status` without rewording it, using [`Error::code`] for the status code.

use std::io;

/// A `Result` whose error is this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when parsing, validating, hashing or encoding protocol data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A resource string is not `group/version/plural` (or `version/plural` for the core group).
    #[error(
        "invalid resource {resource:?}: {reason}; write it as group/version/plural, or \
         version/plural for the core group, e.g. \"v1/pods\" or \"apps/v1/deployments\""
    )]
    InvalidResource {
        /// The string as given.
        resource: String,
        /// Which rule it broke.
        reason: String,
    },

    /// A subscription names a resource the server does not serve.
    #[error(
        "resource {resource:?} is not served by this server; it serves: {served}; \
         ask the operator to configure it or drop the subscription"
    )]
    UnknownResource {
        /// The subscribed resource.
        resource: String,
        /// The resources the server does serve, comma-separated.
        served: String,
    },

    /// A digest bucket count is not a power of two from 1 to [`crate::MAX_DIGEST_BUCKETS`].
    #[error(
        "invalid digest bucket count {0}: it must be a power of two from 1 to 65536 \
         (the default is 4096)"
    )]
    InvalidBucketCount(u64),

    /// Two digests with different bucket counts were compared.
    #[error(
        "cannot compare a digest of {theirs} buckets with one of {ours} buckets: \
         digests are comparable only with the same bucket count"
    )]
    BucketCountMismatch {
        /// The bucket count of the digest compared against.
        ours: usize,
        /// The bucket count of the other digest.
        theirs: usize,
    },

    /// A `ResourceDigest` declares a bucket count that differs from the buckets it carries.
    #[error("resource digest declares {declared} buckets but carries {actual}")]
    DigestLengthMismatch {
        /// `ResourceDigest.bucket_count`.
        declared: u32,
        /// `ResourceDigest.buckets.len()`.
        actual: usize,
    },

    /// An epoch is not exactly 16 bytes.
    #[error("invalid epoch: it must be exactly 16 bytes, got {0}")]
    InvalidEpoch(usize),

    /// An epoch in text form is not 32 hexadecimal digits.
    #[error("invalid epoch {0:?}: write the 32 hexadecimal digits the server logs")]
    InvalidEpochText(String),

    /// A frame names an encoding this build cannot produce or decode.
    #[error(
        "unsupported frame encoding {0}: this build handles ENCODING_PROTO (1) and \
         ENCODING_PROTO_ZSTD (2)"
    )]
    UnsupportedEncoding(i32),

    /// A payload's declared or actual uncompressed size is over the limit.
    #[error(
        "frame payload of {size} bytes uncompressed exceeds the limit of {limit} bytes; \
         raise the limit or lower the server's batch size"
    )]
    PayloadTooLarge {
        /// The declared or actual uncompressed size, whichever was found to be too large.
        size: u64,
        /// The limit it was checked against.
        limit: u64,
    },

    /// A frame's `uncompressed_length` differs from the size its payload really has.
    #[error(
        "frame declares an uncompressed length of {declared} bytes but its payload holds \
         {actual}; the sender is broken"
    )]
    UncompressedLengthMismatch {
        /// `Frame.uncompressed_length`.
        declared: u64,
        /// The size found by decoding.
        actual: u64,
    },

    /// zstd could not compress a payload.
    #[error("zstd compression failed: {0}")]
    Compress(#[source] io::Error),

    /// A zstd payload is corrupt, is not exactly one zstd frame, or does not fit in its
    /// declared uncompressed length.
    #[error(
        "frame payload is not one zstd frame that decompresses to its declared {declared} \
         bytes: {source}"
    )]
    Decompress {
        /// `Frame.uncompressed_length`.
        declared: u32,
        /// What zstd reported.
        source: io::Error,
    },

    /// A payload is not a valid encoded `FramePayload`.
    #[error("frame payload is not a valid cattail.v1.FramePayload: {0}")]
    Decode(#[from] prost::DecodeError),

    /// A `Hello` asks for a protocol version this build does not speak.
    #[error(
        "unsupported protocol version {got}: this server speaks version {supported}; \
         upgrade or downgrade the agent"
    )]
    UnsupportedProtocolVersion {
        /// `Hello.protocol_version`.
        got: u32,
        /// The version this build speaks, [`crate::PROTOCOL_VERSION`].
        supported: u32,
    },

    /// A `Hello` is malformed: the message says which field and why.
    #[error("malformed hello: {0}")]
    InvalidHello(String),
}

impl Error {
    /// The gRPC status code a server answers with when this error ends a stream.
    ///
    /// This is the table in docs/PROTOCOL.md, "Errors", for the errors this crate detects.
    #[must_use]
    pub fn code(&self) -> tonic::Code {
        match self {
            Error::UnsupportedProtocolVersion { .. } => tonic::Code::FailedPrecondition,
            Error::PayloadTooLarge { .. } => tonic::Code::ResourceExhausted,
            Error::Compress(_) => tonic::Code::Internal,
            Error::InvalidResource { .. }
            | Error::UnknownResource { .. }
            | Error::InvalidBucketCount(_)
            | Error::BucketCountMismatch { .. }
            | Error::DigestLengthMismatch { .. }
            | Error::InvalidEpoch(_)
            | Error::InvalidEpochText(_)
            | Error::UnsupportedEncoding(_)
            | Error::UncompressedLengthMismatch { .. }
            | Error::Decompress { .. }
            | Error::Decode(_)
            | Error::InvalidHello(_) => tonic::Code::InvalidArgument,
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        tonic::Status::new(error.code(), error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_version_mismatch_is_a_failed_precondition() {
        let error = Error::UnsupportedProtocolVersion {
            got: 2,
            supported: 1,
        };
        let status = tonic::Status::from(error);
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert!(
            status.message().contains("version 2"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn oversized_payloads_are_resource_exhausted() {
        let error = Error::PayloadTooLarge { size: 10, limit: 5 };
        assert_eq!(error.code(), tonic::Code::ResourceExhausted);
    }

    #[test]
    fn malformed_input_is_invalid_argument() {
        for error in [
            Error::InvalidHello("no subscriptions".into()),
            Error::InvalidEpoch(3),
            Error::InvalidBucketCount(3),
            Error::UnsupportedEncoding(9),
        ] {
            assert_eq!(error.code(), tonic::Code::InvalidArgument, "{error}");
        }
    }
}

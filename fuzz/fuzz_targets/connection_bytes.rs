//! Arbitrary bytes as a whole client connection (the seeds start with a preface and SETTINGS).
#![no_main]

use cattail_server::grpc::http2_fuzz::{self, Step};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    http2_fuzz::connection(&[Step {
        bytes: data.to_vec(),
        pause: std::time::Duration::ZERO,
    }]);
});

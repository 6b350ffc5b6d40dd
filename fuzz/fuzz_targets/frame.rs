//! One frame header and payload through every parser of `frame.rs`, checked against the RFC.
#![no_main]

use cattail_server::grpc::http2_fuzz;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| http2_fuzz::parse_frame(data));

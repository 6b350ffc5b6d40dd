//! DATA payloads through a stream's gRPC message reader, checked against the framing.
#![no_main]

use cattail_server::grpc::http2_fuzz;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| http2_fuzz::message_reader(data));

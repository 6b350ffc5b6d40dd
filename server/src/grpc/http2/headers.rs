//! Header blocks: a request's, decoded with HPACK (RFC 7541, [`super::hpack`]), and the few
//! this server sends, encoded by hand.
//!
//! Responses use only the static table and literals without indexing, so this side keeps no
//! HPACK state and whatever the peer's table size, every block is valid. Decoding keeps the
//! connection's dynamic table, bounded by the size this server advertises; a block that cannot
//! be decoded breaks that shared state, and the caller closes the connection.

use bytes::BufMut;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use super::hpack::Decoder;
use super::request::RequestHead;

/// The dynamic table size this server allows the peer's encoder (the RFC's default).
pub(super) const TABLE_SIZE: usize = 4096;
/// The decoded header list size this server advertises and enforces (RFC 9113 6.5.2).
pub(super) const MAX_LIST_SIZE: usize = 16 * 1024;
/// A `grpc-message` is cut to this many bytes before encoding, so a block fits one frame.
const MAX_STATUS_MESSAGE_BYTES: usize = 2048;

/// The connection's HPACK decoder.
#[derive(Debug)]
pub(super) struct HeaderDecoder {
    hpack: Decoder,
}

impl Default for HeaderDecoder {
    fn default() -> Self {
        Self {
            hpack: Decoder::new(TABLE_SIZE),
        }
    }
}

impl HeaderDecoder {
    /// Decodes one whole header block (HEADERS and its CONTINUATIONs, joined).
    ///
    /// # Errors
    /// A block that is not valid HPACK: a connection error (COMPRESSION_ERROR).
    pub(super) fn decode(&mut self, block: &[u8]) -> Result<RequestHead, String> {
        let mut head = RequestHead::default();
        let mut list_size = 0usize;
        self.hpack
            .decode(block, |name, value| {
                list_size += name.len() + value.len() + 32;
                if list_size > MAX_LIST_SIZE {
                    head.too_large = true;
                    return;
                }
                head.field(name, value);
            })
            .map_err(|error| format!("a header block that is not valid HPACK: {error}"))?;
        Ok(head)
    }
}

/// Writes `:status` (and `content-type: application/grpc` when `grpc`).
pub(super) fn put_response_head(dst: &mut impl BufMut, status: u16, grpc: bool) {
    if status == 200 {
        // Indexed field 8 of the static table: `:status: 200`.
        dst.put_u8(0x88);
    } else {
        // Literal without indexing, name from static entry 8 (`:status`).
        put_int(dst, 0x00, 4, 8);
        put_string(dst, status.to_string().as_bytes());
    }
    if grpc {
        // Literal without indexing, name from static entry 31 (`content-type`).
        put_int(dst, 0x00, 4, 31);
        put_string(dst, b"application/grpc");
    }
}

/// Writes `:status` and `content-type: text/plain`: an answer to a request that is not gRPC.
pub(super) fn put_text_head(dst: &mut impl BufMut, status: u16) {
    put_response_head(dst, status, false);
    // Literal without indexing, name from static entry 31 (`content-type`).
    put_int(dst, 0x00, 4, 31);
    put_string(dst, b"text/plain; charset=utf-8");
}

/// Writes `grpc-status` and, unless empty, `grpc-message` (percent-encoded, cut to a bound).
pub(super) fn put_grpc_status(dst: &mut impl BufMut, code: i32, message: &str) {
    put_literal(dst, b"grpc-status", code.to_string().as_bytes());
    if message.is_empty() {
        return;
    }
    let mut end = message.len().min(MAX_STATUS_MESSAGE_BYTES);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    put_literal(dst, b"grpc-message", &percent_encode(&message[..end]));
}

/// Writes the custom metadata of `status` (like `cattail-try-endpoints`), after its
/// `grpc-status`: each entry a literal field without indexing. Binary (`-bin`) entries are
/// written as tonic keeps them, base64.
pub(super) fn put_status_metadata(dst: &mut impl BufMut, status: &tonic::Status) {
    if status.metadata().is_empty() {
        return;
    }
    for (name, value) in &status.metadata().clone().into_headers() {
        put_literal(dst, name.as_str().as_bytes(), value.as_bytes());
    }
}

/// The bytes the gRPC HTTP/2 spec has `grpc-message` percent-encode: everything outside
/// printable ASCII (controls and non-ASCII bytes), and `%` itself.
const GRPC_MESSAGE_ESCAPED: &AsciiSet = &CONTROLS.add(b'%');

/// The gRPC spec's `grpc-message` encoding of `message`.
fn percent_encode(message: &str) -> Vec<u8> {
    utf8_percent_encode(message, GRPC_MESSAGE_ESCAPED)
        .flat_map(str::bytes)
        .collect()
}

/// A literal field without indexing, with a new name.
fn put_literal(dst: &mut impl BufMut, name: &[u8], value: &[u8]) {
    dst.put_u8(0x00);
    put_string(dst, name);
    put_string(dst, value);
}

/// A string literal, not Huffman-coded.
fn put_string(dst: &mut impl BufMut, value: &[u8]) {
    put_int(dst, 0x00, 7, value.len());
    dst.put_slice(value);
}

/// An HPACK integer with an `prefix`-bit prefix after the `high` bits (RFC 7541 5.1).
fn put_int(dst: &mut impl BufMut, high: u8, prefix: u8, value: usize) {
    let max = (1usize << prefix) - 1;
    if value < max {
        dst.put_u8(high | value as u8);
        return;
    }
    dst.put_u8(high | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        dst.put_u8((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    dst.put_u8(rest as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(block: &[u8]) -> Vec<(String, String)> {
        // An independent decoder checks this encoder.
        let mut hpack = loona_hpack::Decoder::new();
        hpack
            .decode(block)
            .unwrap()
            .into_iter()
            .map(|(n, v)| (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap()))
            .collect()
    }

    #[test]
    fn response_blocks_decode_as_written() {
        let mut block = Vec::new();
        put_response_head(&mut block, 200, true);
        put_grpc_status(&mut block, 14, "server shutting down: 100% gone\n");
        assert_eq!(
            decode_all(&block),
            [
                (":status".into(), "200".into()),
                ("content-type".into(), "application/grpc".into()),
                ("grpc-status".into(), "14".into()),
                (
                    "grpc-message".into(),
                    "server shutting down: 100%25 gone%0A".into()
                ),
            ]
        );
        let mut block = Vec::new();
        put_response_head(&mut block, 415, false);
        assert_eq!(decode_all(&block), [(":status".into(), "415".into())]);
        let mut block = Vec::new();
        put_text_head(&mut block, 405);
        assert_eq!(
            decode_all(&block),
            [
                (":status".into(), "405".into()),
                ("content-type".into(), "text/plain; charset=utf-8".into()),
            ]
        );
    }

    #[test]
    fn a_status_with_metadata_writes_it_after_the_status() {
        let mut status = tonic::Status::unavailable("server draining");
        status.metadata_mut().insert(
            "cattail-try-endpoints",
            "10.0.0.2:5473,10.0.0.3:5473".parse().unwrap(),
        );
        let mut block = Vec::new();
        put_grpc_status(&mut block, status.code() as i32, status.message());
        put_status_metadata(&mut block, &status);
        assert_eq!(
            decode_all(&block),
            [
                ("grpc-status".into(), "14".into()),
                ("grpc-message".into(), "server draining".into()),
                (
                    "cattail-try-endpoints".into(),
                    "10.0.0.2:5473,10.0.0.3:5473".into()
                ),
            ]
        );
        let mut block = Vec::new();
        put_status_metadata(&mut block, &tonic::Status::unavailable("x"));
        assert!(block.is_empty());
    }

    #[test]
    fn long_values_use_multi_byte_integers_and_messages_are_cut_on_a_char_boundary() {
        let message = "é".repeat(3000);
        let mut block = Vec::new();
        put_grpc_status(&mut block, 2, &message);
        let fields = decode_all(&block);
        let encoded = &fields[1].1;
        // "é" is two bytes, each encoded as three: 1,024 whole characters fit in 2,048 bytes.
        assert_eq!(encoded.len(), 1024 * 6);
        assert!(encoded.starts_with("%C3%A9"));
    }

    #[test]
    fn request_heads_keep_what_the_server_routes_on() {
        // A block as a client encoder writes it: indexed and literal fields, with indexing.
        let mut encoder = loona_hpack::Encoder::new();
        let fields: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", b"/cattail.v1.Sync/Watch"),
            (b":authority", b"127.0.0.1:5473"),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        ];
        let block = encoder.encode(fields.clone());
        let mut decoder = HeaderDecoder::default();
        let head = decoder.decode(&block).unwrap();
        assert_eq!(head.method, "POST");
        assert_eq!(head.path, "/cattail.v1.Sync/Watch");
        assert_eq!(head.content_type, "application/grpc");
        assert_eq!(head.grpc_encoding, None);
        assert!(!head.too_large);
        // The second block leans on the dynamic table the first one filled.
        let again = encoder.encode(fields);
        assert!(again.len() < block.len());
        assert_eq!(decoder.decode(&again).unwrap(), head);
    }

    #[test]
    fn garbage_and_oversized_lists_are_refused() {
        let mut decoder = HeaderDecoder::default();
        assert!(
            decoder
                .decode(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
                .is_err()
        );
        let mut encoder = loona_hpack::Encoder::new();
        let big = vec![b'x'; 6000];
        let block = encoder.encode(vec![
            (&b"a"[..], &big[..]),
            (&b"b"[..], &big[..]),
            (&b"c"[..], &big[..]),
        ]);
        let head = HeaderDecoder::default().decode(&block).unwrap();
        assert!(head.too_large);
    }
}

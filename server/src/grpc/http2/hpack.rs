//! HPACK decoding (RFC 7541): the header blocks agents send, into `(name, value)` fields.
//!
//! The connection's dynamic table is bounded by the size this server advertises
//! (`SETTINGS_HEADER_TABLE_SIZE`, the default 4,096 bytes): a table size update above it is an
//! error, as is anything malformed. Strings that are not Huffman-coded are handed out as slices
//! of the block; Huffman strings are decoded into two small buffers. An error leaves the table
//! in an unknown state, so the caller closes the connection (COMPRESSION_ERROR).

mod huffman;

use std::collections::VecDeque;

/// Bytes an entry adds to the table size besides its name and value (RFC 7541 4.1).
const ENTRY_OVERHEAD: usize = 32;

/// RFC 7541 Appendix A: the static table, from index 1.
const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// A dynamic table entry: name and value.
type Entry = (Box<[u8]>, Box<[u8]>);

/// A connection's HPACK decoder.
#[derive(Debug)]
pub(super) struct Decoder {
    /// Newest first: index 62 is `table[0]`.
    table: VecDeque<Entry>,
    /// The table's size by RFC 7541's count.
    size: usize,
    /// The table's current limit, as the peer last set it.
    max_size: usize,
    /// The most the peer may set it to.
    allowed: usize,
    name_buf: Vec<u8>,
    value_buf: Vec<u8>,
}

/// Where a field's name comes from.
enum Name {
    /// An index into the tables.
    Indexed(usize),
    /// A literal.
    Literal(Text),
}

/// Where a string literal's bytes are.
enum Text {
    /// Not Huffman-coded: this range of the block.
    Block(std::ops::Range<usize>),
    /// Huffman-coded: decoded into the decoder's buffer.
    Decoded,
}

impl Decoder {
    /// A decoder whose table may grow to `allowed` bytes.
    pub(super) fn new(allowed: usize) -> Self {
        Self {
            table: VecDeque::new(),
            size: 0,
            max_size: allowed,
            allowed,
            name_buf: Vec::new(),
            value_buf: Vec::new(),
        }
    }

    /// Decodes one whole header block, calling `field` for each field in order.
    ///
    /// # Errors
    /// A message naming what is malformed.
    pub(super) fn decode(
        &mut self,
        block: &[u8],
        mut field: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), String> {
        let mut pos = 0;
        let mut fields_seen = false;
        while pos < block.len() {
            let first = block[pos];
            if first & 0x80 != 0 {
                let index = integer(block, &mut pos, 7)?;
                let (name, value) = self.entry(index)?;
                field(name, value);
                fields_seen = true;
            } else if first & 0xe0 == 0x20 {
                if fields_seen {
                    return Err("a dynamic table size update after a header field".into());
                }
                let size = integer(block, &mut pos, 5)?;
                if size > self.allowed {
                    return Err(format!(
                        "a dynamic table size of {size} bytes; the limit is {}",
                        self.allowed
                    ));
                }
                self.max_size = size;
                self.evict(0);
            } else {
                let (prefix, indexing) = if first & 0x40 != 0 {
                    (6, true)
                } else {
                    (4, false)
                };
                let name = match integer(block, &mut pos, prefix)? {
                    0 => Name::Literal(string(block, &mut pos, &mut self.name_buf)?),
                    index => Name::Indexed(index),
                };
                let value = string(block, &mut pos, &mut self.value_buf)?;
                let value: &[u8] = match value {
                    Text::Block(range) => &block[range],
                    Text::Decoded => &self.value_buf,
                };
                let name: &[u8] = match name {
                    Name::Indexed(index) => self.entry(index)?.0,
                    Name::Literal(Text::Block(range)) => &block[range],
                    Name::Literal(Text::Decoded) => &self.name_buf,
                };
                field(name, value);
                fields_seen = true;
                if indexing {
                    let entry = (Box::from(name), Box::from(value));
                    self.insert(entry);
                }
            }
        }
        Ok(())
    }

    /// The field at `index`: the static table, then the dynamic one.
    fn entry(&self, index: usize) -> Result<(&[u8], &[u8]), String> {
        if index == 0 {
            return Err("a field index of 0".into());
        }
        if let Some((name, value)) = STATIC.get(index - 1) {
            return Ok((name.as_bytes(), value.as_bytes()));
        }
        self.table
            .get(index - 1 - STATIC.len())
            .map(|(name, value)| (&name[..], &value[..]))
            .ok_or_else(|| format!("a field index of {index}, past the table's end"))
    }

    fn insert(&mut self, entry: Entry) {
        let size = entry.0.len() + entry.1.len() + ENTRY_OVERHEAD;
        if size > self.max_size {
            // An entry larger than the table empties it and is not kept (RFC 7541 4.4).
            self.table.clear();
            self.size = 0;
            return;
        }
        self.evict(size);
        self.size += size;
        self.table.push_front(entry);
    }

    /// Drops the oldest entries until `room` more bytes fit.
    fn evict(&mut self, room: usize) {
        while self.size + room > self.max_size {
            let Some((name, value)) = self.table.pop_back() else {
                break;
            };
            self.size -= name.len() + value.len() + ENTRY_OVERHEAD;
        }
    }
}

/// Reads an integer with an `prefix`-bit prefix at `pos` (RFC 7541 5.1).
fn integer(block: &[u8], pos: &mut usize, prefix: u8) -> Result<usize, String> {
    let max = (1usize << prefix) - 1;
    let first = usize::from(block[*pos]) & max;
    *pos += 1;
    if first < max {
        return Ok(first);
    }
    let mut value = max;
    let mut shift = 0;
    loop {
        let byte = *block
            .get(*pos)
            .ok_or("a header block that ends inside an integer")?;
        *pos += 1;
        value += usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
        shift += 7;
        if shift > 28 {
            return Err("an integer over 2^28 in a header block".into());
        }
    }
}

/// Reads a string literal at `pos`, decoding it into `huffman_out` if it is Huffman-coded.
fn string(block: &[u8], pos: &mut usize, huffman_out: &mut Vec<u8>) -> Result<Text, String> {
    let first = *block
        .get(*pos)
        .ok_or("a header block that ends before a string")?;
    let len = integer(block, pos, 7)?;
    let range = *pos..pos.saturating_add(len);
    let bytes = block
        .get(range.clone())
        .ok_or("a string longer than the rest of its header block")?;
    *pos = range.end;
    if first & 0x80 == 0 {
        return Ok(Text::Block(range));
    }
    huffman_out.clear();
    huffman::decode(bytes, huffman_out)?;
    Ok(Text::Decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(decoder: &mut Decoder, block: &[u8]) -> Result<Vec<(String, String)>, String> {
        let mut out = Vec::new();
        decoder.decode(block, |n, v| {
            out.push((
                String::from_utf8_lossy(n).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            ));
        })?;
        Ok(out)
    }

    /// Bytes from hex digits, spaces ignored (as the RFC prints its examples).
    pub(super) fn hex(text: &str) -> Vec<u8> {
        let text: String = text.split_whitespace().collect();
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap_or_else(|e| panic!("{e}")))
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| ((*n).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn the_rfc_request_examples_decode_with_their_table() {
        // RFC 7541 C.3 (no Huffman) and C.4 (Huffman): three requests on one connection.
        for blocks in [
            [
                "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
                "8286 84be 5808 6e6f 2d63 6163 6865",
                "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
            ],
            [
                "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
                "8286 84be 5886 a8eb 1064 9cbf",
                "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
            ],
        ] {
            let mut decoder = Decoder::new(4096);
            let base = [
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
            ];
            assert_eq!(fields(&mut decoder, &hex(blocks[0])), Ok(pairs(&base)));
            assert_eq!(decoder.size, 57);
            let mut second = base.to_vec();
            second.push(("cache-control", "no-cache"));
            assert_eq!(fields(&mut decoder, &hex(blocks[1])), Ok(pairs(&second)));
            assert_eq!(decoder.size, 110);
            let third = [
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value"),
            ];
            assert_eq!(fields(&mut decoder, &hex(blocks[2])), Ok(pairs(&third)));
            assert_eq!(decoder.size, 164);
        }
    }

    #[test]
    fn entries_are_evicted_oldest_first_and_size_updates_are_bounded() {
        let mut decoder = Decoder::new(4096);
        // C.2.1: a literal with indexing; then shrink the table to 60 bytes, which holds it.
        let block = hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572");
        assert_eq!(
            fields(&mut decoder, &block),
            Ok(pairs(&[("custom-key", "custom-header")]))
        );
        assert_eq!(decoder.size, 55);
        // A size update to 0 empties the table: index 62 is gone.
        assert_eq!(fields(&mut decoder, &[0x20]), Ok(vec![]));
        assert!(fields(&mut decoder, &[0xbe]).is_err());
        // Above what was advertised, or after a field: refused.
        assert_eq!(fields(&mut decoder, &hex("3fe1 1f")), Ok(vec![])); // 4,096: allowed
        assert!(fields(&mut decoder, &hex("3fe2 1f")).is_err()); // 4,097
        assert!(fields(&mut decoder, &hex("8220")).is_err());
    }

    #[test]
    fn malformed_blocks_are_refused_without_panicking() {
        for block in [
            &[0x80][..],                               // index 0
            &[0xff, 0x00][..], // index 127: past the static table, empty dynamic table
            &[0x0f][..],       // an integer cut short
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff][..], // an integer too large
            &[0x00, 0x05, b'a'][..], // a string longer than the block
            &[0x00][..],       // a literal with no name
            &[0x00, 0x81, 0x00, 0x00][..], // a Huffman name with bad padding
        ] {
            assert!(
                Decoder::new(4096).decode(block, |_, _| {}).is_err(),
                "{block:02x?}"
            );
        }
    }

    #[test]
    fn an_independent_encoder_round_trips_through_the_dynamic_table() {
        let mut encoder = loona_hpack::Encoder::new();
        let mut decoder = Decoder::new(4096);
        let long = "v".repeat(5000);
        let requests: Vec<Vec<(&str, &str)>> = vec![
            vec![
                (":method", "POST"),
                (":path", "/cattail.v1.Sync/Watch"),
                ("te", "trailers"),
            ],
            vec![
                (":method", "POST"),
                (":path", "/cattail.v1.Sync/Watch"),
                ("x-big", &long),
            ],
            vec![
                (":method", "POST"),
                (":path", "/grpc.health.v1.Health/Check"),
                ("te", "trailers"),
            ],
        ];
        for request in requests {
            let block = encoder.encode(request.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
            assert_eq!(fields(&mut decoder, &block), Ok(pairs(&request)));
            assert!(decoder.size <= 4096);
        }
    }
}

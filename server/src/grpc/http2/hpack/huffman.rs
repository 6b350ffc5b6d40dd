//! HPACK's Huffman code (RFC 7541 Appendix B), decoding only.
//!
//! The code is canonical: codes are assigned in order of length, then of symbol, so the code
//! lengths alone define it. Decoding walks the bits of a string once, keeping the code read so
//! far and comparing it with the first code of its length: no tables are built per string.
//! (A general HPACK crate built a hash map of the whole code for every string it decoded: a
//! fifth of the server's CPU in a connect storm; docs/BENCHMARKS.md, session 5.)

use std::sync::OnceLock;

/// The code length of each symbol, 0 to 255 and 256 (EOS), from RFC 7541 Appendix B.
const LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30,
];
/// The longest code.
const MAX_LENGTH: usize = 30;
/// The end-of-string symbol, which a string never contains.
const EOS: u16 = 256;

/// The canonical code, arranged for decoding.
struct Code {
    /// Symbols sorted by code length, then by value: the order of their codes.
    symbols: [u16; 257],
    /// For each length, the first code of that length and its index in `symbols`.
    first_code: [u32; MAX_LENGTH + 1],
    first_index: [u16; MAX_LENGTH + 1],
    /// How many codes each length has.
    count: [u16; MAX_LENGTH + 1],
}

fn code() -> &'static Code {
    static CODE: OnceLock<Code> = OnceLock::new();
    CODE.get_or_init(|| {
        let mut count = [0u16; MAX_LENGTH + 1];
        for &length in &LENGTHS {
            count[usize::from(length)] += 1;
        }
        let mut symbols = [0u16; 257];
        let mut first_index = [0u16; MAX_LENGTH + 1];
        let mut next = 0u16;
        for (length, first) in first_index.iter_mut().enumerate() {
            *first = next;
            for (symbol, &l) in LENGTHS.iter().enumerate() {
                if usize::from(l) == length {
                    symbols[usize::from(next)] = symbol as u16;
                    next += 1;
                }
            }
        }
        let mut first_code = [0u32; MAX_LENGTH + 1];
        let mut code = 0u32;
        for length in 1..=MAX_LENGTH {
            code = (code + u32::from(count[length - 1])) << 1;
            first_code[length] = code;
        }
        Code {
            symbols,
            first_code,
            first_index,
            count,
        }
    })
}

/// Decodes a Huffman-coded string, appending to `out`.
///
/// # Errors
/// A code longer than 30 bits, the EOS symbol, or padding that is longer than 7 bits or not
/// all ones (RFC 7541 section 5.2).
pub(in super::super) fn decode(input: &[u8], out: &mut Vec<u8>) -> Result<(), &'static str> {
    let table = code();
    let mut code = 0u32;
    let mut length = 0usize;
    for &byte in input {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> shift) & 1);
            length += 1;
            let offset = code.wrapping_sub(table.first_code[length]);
            if offset < u32::from(table.count[length]) {
                let symbol =
                    table.symbols[usize::from(table.first_index[length]) + offset as usize];
                if symbol == EOS {
                    return Err("a Huffman string holds the EOS symbol");
                }
                out.push(symbol as u8);
                code = 0;
                length = 0;
            } else if length == MAX_LENGTH {
                return Err("a Huffman code longer than 30 bits");
            }
        }
    }
    if length > 7 || code != (1 << length) - 1 {
        return Err("Huffman padding that is not a prefix of EOS");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(hex: &str) -> Result<String, &'static str> {
        let mut out = Vec::new();
        decode(&super::super::tests::hex(hex), &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    #[test]
    fn the_rfc_examples_decode() {
        // RFC 7541 C.4.1 to C.4.3 and C.6.1.
        assert_eq!(
            decoded("f1e3c2e5f23a6ba0ab90f4ff"),
            Ok("www.example.com".into())
        );
        assert_eq!(decoded("a8eb10649cbf"), Ok("no-cache".into()));
        assert_eq!(decoded("25a849e95ba97d7f"), Ok("custom-key".into()));
        assert_eq!(decoded("25a849e95bb8e8b4bf"), Ok("custom-value".into()));
        assert_eq!(decoded("6402"), Ok("302".into()));
        assert_eq!(decoded("aec3771a4b"), Ok("private".into()));
        assert_eq!(
            decoded("d07abe941054d444a8200595040b8166e082a62d1bff"),
            Ok("Mon, 21 Oct 2013 20:13:21 GMT".into())
        );
        assert_eq!(decoded(""), Ok(String::new()));
    }

    #[test]
    fn every_code_length_sums_to_a_complete_code() {
        // Kraft's equality: a complete prefix code, so every bit string decodes or pads.
        let total: u64 = LENGTHS
            .iter()
            .map(|&l| 1u64 << (MAX_LENGTH - usize::from(l)))
            .sum();
        assert_eq!(total, 1 << MAX_LENGTH);
    }

    #[test]
    fn bad_padding_and_eos_are_refused() {
        // "0" is 00000; padding with zeros instead of ones.
        assert!(decoded("00").is_err());
        // Eight bits of padding (a whole 0xff byte after a complete symbol).
        assert!(decoded("07ff").is_err());
        // EOS itself: thirty ones, then two bits of padding.
        assert!(decoded("ffffffff").is_err());
        // One 5-bit symbol with three bits of ones as padding is fine: "0".
        assert_eq!(decoded("07"), Ok("0".into()));
    }
}

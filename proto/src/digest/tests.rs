//! Tests for the digest: the published test vectors, XOR algebra, and the error cases.
//!
//! The vectors below are also printed in docs/PROTOCOL.md ("Digest test vectors"), and were
//! checked against an independent xxh3 implementation. If one of these tests fails, the wire
//! contract changed: fix the code, not the numbers.

use super::*;

const WEB_0: &[u8] =
    br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web-0","namespace":"default"}}"#;
const WEB_0_LABELLED: &[u8] = br#"{"apiVersion":"v1","kind":"Pod","metadata":{"labels":{"app":"web"},"name":"web-0","namespace":"default"}}"#;
const NODE_1: &[u8] = br#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"node-1"}}"#;
const WEB_12: &[u8] =
    br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web-12","namespace":"default"}}"#;

/// The 520-byte value of the `default/big` vector: the alphabet 20 times, to exercise the
/// long-input path of xxh3 (inputs over 240 bytes).
fn big_value() -> Vec<u8> {
    b"abcdefghijklmnopqrstuvwxyz".repeat(20)
}

/// One published test vector.
struct Vector {
    namespace: &'static str,
    name: &'static str,
    value: Vec<u8>,
    key_hash: u64,
    entry_hash: u64,
    bucket_of_4096: u32,
    bucket_of_16: u32,
}

/// Builds a vector from positional fields, to keep the table below readable.
fn vector(
    (namespace, name, value): (&'static str, &'static str, Vec<u8>),
    (key_hash, entry_hash): (u64, u64),
    (bucket_of_4096, bucket_of_16): (u32, u32),
) -> Vector {
    Vector {
        namespace,
        name,
        value,
        key_hash,
        entry_hash,
        bucket_of_4096,
        bucket_of_16,
    }
}

fn vectors() -> Vec<Vector> {
    vec![
        vector(
            ("default", "web-0", WEB_0.to_vec()),
            (0xdb6f621c35f44d35, 0xbe77ece712e59c27),
            (3381, 5),
        ),
        vector(
            ("", "node-1", NODE_1.to_vec()),
            (0x3472e385957c6fd2, 0xf8525e44521462a4),
            (4050, 2),
        ),
        vector(
            ("kube-system", "coredns-7db6d8ff4d-x2x9k", b"{}".to_vec()),
            (0x90b73ef0ac0ab331, 0xd7e439bac4454a6a),
            (817, 1),
        ),
        vector(
            ("default", "web-12", WEB_12.to_vec()),
            (0x70c36d349a8d4cc5, 0xb3cc62f9041a7061),
            (3269, 5),
        ),
        vector(
            ("default", "big", big_value()),
            (0x9a34ecb9ebcf2b64, 0x29b7aba32b583ecc),
            (2916, 4),
        ),
    ]
}

#[test]
fn xxh3_is_the_seed_zero_variant() {
    // The published xxh3-64 of the empty input with seed 0.
    assert_eq!(xxhash_rust::xxh3::xxh3_64(b""), 0x2d06800538d394c2);
    assert_eq!(key_hash("", ""), xxhash_rust::xxh3::xxh3_64(b"\0"));
    assert_eq!(key_hash("", ""), 0xc44bdff4074eecdb);
}

#[test]
fn hashes_match_the_published_vectors() {
    for v in vectors() {
        let label = format!("{}/{}", v.namespace, v.name);
        assert_eq!(
            key_hash(v.namespace, v.name),
            v.key_hash,
            "key hash of {label}"
        );
        assert_eq!(
            entry_hash(v.namespace, v.name, &v.value),
            v.entry_hash,
            "entry hash of {label}"
        );
        let in_4096 = bucket_of(v.namespace, v.name, 4096).unwrap();
        assert_eq!(in_4096, v.bucket_of_4096, "{label}");
        let in_16 = bucket_of(v.namespace, v.name, 16).unwrap();
        assert_eq!(in_16, v.bucket_of_16, "{label}");
    }
}

#[test]
fn hashes_are_xxh3_of_the_joined_bytes() {
    for v in vectors() {
        let key = [v.namespace.as_bytes(), b"\0", v.name.as_bytes()].concat();
        assert_eq!(
            key_hash(v.namespace, v.name),
            xxhash_rust::xxh3::xxh3_64(&key)
        );
        let entry = [key.as_slice(), b"\0", &v.value].concat();
        let expected = xxhash_rust::xxh3::xxh3_64(&entry);
        assert_eq!(entry_hash(v.namespace, v.name, &v.value), expected);
    }
}

#[test]
fn digest_of_the_vectors_matches_the_published_buckets() {
    let mut digest = Digest::new(16).unwrap();
    for v in vectors() {
        digest.insert(v.namespace, v.name, &v.value);
    }
    let mut expected = [0u64; 16];
    expected[1] = 0xd7e439bac4454a6a;
    expected[2] = 0xf8525e44521462a4;
    expected[4] = 0x29b7aba32b583ecc;
    // web-0 and web-12 share bucket 5: their entry hashes XORed.
    expected[5] = 0x0dbb8e1e16ffec46;
    assert_eq!(expected[5], 0xbe77ece712e59c27 ^ 0xb3cc62f9041a7061);
    assert_eq!(digest.buckets(), expected.as_slice());
}

#[test]
fn update_and_remove_follow_the_entries() {
    let mut digest = Digest::new(16).unwrap();
    digest.insert("default", "web-0", WEB_0);
    digest.insert("default", "web-12", WEB_12);
    digest.insert("", "node-1", NODE_1);

    assert_eq!(
        entry_hash("default", "web-0", WEB_0_LABELLED),
        0x5b5f92464913fe93
    );
    digest.update("default", "web-0", WEB_0, WEB_0_LABELLED);
    assert_eq!(digest.buckets()[5], 0x5b5f92464913fe93 ^ 0xb3cc62f9041a7061);

    digest.remove("", "node-1", NODE_1);
    assert_eq!(digest.buckets()[2], 0);

    digest.remove("default", "web-12", WEB_12);
    digest.remove("default", "web-0", WEB_0_LABELLED);
    assert_eq!(
        digest,
        Digest::new(16).unwrap(),
        "removing everything empties every bucket"
    );
}

#[test]
fn order_of_application_does_not_matter() {
    let entries = vectors();
    let mut forwards = Digest::default();
    let mut backwards = Digest::default();
    for v in &entries {
        forwards.insert(v.namespace, v.name, &v.value);
    }
    for v in entries.iter().rev() {
        backwards.insert(v.namespace, v.name, &v.value);
    }
    assert_eq!(forwards, backwards);
    assert_eq!(forwards.bucket_count(), DEFAULT_DIGEST_BUCKETS);
}

#[test]
fn toggle_is_insert_with_precomputed_hashes() {
    let mut by_value = Digest::new(64).unwrap();
    let mut by_hash = Digest::new(64).unwrap();
    by_value.insert("ns", "a", b"1");
    by_hash.toggle(key_hash("ns", "a"), entry_hash("ns", "a", b"1"));
    assert_eq!(by_value, by_hash);
    assert_eq!(
        by_value.bucket_of("ns", "a"),
        bucket_of("ns", "a", 64).unwrap()
    );
}

#[test]
fn differing_buckets_lists_exactly_the_changed_buckets() {
    let mut server = Digest::new(4096).unwrap();
    let mut agent = Digest::new(4096).unwrap();
    for i in 0..200 {
        let name = format!("pod-{i}");
        server.insert("default", &name, b"v1");
        agent.insert("default", &name, b"v1");
    }
    assert_eq!(
        server.differing_buckets(agent.buckets()).unwrap(),
        Vec::<u32>::new()
    );

    agent.update("default", "pod-7", b"v1", b"v2");
    agent.remove("default", "pod-99", b"v1");
    agent.insert("default", "stale", b"v1");
    let mut expected = vec![
        server.bucket_of("default", "pod-7"),
        server.bucket_of("default", "pod-99"),
        server.bucket_of("default", "stale"),
    ];
    expected.sort_unstable();
    expected.dedup();
    assert_eq!(server.differing_buckets(agent.buckets()).unwrap(), expected);
}

#[test]
fn differing_buckets_refuses_a_different_size() {
    let digest = Digest::new(16).unwrap();
    let error = digest.differing_buckets(&[0; 8]).unwrap_err();
    assert!(
        matches!(
            error,
            Error::BucketCountMismatch {
                ours: 16,
                theirs: 8
            }
        ),
        "{error:?}"
    );
}

#[test]
fn bucket_counts_must_be_powers_of_two_up_to_65536() {
    for good in [1, 2, 16, 4096, 65536] {
        assert!(Digest::new(good).is_ok(), "{good}");
        assert!(bucket_of("a", "b", good).is_ok(), "{good}");
    }
    for bad in [0, 3, 100, 4095, 131072, u32::MAX] {
        assert!(
            matches!(Digest::new(bad), Err(Error::InvalidBucketCount(n)) if n == u64::from(bad)),
            "{bad}"
        );
        assert!(bucket_of("a", "b", bad).is_err(), "{bad}");
    }
    assert!(Digest::from_buckets(vec![0; 3]).is_err());
    assert!(Digest::from_buckets(Vec::new()).is_err());
    assert_eq!(Digest::from_buckets(vec![7; 4]).unwrap().buckets(), &[7; 4]);
}

#[test]
fn proto_round_trip_checks_consistency() {
    let mut digest = Digest::new(32).unwrap();
    digest.insert("default", "web-0", WEB_0);
    let wire = digest.to_proto("v1/pods", "node-1", 0xfeed);
    assert_eq!(wire.resource, "v1/pods");
    assert_eq!(wire.scope, "node-1");
    assert_eq!(wire.fingerprint, 0xfeed);
    assert_eq!(wire.bucket_count, 32);
    assert_eq!(Digest::from_proto(&wire).unwrap(), digest);

    let mut short = wire.clone();
    short.buckets.pop();
    assert!(matches!(
        Digest::from_proto(&short),
        Err(Error::DigestLengthMismatch {
            declared: 32,
            actual: 31
        })
    ));

    let mut odd = wire;
    odd.bucket_count = 31;
    odd.buckets.pop();
    assert!(matches!(
        Digest::from_proto(&odd),
        Err(Error::InvalidBucketCount(31))
    ));
}

//! Keeps the checked-in `src/gen/cattail.v1.rs` in step with `cattail/v1/sync.proto`.
//!
//! The crate compiles from the checked-in file, so building it never needs protoc. This test
//! regenerates the code with the vendored protoc into a temporary directory and fails if the
//! checked-in file differs. With `CATTAIL_REGEN_PROTO=1` it rewrites the checked-in file instead.

use std::fs;
use std::path::{Path, PathBuf};

/// The proto file, relative to the crate root (which is also the protoc include root).
const PROTO: &str = "cattail/v1/sync.proto";
/// The checked-in generated code, relative to the crate root.
const CHECKED_IN: &str = "src/gen/cattail.v1.rs";
/// The name prost gives the file for package `cattail.v1`.
const GENERATED_NAME: &str = "cattail.v1.rs";

fn crate_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs tonic-prost-build with the vendored protoc and returns the generated code.
fn generate(out_dir: &Path) -> String {
    let root = crate_root();
    let protoc = protoc_bin_vendored::protoc_bin_path()
        .expect("protoc-bin-vendored has no protoc for this platform");

    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    // Every `bytes` field becomes `bytes::Bytes`: payloads and values are then shared, not
    // copied, when a message is decoded from a `Bytes` buffer or a frame is cloned per agent.
    config.bytes(["."]);

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(true)
        .emit_rerun_if_changed(false)
        .out_dir(out_dir)
        .compile_with_config(config, &[root.join(PROTO)], std::slice::from_ref(&root))
        .expect("protoc or tonic-prost-build failed on cattail/v1/sync.proto");

    let path = out_dir.join(GENERATED_NAME);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Returns the first line where `a` and `b` differ, 1-based, with both versions of the line.
fn first_difference(a: &str, b: &str) -> Option<(usize, String, String)> {
    let mut left = a.lines();
    let mut right = b.lines();
    for number in 1.. {
        match (left.next(), right.next()) {
            (None, None) => return None,
            (l, r) if l == r => continue,
            (l, r) => {
                let show = |s: Option<&str>| s.map_or("<end of file>".to_owned(), str::to_owned);
                return Some((number, show(l), show(r)));
            }
        }
    }
    None
}

#[test]
fn checked_in_code_matches_the_proto() {
    let out_dir = tempfile::tempdir().expect("creating a temporary directory");
    let fresh = generate(out_dir.path());
    let checked_in_path = crate_root().join(CHECKED_IN);

    if std::env::var_os("CATTAIL_REGEN_PROTO").is_some_and(|v| v == "1") {
        fs::write(&checked_in_path, &fresh)
            .unwrap_or_else(|e| panic!("writing {}: {e}", checked_in_path.display()));
        eprintln!("rewrote {}", checked_in_path.display());
        return;
    }

    let checked_in = fs::read_to_string(&checked_in_path).unwrap_or_default();
    if let Some((line, ours, theirs)) = first_difference(&checked_in, &fresh) {
        panic!(
            "{CHECKED_IN} is out of date with {PROTO} (first difference at line {line}):\n  \
             checked in: {ours}\n  generated:  {theirs}\n\
             Regenerate it with: CATTAIL_REGEN_PROTO=1 cargo test -p cattail-proto --test codegen"
        );
    }
    assert_eq!(
        checked_in, fresh,
        "files differ only in line endings or a final newline"
    );
}

#[test]
fn first_difference_reports_the_line() {
    assert_eq!(first_difference("a\nb\n", "a\nb\n"), None);
    assert_eq!(
        first_difference("a\nb\n", "a\nc\n"),
        Some((2, "b".to_owned(), "c".to_owned()))
    );
    assert_eq!(
        first_difference("a\n", "a\nb\n"),
        Some((2, "<end of file>".to_owned(), "b".to_owned()))
    );
}

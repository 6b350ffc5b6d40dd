//! docs/OPERATIONS.md and the Grafana dashboard against the server's code: every metric the
//! code records and every `CATTAIL_*` variable is documented, and the dashboard queries only
//! metrics that exist. Pure file checks, no server.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `prefix…` token in `text`, of lowercase letters, digits and `_` (or uppercase, for
/// environment variables), after `opening` (like `"` for a string literal).
fn tokens(text: &str, opening: &str, prefix: &str) -> BTreeSet<String> {
    let needle = format!("{opening}{prefix}");
    text.match_indices(&needle)
        .map(|(at, _)| {
            text[at + opening.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

/// The metric names the server records: its `"cattail_…"` string literals.
fn metric_names() -> BTreeSet<String> {
    let mut files = Vec::new();
    rust_files(&repo().join("server/src"), &mut files);
    let names: BTreeSet<String> = files
        .iter()
        .flat_map(|f| tokens(&read(f), "\"", "cattail_"))
        .collect();
    assert!(
        names.len() >= 20,
        "found only {names:?}: has the code moved?"
    );
    names
}

#[test]
fn operations_md_documents_every_metric() {
    let docs = read(&repo().join("docs/OPERATIONS.md"));
    let missing: Vec<_> = metric_names()
        .into_iter()
        .filter(|name| !docs.contains(&format!("`{name}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/OPERATIONS.md does not document {missing:?}"
    );
}

#[test]
fn operations_md_documents_every_environment_variable() {
    let args = read(&repo().join("server/src/args.rs"));
    let variables = tokens(&args, "env = \"", "CATTAIL_");
    assert!(variables.contains("CATTAIL_LISTEN"), "found {variables:?}");
    let docs = read(&repo().join("docs/OPERATIONS.md"));
    let missing: Vec<_> = variables
        .into_iter()
        .filter(|v| !docs.contains(&format!("`{v}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/OPERATIONS.md does not document {missing:?}"
    );
}

#[test]
fn grafana_dashboard_queries_only_real_metrics() {
    let path = repo().join("deploy/grafana/cattail.json");
    let dashboard: serde_json::Value = serde_json::from_str(&read(&path)).unwrap();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    assert!(
        exprs.len() >= 10,
        "the dashboard has {} queries",
        exprs.len()
    );
    let known = metric_names();
    for expr in &exprs {
        for used in tokens(expr, "", "cattail_") {
            let base = ["_sum", "_count"]
                .iter()
                .find_map(|suffix| used.strip_suffix(suffix))
                .filter(|base| known.contains(*base))
                .unwrap_or(&used);
            assert!(known.contains(base), "{expr}: no metric named {used}");
        }
    }
}

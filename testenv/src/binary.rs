//! Building the Go control-plane binary, once, into the cargo target dir.
//!
//! The binary is rebuilt only when the Go sources (`*.go`, `go.mod`, `go.sum`) change:
//! their hash is stamped beside it. A file lock makes concurrent test binaries wait
//! for one build instead of racing. `CATTAIL_TESTENV_BIN` skips all of this.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Where the control-plane binary lives.
#[derive(Clone, Debug)]
pub struct BinaryPaths {
    /// The testenv binary (`testenv up ...`).
    pub binary: PathBuf,
    /// The Go module it is built from.
    pub module_dir: PathBuf,
}

/// The Go module that holds the control plane: this crate's own directory.
fn module_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The cargo target directory: `CARGO_TARGET_DIR`, or the workspace's `target/`.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => module_dir().join("..").join("target"),
    }
}

/// Returns the testenv binary, building it first if it is missing or stale.
///
/// The first build downloads the Kubernetes and etcd Go modules and takes several
/// minutes; later calls only hash the sources.
pub fn ensure_binary() -> Result<BinaryPaths> {
    let module_dir = module_dir();
    if let Some(bin) = std::env::var_os("CATTAIL_TESTENV_BIN").filter(|b| !b.is_empty()) {
        return Ok(BinaryPaths {
            binary: PathBuf::from(bin),
            module_dir,
        });
    }
    let out_dir = target_dir().join("testenv");
    fs::create_dir_all(&out_dir).map_err(|e| Error::io(&out_dir, e))?;
    let binary = out_dir.join("testenv");
    let stamp = out_dir.join("testenv.stamp");

    let lock_path = out_dir.join(".build.lock");
    let lock = File::create(&lock_path).map_err(|e| Error::io(&lock_path, e))?;
    lock.lock().map_err(|e| Error::io(&lock_path, e))?;

    let want = source_hash(&module_dir)?;
    let have = fs::read_to_string(&stamp).unwrap_or_default();
    if binary.exists() && have.trim() == want {
        return Ok(BinaryPaths { binary, module_dir });
    }

    eprintln!(
        "cattail-testenv: building {} (the first build fetches Kubernetes and takes minutes)",
        binary.display()
    );
    let tmp = out_dir.join("testenv.tmp");
    let ldflags = version_ldflags(&module_dir)?;
    let output = Command::new("go")
        .args(["build", "-trimpath", "-ldflags", &ldflags, "-o"])
        .arg(&tmp)
        .arg(".")
        .current_dir(&module_dir)
        .output()
        .map_err(Error::GoMissing)?;
    if !output.status.success() {
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        return Err(Error::GoBuild {
            dir: module_dir,
            output: text,
        });
    }
    fs::rename(&tmp, &binary).map_err(|e| Error::io(&binary, e))?;
    fs::write(&stamp, &want).map_err(|e| Error::io(&stamp, e))?;
    Ok(BinaryPaths { binary, module_dir })
}

/// Linker flags that stamp the Kubernetes version pinned in go.mod into the binary,
/// as Kubernetes' own release build does, so `/version` answers e.g. v1.36.3.
fn version_ldflags(dir: &Path) -> Result<String> {
    let go_mod = dir.join("go.mod");
    let text = fs::read_to_string(&go_mod).map_err(|e| Error::io(&go_mod, e))?;
    let version = kubernetes_version(&text).ok_or_else(|| Error::GoBuild {
        dir: dir.to_owned(),
        output: "go.mod does not require k8s.io/kubernetes vX.Y.Z".into(),
    })?;
    let (major, minor) = version
        .trim_start_matches('v')
        .split_once('.')
        .map(|(major, rest)| (major, rest.split('.').next().unwrap_or_default()))
        .unwrap_or_default();
    let mut flags = vec!["-s".to_owned(), "-w".to_owned()];
    for package in [
        "k8s.io/component-base/version",
        "k8s.io/client-go/pkg/version",
    ] {
        for (var, value) in [
            ("gitVersion", version),
            ("gitMajor", major),
            ("gitMinor", minor),
            ("gitTreeState", "clean"),
            ("gitCommit", "cattail-testenv"),
        ] {
            flags.push(format!("-X {package}.{var}={value}"));
        }
    }
    Ok(flags.join(" "))
}

/// The version of `k8s.io/kubernetes` that a go.mod requires.
fn kubernetes_version(go_mod: &str) -> Option<&str> {
    go_mod.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("k8s.io/kubernetes"), Some(v)) if v.starts_with('v') => Some(v),
            _ => None,
        }
    })
}

/// Hash of the Go sources that make up the binary, in a stable order.
fn source_hash(dir: &Path) -> Result<String> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name == "go.mod" || name == "go.sum" || name.ends_with(".go")
        })
        .collect();
    files.sort();
    let mut hasher = Sha256::new();
    for file in &files {
        let content = fs::read(file).map_err(|e| Error::io(file, e))?;
        hasher.update(
            file.file_name()
                .map(|n| n.as_encoded_bytes())
                .unwrap_or_default(),
        );
        hasher.update((content.len() as u64).to_le_bytes());
        hasher.update(&content);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_version_is_read_from_go_mod() {
        let text = "module x\n\nrequire (\n\tk8s.io/kubernetes v1.36.3\n)\n";
        assert_eq!(kubernetes_version(text), Some("v1.36.3"));
        assert_eq!(kubernetes_version("module x\n"), None);
        let real = fs::read_to_string(module_dir().join("go.mod")).unwrap();
        assert!(kubernetes_version(&real).unwrap().starts_with("v1.36."));
    }

    #[test]
    fn source_hash_changes_with_content_and_ignores_other_files() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("main.go"), "package main").unwrap();
        fs::write(dir.path().join("go.mod"), "module x").unwrap();
        let first = source_hash(dir.path()).unwrap();
        fs::write(dir.path().join("README.md"), "not a source").unwrap();
        assert_eq!(first, source_hash(dir.path()).unwrap());
        fs::write(dir.path().join("main.go"), "package main // changed").unwrap();
        assert_ne!(first, source_hash(dir.path()).unwrap());
    }
}

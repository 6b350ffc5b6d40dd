//! Building the Go programs of the testenv module, once, into the cargo target dir.
//!
//! [`go_binary`] builds one package of the module (the control plane is `.`, the gRPC interop
//! agent `./cmd/grpcagent`) and rebuilds it only when its Go files, `go.mod` or `go.sum` change:
//! their hash is stamped beside the binary. A file lock makes concurrent test binaries wait for
//! one build instead of racing. `CATTAIL_TESTENV_BIN` skips all of this for the control plane.

use std::fs::{self, File};
use std::path::{Component, Path, PathBuf};
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
    let binary = go_binary(".")?;
    Ok(BinaryPaths { binary, module_dir })
}

/// Builds `package` of the testenv Go module (`"."` or a relative path such as
/// `"./cmd/grpcagent"`) into `target/NAME/NAME`, NAME being the package's last path element
/// (`testenv` for `"."`), unless the stamped build there is current, and returns its path.
///
/// Blocks while another process builds the same package. The Kubernetes version pinned in
/// go.mod is stamped into the binary.
pub fn go_binary(package: &str) -> Result<PathBuf> {
    let module_dir = module_dir();
    let name = binary_name(package).ok_or_else(|| Error::GoBuild {
        package: package.to_owned(),
        dir: module_dir.clone(),
        output: "not a package of the testenv module: give \".\" or a relative path like \
                 \"./cmd/grpcagent\""
            .into(),
    })?;
    let out_dir = target_dir().join(name);
    fs::create_dir_all(&out_dir).map_err(|e| Error::io(&out_dir, e))?;
    let binary = out_dir.join(name);
    let stamp = out_dir.join(format!("{name}.stamp"));

    let lock_path = out_dir.join(".build.lock");
    let lock = File::create(&lock_path).map_err(|e| Error::io(&lock_path, e))?;
    lock.lock().map_err(|e| Error::io(&lock_path, e))?;

    let want = source_hash(&module_dir, &module_dir.join(package))?;
    let have = fs::read_to_string(&stamp).unwrap_or_default();
    if binary.exists() && have.trim() == want {
        return Ok(binary);
    }

    eprintln!(
        "cattail-testenv: building {package} into {} (a first build downloads Go modules and \
         takes minutes)",
        binary.display()
    );
    let tmp = out_dir.join(format!("{name}.tmp"));
    let ldflags = version_ldflags(&module_dir)?;
    let output = Command::new("go")
        .args([
            "build",
            "-trimpath",
            "-buildvcs=false",
            "-ldflags",
            &ldflags,
            "-o",
        ])
        .arg(&tmp)
        .arg(package)
        .current_dir(&module_dir)
        .output()
        .map_err(Error::GoMissing)?;
    if !output.status.success() {
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        return Err(Error::GoBuild {
            package: package.to_owned(),
            dir: module_dir,
            output: text,
        });
    }
    fs::rename(&tmp, &binary).map_err(|e| Error::io(&binary, e))?;
    fs::write(&stamp, &want).map_err(|e| Error::io(&stamp, e))?;
    Ok(binary)
}

/// The binary's name for a package path inside the module, or `None` for a path that leaves
/// the module (absolute, or with `..`).
fn binary_name(package: &str) -> Option<&str> {
    let mut name = "testenv";
    for component in Path::new(package).components() {
        match component {
            Component::CurDir => {}
            Component::Normal(part) => name = part.to_str()?,
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(name)
}

/// Linker flags that stamp the Kubernetes version pinned in go.mod into the binary,
/// as Kubernetes' own release build does, so `/version` answers e.g. v1.36.3.
fn version_ldflags(dir: &Path) -> Result<String> {
    let go_mod = dir.join("go.mod");
    let text = fs::read_to_string(&go_mod).map_err(|e| Error::io(&go_mod, e))?;
    let version = kubernetes_version(&text).ok_or_else(|| Error::GoBuild {
        package: ".".into(),
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

/// Hash of what a build of the package in `package_dir` reads that can change here: the
/// package's Go files (not its tests), go.mod and go.sum, in a stable order (by file name).
fn source_hash(module_dir: &Path, package_dir: &Path) -> Result<String> {
    let mut files: Vec<PathBuf> = fs::read_dir(package_dir)
        .map_err(|e| Error::io(package_dir, e))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name.ends_with(".go") && !name.ends_with("_test.go")
        })
        .collect();
    files.extend([module_dir.join("go.mod"), module_dir.join("go.sum")]);
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
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
        let module = dir.path();
        let package = module.join("cmd/agent");
        fs::create_dir_all(&package).unwrap();
        fs::write(package.join("main.go"), "package main").unwrap();
        fs::write(module.join("go.mod"), "module x").unwrap();
        fs::write(module.join("go.sum"), "").unwrap();
        let first = source_hash(module, &package).unwrap();
        fs::write(package.join("README.md"), "not a source").unwrap();
        fs::write(package.join("main_test.go"), "package main").unwrap();
        fs::write(module.join("other.go"), "package other").unwrap();
        assert_eq!(first, source_hash(module, &package).unwrap());
        fs::write(package.join("main.go"), "package main // changed").unwrap();
        let second = source_hash(module, &package).unwrap();
        assert_ne!(first, second);
        fs::write(module.join("go.sum"), "x v1.0.0 h1:abc").unwrap();
        assert_ne!(second, source_hash(module, &package).unwrap());
    }

    #[test]
    fn packages_outside_the_module_are_refused() {
        assert_eq!(binary_name("."), Some("testenv"));
        assert_eq!(binary_name("./cmd/grpcagent"), Some("grpcagent"));
        assert_eq!(binary_name("cmd/grpcagent/"), Some("grpcagent"));
        assert_eq!(binary_name("../server"), None);
        assert_eq!(binary_name("./cmd/../../x"), None);
        assert_eq!(binary_name("/usr/bin"), None);
        assert!(matches!(go_binary("../x"), Err(Error::GoBuild { .. })));
    }
}

//! The cattail server as a child process: its binary, its config, readiness and its metrics.
//!
//! The server runs in its own process so that its CPU and memory can be read from /proc and it
//! can be restarted mid-run. The binary is `cattail` next to this executable (the same cargo
//! target directory), or `$CATTAIL_SERVER_BIN`; in a source checkout, cargo first brings it up
//! to date in the same profile (a no-op when it is fresh). Dropping a [`ServerProcess`] kills it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// The server config the load test uses: the default profile (its `exclude:` rules included),
/// plus pod and policy annotations so the write stamp reaches the agents. JSON is valid YAML.
pub fn loadtest_config() -> serde_json::Value {
    let ann = "metadata.annotations";
    serde_json::json!({"resources": [
        {"resource": "v1/pods", "scope": "spec.nodeName", "fields": [
            "metadata.labels", ann, "spec.nodeName", "spec.serviceAccountName", "spec.hostNetwork",
            "spec.containers[].ports", "status.podIPs", "status.phase"],
         "exclude": [
            {"field": "status.podIPs", "is": "empty"},
            {"field": "spec.hostNetwork", "equals": true},
            {"field": "status.phase", "in": ["Succeeded", "Failed"]}]},
        {"resource": "v1/namespaces", "fields": ["metadata.labels"]},
        {"resource": "v1/nodes", "fields": ["metadata.labels", "status.addresses", "spec.podCIDRs"]},
        {"resource": "v1/services", "fields": ["metadata.labels", "spec.selector", "spec.ports", "spec.clusterIPs", "spec.type"]},
        {"resource": "discovery.k8s.io/v1/endpointslices", "fields": ["metadata.labels", "addressType", "endpoints", "ports"]},
        {"resource": "networking.k8s.io/v1/networkpolicies", "fields": ["metadata.labels", ann, "spec"]},
        {"resource": "v1/serviceaccounts", "fields": ["metadata.labels"]},
    ]})
}

/// Finds the `cattail` binary, building it if needed.
pub fn server_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("CATTAIL_SERVER_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let dir = exe.parent().context("this executable has no directory")?;
    // Integration tests run from target/<profile>/deps.
    let dir = if dir.ends_with("deps") {
        dir.parent().unwrap_or(dir)
    } else {
        dir
    };
    let candidate = dir.join("cattail");
    let release = dir.ends_with("release");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."));
    // From a source checkout, always let cargo decide: it is a no-op when the binary is fresh,
    // and it never runs a server older than the sources. Elsewhere, use what is there.
    if !workspace.join("Cargo.toml").exists() && candidate.exists() {
        return Ok(candidate);
    }
    eprintln!(
        "building the cattail server if needed ({})...",
        if release { "release" } else { "debug" }
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = std::process::Command::new(cargo);
    build
        .current_dir(workspace)
        .args(["build", "-p", "cattail-server", "--bin", "cattail"]);
    // `cargo run` and `cargo test` hand this process the variables cargo sets for a crate.
    // Some build scripts (ring's) track them, so passing them on would rebuild those crates
    // and everything above them, once here and again at the next plain `cargo build`.
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(is_crate_variable) {
            build.env_remove(key);
        }
    }
    if release {
        build.arg("--release");
    }
    let status = build
        .status()
        .context("cannot run cargo to build the cattail server; set CATTAIL_SERVER_BIN")?;
    if !status.success() || !candidate.exists() {
        bail!(
            "building the cattail server failed ({status}); set CATTAIL_SERVER_BIN to a built `cattail`"
        );
    }
    Ok(candidate)
}

/// The variables cargo sets for the crate it builds, runs or tests, not configuration.
fn is_crate_variable(key: &str) -> bool {
    const PREFIXES: [&str; 3] = ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_BIN_EXE_"];
    const NAMES: [&str; 5] = [
        "CARGO_CRATE_NAME",
        "CARGO_BIN_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "OUT_DIR",
    ];
    PREFIXES.iter().any(|prefix| key.starts_with(prefix)) || NAMES.contains(&key)
}

/// A free port on 127.0.0.1 (bound, then released).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The HTTP/2 implementation `cattail serve` runs on its gRPC port (`--grpc-transport`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum GrpcTransport {
    /// cattail's own HTTP/2 framing (the server's default).
    #[default]
    Native,
    /// tonic on hyper and h2.
    Tonic,
}

impl std::fmt::Display for GrpcTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Native => "native",
            Self::Tonic => "tonic",
        })
    }
}

/// A running `cattail serve`.
pub struct ServerProcess {
    child: Child,
    /// The gRPC address.
    pub grpc: SocketAddr,
    /// The admin address (`/readyz`, `/metrics`).
    pub admin: SocketAddr,
    /// Its log file.
    pub log: PathBuf,
    /// Whether it serves TLS (agents then use `https://`).
    pub tls: bool,
}

impl ServerProcess {
    /// Starts the server and waits (up to `ready_within`) for `/readyz`.
    pub async fn start(
        binary: &Path,
        kubeconfig: &Path,
        dir: &Path,
        (grpc, admin): (SocketAddr, SocketAddr),
        transport: GrpcTransport,
        tls: Option<&crate::pki::Pki>,
        ready_within: Duration,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let config = dir.join("cattail-config.yaml");
        std::fs::write(&config, serde_json::to_vec_pretty(&loadtest_config())?)?;
        let log = dir.join("cattail.log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let mut command = Command::new(binary);
        command.arg("serve");
        match tls {
            Some(pki) => command
                .arg("--tls-cert-file")
                .arg(&pki.cert_file)
                .arg("--tls-key-file")
                .arg(&pki.key_file),
            // Plain h2c, as the runs before `--tls` measured.
            None => command.arg("--insecure-plaintext"),
        };
        let child = command
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--listen")
            .arg(grpc.to_string())
            .arg("--admin-listen")
            .arg(admin.to_string())
            .arg("--config")
            .arg(&config)
            .arg("--shutdown-grace")
            .arg("5s")
            .arg("--grpc-transport")
            .arg(transport.to_string())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let mut server = Self {
            child,
            grpc,
            admin,
            log,
            tls: tls.is_some(),
        };
        let deadline = tokio::time::Instant::now() + ready_within;
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "the cattail server exited ({status}) before it was ready; see {}",
                    server.log.display()
                );
            }
            if matches!(http_get(admin, "/readyz").await, Ok((200, _))) {
                return Ok(server);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "the cattail server was not ready within {ready_within:?}; see {}",
                    server.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The gRPC endpoint for agents.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.grpc)
    }

    /// Whether it still runs; an error says how it ended.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => bail!(
                "the cattail server died ({status}); see {}",
                self.log.display()
            ),
        }
    }

    /// The server's metrics, each summed over its labels.
    pub async fn metrics(&self) -> anyhow::Result<HashMap<String, f64>> {
        let (status, body) = http_get(self.admin, "/metrics").await?;
        anyhow::ensure!(status == 200, "/metrics answered {status}");
        Ok(parse_metrics(&body))
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub async fn stop(mut self, grace: Duration) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// Sums Prometheus text-format samples by metric name (labels dropped).
pub fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let mut parts = line.rsplitn(2, ' ');
        let (Some(value), Some(series)) = (parts.next(), parts.next()) else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series).trim();
        if let Ok(value) = value.parse::<f64>() {
            *out.entry(name.to_owned()).or_default() += value;
        }
    }
    out
}

/// A minimal HTTP/1.0 GET on loopback, bounded to 5 s: status code and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut response = Vec::new();
        stream.take(64 << 20).read_to_end(&mut response).await?;
        let text = String::from_utf8_lossy(&response).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok::<_, anyhow::Error>((status, body))
    };
    tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .map_err(|_| anyhow::anyhow!("GET {path} on {addr} timed out"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The load test measures the default profile: its config is the built-in default with only
    /// the stamp annotation added to pods and policies.
    #[test]
    fn the_config_is_the_default_profile_plus_the_stamp_annotation() {
        use cattail_server::config::{FieldPath, ServerConfig};
        let yaml = serde_json::to_string(&loadtest_config()).unwrap();
        let mut ours = ServerConfig::from_yaml_str(&yaml).unwrap();
        let annotations = FieldPath::parse("metadata.annotations").unwrap();
        for resource in &mut ours.resources {
            let before = resource.fields.len();
            resource.fields.retain(|f| *f != annotations);
            let stamped = ["v1/pods", "networking.k8s.io/v1/networkpolicies"];
            assert_eq!(
                before - resource.fields.len(),
                usize::from(stamped.contains(&resource.resource.as_str())),
                "{}",
                resource.resource
            );
        }
        assert_eq!(ours.resources, ServerConfig::default().resources);
    }

    #[test]
    fn metrics_are_summed_over_labels() {
        let text = "# HELP x\ncattail_sent_bytes_total{resource=\"a\"} 10\ncattail_sent_bytes_total{resource=\"b\"} 5\ncattail_head_revision 7\n";
        let m = parse_metrics(text);
        assert_eq!(m["cattail_sent_bytes_total"], 15.0);
        assert_eq!(m["cattail_head_revision"], 7.0);
    }

    #[test]
    fn only_the_crate_variables_are_dropped_from_the_nested_build() {
        for key in [
            "CARGO_PKG_NAME",
            "CARGO_PKG_VERSION_PRE",
            "CARGO_MANIFEST_DIR",
            "CARGO_MANIFEST_LINKS",
            "CARGO_CRATE_NAME",
            "CARGO_BIN_EXE_cattail",
            "OUT_DIR",
        ] {
            assert!(is_crate_variable(key), "{key} should be dropped");
        }
        // Configuration the user set for cargo itself passes through.
        for key in [
            "CARGO",
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_JOBS",
            "CARGO_PROFILE_RELEASE_DEBUG",
            "PATH",
        ] {
            assert!(!is_crate_variable(key), "{key} should be kept");
        }
    }
}

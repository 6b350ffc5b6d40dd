//! [`TestEnv`]: a fresh control plane in a temporary directory, for one test.
//!
//! It owns the process and the directory: dropping it stops the control plane
//! (SIGTERM, then SIGKILL) and removes the directory. Each `TestEnv` is independent,
//! so tests may run in parallel, each with its own API server.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde::Deserialize;

use crate::{CompactOutcome, ControlPlane, Error, Result, control, ensure_binary};

/// How to start a control plane. `Default` gives free ports and kube-apiserver's own
/// defaults, with etcd fsync off.
#[derive(Clone, Debug)]
#[must_use]
pub struct Options {
    /// kube-apiserver's port on 127.0.0.1; 0 picks a free one.
    pub apiserver_port: u16,
    /// etcd's client port on 127.0.0.1; 0 picks a free one.
    pub etcd_port: u16,
    /// The control endpoint's port on 127.0.0.1; 0 picks a free one.
    pub control_port: u16,
    /// kube-apiserver's `--etcd-compaction-interval`; `None` keeps its default (5m).
    pub compaction_interval: Option<Duration>,
    /// kube-controller-manager's controllers; `None` keeps testenv's default
    /// (`namespace,garbagecollector`), an empty string runs none.
    pub controllers: Option<String>,
    /// Make etcd fsync its writes.
    pub fsync: bool,
    /// How long to wait for `/readyz`.
    pub ready_timeout: Duration,
    /// Log verbosity of the Kubernetes components.
    pub verbosity: u8,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            apiserver_port: 0,
            etcd_port: 0,
            control_port: 0,
            compaction_interval: None,
            controllers: None,
            fsync: false,
            ready_timeout: Duration::from_secs(180),
            verbosity: 0,
        }
    }
}

impl Options {
    /// Sets kube-apiserver's etcd compaction interval.
    pub fn compaction_interval(mut self, every: Duration) -> Self {
        self.compaction_interval = Some(every);
        self
    }

    /// Sets the controllers kube-controller-manager runs.
    pub fn controllers(mut self, controllers: impl Into<String>) -> Self {
        self.controllers = Some(controllers.into());
        self
    }

    /// The flags of `testenv up` for these options.
    pub(crate) fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            format!("--apiserver-port={}", self.apiserver_port),
            format!("--etcd-port={}", self.etcd_port),
            format!("--control-port={}", self.control_port),
            format!("--fsync={}", self.fsync),
            format!("--ready-timeout={}s", self.ready_timeout.as_secs()),
            format!("--v={}", self.verbosity),
        ];
        if let Some(every) = self.compaction_interval {
            args.push(format!("--compaction-interval={}ms", every.as_millis()));
        }
        if let Some(controllers) = &self.controllers {
            args.push(format!("--controllers={controllers}"));
        }
        args
    }
}

/// The JSON line the control plane prints when it is ready (also in `DIR/testenv.json`).
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize)]
pub struct ReadyInfo {
    /// The admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// kube-apiserver's URL.
    pub server: String,
    /// The control plane's process id.
    pub pid: u32,
    /// The data directory.
    pub dir: PathBuf,
    /// etcd's client URL.
    pub etcd: String,
    /// The control endpoint's URL (`POST /compact`).
    pub control: String,
    /// The log of etcd and kube-apiserver.
    pub log: PathBuf,
}

/// A running control plane with an admin client.
pub struct TestEnv {
    // Declared before `dir`, so the process stops before its directory is removed.
    plane: ControlPlane,
    config: kube::Config,
    client: kube::Client,
    dir: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for TestEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestEnv")
            .field("info", self.plane.info())
            .finish_non_exhaustive()
    }
}

/// How many times [`TestEnv::start_with`] tries when it loses a race for a free port.
const START_ATTEMPTS: u32 = 3;

/// Whether the control plane failed to start because a port it was given was taken meanwhile.
fn lost_port_race(error: &Error) -> bool {
    matches!(
        error,
        Error::Exited { when, tail, .. }
            if *when == "before it was ready" && tail.contains("address already in use")
    )
}

impl TestEnv {
    /// Builds the binary if needed and starts a fresh control plane in a temp dir.
    pub async fn start() -> Result<Self> {
        Self::start_with(Options::default()).await
    }

    /// Like [`TestEnv::start`], with options.
    ///
    /// Free ports are picked by binding port 0 and closing it, so another process (or an
    /// outgoing connection's ephemeral port) can take one before the control plane binds it.
    /// When every port is left to the control plane, such a start is tried again with new ports
    /// (three tries in all); a start on a port that was asked for is never retried.
    pub async fn start_with(options: Options) -> Result<Self> {
        let auto_ports =
            options.apiserver_port == 0 && options.etcd_port == 0 && options.control_port == 0;
        let mut attempt = 1;
        loop {
            match Self::start_once(options.clone()).await {
                Err(error) if auto_ports && attempt < START_ATTEMPTS && lost_port_race(&error) => {
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn start_once(options: Options) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("cattail-testenv-")
            .tempdir()
            .map_err(|e| Error::io(std::env::temp_dir(), e))?;
        let path = dir.path().to_owned();
        let plane = tokio::task::spawn_blocking(move || {
            let paths = ensure_binary()?;
            ControlPlane::spawn(&paths.binary, &path, &options)
        })
        .await
        .map_err(|e| Error::io("spawn_blocking", std::io::Error::other(e)))??;
        let config = load_config(&plane.info().kubeconfig).await?;
        let client = kube::Client::try_from(config.clone())?;
        Ok(TestEnv {
            plane,
            config,
            client,
            dir: Some(dir),
        })
    }

    /// An admin client (group `system:masters`).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The admin client's configuration.
    pub fn config(&self) -> &kube::Config {
        &self.config
    }

    /// The admin kubeconfig file.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.plane.info().kubeconfig
    }

    /// What the control plane reported when it became ready.
    pub fn info(&self) -> &ReadyInfo {
        self.plane.info()
    }

    /// The control plane's process id.
    pub fn pid(&self) -> u32 {
        self.plane.pid()
    }

    /// The data directory (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .map_or(&self.plane.info().dir, |d| d.path())
    }

    /// A client that authenticates as the ServiceAccount `namespace/name`, with a
    /// fresh token from the TokenRequest API. The ServiceAccount must exist.
    pub async fn service_account_client(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<kube::Client> {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client(), namespace);
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(vec![]),
                expiration_seconds: Some(3600),
                ..Default::default()
            }),
            ..Default::default()
        };
        let issued = accounts
            .create_token_request(name, &PostParams::default(), &request)
            .await?;
        let token = issued.status.and_then(|s| s.token).unwrap_or_default();
        if token.is_empty() {
            return Err(Error::Kubeconfig {
                path: self.kubeconfig_path().to_owned(),
                message: format!("the TokenRequest for {namespace}/{name} returned no token"),
            });
        }
        let mut config = self.config.clone();
        config.auth_info = kube::config::AuthInfo {
            token: Some(token.into()),
            ..Default::default()
        };
        Ok(kube::Client::try_from(config)?)
    }

    /// Forces an etcd compaction that clients observe: see [`CompactOutcome`].
    ///
    /// Afterwards every watch cache has relisted, and a watch that resumes from a
    /// resourceVersion older than the compaction gets 410 Gone. Returns once the
    /// API server is ready again.
    pub async fn compact(&self) -> Result<CompactOutcome> {
        let url = self.plane.info().control.clone();
        let outcome = tokio::task::spawn_blocking(move || control::compact(&url))
            .await
            .map_err(|e| Error::io("spawn_blocking", std::io::Error::other(e)))??;
        self.wait_ready(Duration::from_secs(60)).await?;
        Ok(outcome)
    }

    /// Waits until `/readyz` answers ok.
    pub async fn wait_ready(&self, within: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let request = http_get("/readyz");
            match self.client.request_text(request).await {
                Ok(body) if body.trim() == "ok" => return Ok(()),
                Ok(_) | Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(body) => {
                    return Err(Error::Control {
                        url: "/readyz".into(),
                        message: body,
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Returns an error, with the end of its log, if the control plane has exited.
    pub fn check_running(&mut self) -> Result<()> {
        match self.plane.exit_error("while running") {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// Stops the control plane and removes its directory.
    pub fn stop(mut self) {
        self.plane.stop(Duration::from_secs(30));
    }
}

fn http_get(path: &'static str) -> http::Request<Vec<u8>> {
    let mut request = http::Request::new(Vec::new());
    *request.uri_mut() = http::Uri::from_maybe_shared(path).unwrap_or_default();
    request
}

/// The admin kubeconfig the control plane wrote, as a client configuration.
// Not `cattail_server::args::kube_config`: testenv sits below the server and must not depend on it.
async fn load_config(path: &Path) -> Result<kube::Config> {
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| Error::Kubeconfig {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Kubeconfig {
            path: path.to_owned(),
            message: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::{Error, lost_port_race};

    fn exited(when: &'static str, tail: &str) -> Error {
        Error::Exited {
            status: "exit status: 1".into(),
            when,
            log: PathBuf::from("testenv.log"),
            tail: tail.into(),
        }
    }

    // A built error value: losing a port race cannot be made to happen on demand.
    #[test]
    fn only_a_port_taken_before_ready_is_a_lost_race() {
        let taken = "listen tcp 127.0.0.1:35473: bind: address already in use";
        assert!(lost_port_race(&exited("before it was ready", taken)));
        assert!(!lost_port_race(&exited("while running", taken)));
        assert!(!lost_port_race(&exited(
            "before it was ready",
            "etcd: no space left"
        )));
    }
}

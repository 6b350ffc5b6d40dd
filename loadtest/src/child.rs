//! `AgentsProcess`: an `agents` child process of this same executable, driven over its stdin.
//!
//! A reader task turns its stdout into progress (a watch channel) and answers (a channel). Every
//! request is bounded by a timeout, and a dead child is reported as an error, never waited on.
//! Dropping the handle kills the child; closing its stdin also makes it stop on its own.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, watch};

use crate::agents::{AgentsConfig, AgentsLine, Progress, Window, probe::CheckResult};

/// A running agents process.
pub struct AgentsProcess {
    child: Child,
    stdin: ChildStdin,
    progress: watch::Receiver<Progress>,
    answers: mpsc::Receiver<AgentsLine>,
}

impl AgentsProcess {
    /// Starts `cattail-loadtest agents` with `config`.
    pub fn spawn(config: &AgentsConfig) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find this executable")?;
        let exe = loadtest_binary(&exe);
        let mut command = Command::new(&exe);
        command
            .arg("agents")
            .arg("--endpoint")
            .arg(config.endpoints.join(","))
            .arg(format!("--count={}", config.count))
            .arg(format!("--first-index={}", config.first_index))
            .arg(format!("--nodes={}", config.nodes))
            .arg(format!("--probes={}", config.probes))
            .arg(format!(
                "--max-duration={}s",
                config.max_duration.as_secs().max(1)
            ));
        if let Some(k) = &config.kubeconfig {
            command.arg("--kubeconfig").arg(k);
        }
        if let Some(dir) = &config.trace_dir {
            command.arg("--trace-dir").arg(dir);
        }
        if let Some(ca) = &config.ca_file {
            command.arg("--ca-file").arg(ca);
        }
        let mut child = command
            .env_remove("CATTAIL_ENDPOINTS")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {} agents", exe.display()))?;
        let stdin = child.stdin.take().context("no stdin")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (progress_tx, progress) = watch::channel(Progress::default());
        let (answer_tx, answers) = mpsc::channel(16);
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<AgentsLine>(&line) {
                    Ok(AgentsLine::Progress(p)) => {
                        let _ = progress_tx.send(p);
                    }
                    Ok(other) => {
                        let _ = answer_tx.send(other).await;
                    }
                    Err(_) => eprintln!("agents: {line}"),
                }
            }
        });
        Ok(Self {
            child,
            stdin,
            progress,
            answers,
        })
    }

    /// The latest progress line.
    pub fn progress(&self) -> Progress {
        self.progress.borrow().clone()
    }

    /// Waits until `synced` agents are synced, up to `within`; returns how long it took.
    pub async fn wait_synced(&mut self, synced: u32, within: Duration) -> anyhow::Result<Duration> {
        let start = tokio::time::Instant::now();
        loop {
            self.check_running()?;
            if self.progress().synced >= synced {
                return Ok(start.elapsed());
            }
            if start.elapsed() >= within {
                bail!(
                    "only {} of {synced} agents synced within {within:?}",
                    self.progress().synced
                );
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), self.progress.changed()).await;
        }
    }

    async fn command(&mut self, line: &str) -> anyhow::Result<AgentsLine> {
        self.check_running()?;
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .context("the agents process is gone")?;
        self.stdin.flush().await?;
        match tokio::time::timeout(Duration::from_secs(60), self.answers.recv()).await {
            Ok(Some(answer)) => Ok(answer),
            Ok(None) => bail!("the agents process exited before answering {line:?}"),
            Err(_) => bail!("the agents process did not answer {line:?} within 60 s"),
        }
    }

    /// Ends the current window and returns its measurements.
    pub async fn report(&mut self, label: &str) -> anyhow::Result<Window> {
        match self.command(&format!("report {label}")).await? {
            AgentsLine::Report(window) => Ok(window),
            other => bail!("unexpected answer {other:?}"),
        }
    }

    /// Runs the probes' correctness check.
    pub async fn check(&mut self) -> anyhow::Result<CheckResult> {
        match self.command("check").await? {
            AgentsLine::Check(result) => Ok(result),
            other => bail!("unexpected answer {other:?}"),
        }
    }

    fn check_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => bail!("the agents process exited ({status})"),
        }
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Asks it to stop, then kills it after 10 s.
    pub async fn stop(mut self) {
        let _ = self.stdin.write_all(b"stop\n").await;
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// The `cattail-loadtest` binary: this executable, or the one beside it when this is a test.
pub fn loadtest_binary(exe: &std::path::Path) -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("CATTAIL_LOADTEST_BIN") {
        return path.into();
    }
    exe.to_path_buf()
}

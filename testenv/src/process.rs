//! The control-plane process: start it, wait for its ready line, stop it.
//!
//! The child runs in its own process group, so a terminal's Ctrl-C reaches only the
//! launcher, which then stops the child once with SIGTERM (a second signal would make
//! kube-apiserver exit without draining). If the launcher dies, the child notices that
//! its parent changed and stops itself. Dropping a [`ControlPlane`] stops it.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::env::{Options, ReadyInfo};
use crate::{Error, Result};

/// A running control plane (etcd, kube-apiserver and kube-controller-manager).
#[derive(Debug)]
pub struct ControlPlane {
    child: Child,
    info: ReadyInfo,
    log: PathBuf,
    stopped: bool,
}

impl ControlPlane {
    /// Starts `binary up` with `options` in `dir` and blocks until it is ready
    /// (`/readyz` ok) or has failed.
    pub fn spawn(binary: &Path, dir: &Path, options: &Options) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let log = dir.join("testenv.log");
        let log_file = File::create(&log).map_err(|e| Error::io(&log, e))?;
        let mut child = Command::new(binary)
            .arg("up")
            .arg("--dir")
            .arg(dir)
            .args(options.to_args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .process_group(0)
            .spawn()
            .map_err(|source| Error::Spawn {
                binary: binary.to_owned(),
                source,
            })?;

        let (tx, rx) = mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }

        let deadline = Instant::now() + options.ready_timeout;
        let mut plane = ControlPlane {
            child,
            info: ReadyInfo::default(),
            log,
            stopped: false,
        };
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.trim_start().starts_with('{') => {
                    plane.info = serde_json::from_str(&line)
                        .map_err(|source| Error::ReadyLine { line, source })?;
                    return Ok(plane);
                }
                Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            if let Some(err) = plane.exit_error("before it was ready") {
                return Err(err);
            }
            if Instant::now() > deadline {
                plane.stop(Duration::from_secs(10));
                return Err(Error::NotReady(options.ready_timeout, plane.log.clone()));
            }
        }
    }

    /// What the control plane printed when it became ready.
    pub fn info(&self) -> &ReadyInfo {
        &self.info
    }

    /// The process id of the control plane (etcd and kube-apiserver).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The control plane's log file (etcd and kube-apiserver's stderr).
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Returns an error if the process has exited, with the end of its log.
    pub fn exit_error(&mut self, when: &'static str) -> Option<Error> {
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.stopped = true;
                Some(Error::Exited {
                    status: status.to_string(),
                    when,
                    log: self.log.clone(),
                    tail: tail(&self.log, 30),
                })
            }
            _ => None,
        }
    }

    /// Stops the control plane: SIGTERM, then SIGKILL after `grace`. Idempotent.
    pub fn stop(&mut self, grace: Duration) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let Ok(raw) = i32::try_from(self.child.id()) else {
            return;
        };
        let pid = Pid::from_raw(raw);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        tracing::warn!(pid = raw, "control plane did not stop in time; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(30));
    }
}

/// The last `lines` lines of a log file, read from its last 64 KiB.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::from("(no log)");
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut text = String::new();
    let mut buf = Vec::new();
    if file.read_to_end(&mut buf).is_ok() {
        text = String::from_utf8_lossy(&buf).into_owned();
    }
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

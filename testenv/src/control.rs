//! The testenv control endpoint: forcing an etcd compaction that clients can see.
//!
//! See `testenv/compact.go` for what `POST /compact` does and why: it compacts etcd to
//! the head and then cuts kube-apiserver's etcd connections, so that the watch cache
//! relists and clients resuming from an older resourceVersion get 410 Gone.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde::Deserialize;

use crate::{Error, Result};

/// What a forced compaction did.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompactOutcome {
    /// The etcd revision everything before which was compacted away.
    pub revision: i64,
    /// How many kube-apiserver connections to etcd were cut.
    pub cut_connections: u64,
}

/// Forces a compaction through the control endpoint `control` (`http://127.0.0.1:PORT`,
/// the `control` field of [`crate::ReadyInfo`]). Blocking.
pub fn compact(control: &str) -> Result<CompactOutcome> {
    let err = |message: String| Error::Control {
        url: control.to_owned(),
        message,
    };
    let host = control
        .strip_prefix("http://")
        .ok_or_else(|| err("expected an http:// URL".into()))?
        .trim_end_matches('/');
    let mut stream = TcpStream::connect(host).map_err(|e| err(e.to_string()))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| err(e.to_string()))?;
    write!(
        stream,
        "POST /compact HTTP/1.0\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n"
    )
    .map_err(|e| err(e.to_string()))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| err(e.to_string()))?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        return Err(err(format!("{status}: {}", body.trim())));
    }
    serde_json::from_str(body.trim()).map_err(|e| err(format!("bad answer {body:?}: {e}")))
}

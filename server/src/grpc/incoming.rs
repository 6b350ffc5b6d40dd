//! [`TlsIncoming`]: the tonic transport's stream of TLS connections.
//!
//! A task accepts sockets and never waits on a handshake: each admitted socket gets its own
//! task that runs the handshake (bounded by `tls.max_handshakes` and `tls.handshake_timeout`)
//! and hands the finished connection to hyper. Each connection carries a [`TlsConnectInfo`]
//! into its requests' extensions, so the Watch call learns the verified client certificate.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;
use tracing::Instrument;

use crate::fanout::PeerCertificate;
use crate::tls::ServerTls;

/// Finished handshakes waiting for hyper to take them.
const READY_CONNECTIONS: usize = 64;
/// After a failed accept (out of file descriptors, say), wait this long before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What a TLS connection tells each of its requests.
#[derive(Debug, Clone)]
pub(crate) struct TlsConnectInfo {
    /// The client's address.
    pub(crate) remote_addr: SocketAddr,
    /// The verified client certificate's names, if the client sent one.
    pub(crate) certificate: Option<Arc<PeerCertificate>>,
}

/// A connection after its TLS handshake.
#[derive(Debug)]
pub(crate) struct TlsConnection {
    stream: TlsStream<TcpStream>,
    info: TlsConnectInfo,
}

/// The stream of TLS connections tonic serves. Dropping it stops accepting.
#[derive(Debug)]
pub(crate) struct TlsIncoming {
    ready: mpsc::Receiver<TlsConnection>,
    accepting: JoinHandle<()>,
}

impl TlsIncoming {
    /// Starts accepting on `listener` until `shutdown`.
    pub(crate) fn new(
        listener: TcpListener,
        tls: ServerTls,
        nodelay: bool,
        shutdown: CancellationToken,
    ) -> Self {
        let (sender, ready) = mpsc::channel(READY_CONNECTIONS);
        let accepting = tokio::spawn(
            accept(listener, tls, nodelay, sender, shutdown)
                .instrument(tracing::info_span!("tls_accept")),
        );
        Self { ready, accepting }
    }
}

impl Drop for TlsIncoming {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl Stream for TlsIncoming {
    type Item = std::io::Result<TlsConnection>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.ready.poll_recv(cx).map(|next| next.map(Ok))
    }
}

/// The accept loop: admission is immediate, handshakes run in their own tasks.
async fn accept(
    listener: TcpListener,
    tls: ServerTls,
    nodelay: bool,
    ready: mpsc::Sender<TlsConnection>,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (socket, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accepting a connection failed; retrying shortly");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        if let Err(error) = socket.set_nodelay(nodelay) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let Some(handshake) = tls.admit(peer) else {
            continue;
        };
        let ready = ready.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(
            async move {
                let accepted = tokio::select! {
                    accepted = handshake.accept(socket) => accepted,
                    () = shutdown.cancelled() => return,
                };
                if let Some(accepted) = accepted {
                    let info = TlsConnectInfo {
                        remote_addr: peer,
                        certificate: accepted.certificate,
                    };
                    let connection = TlsConnection {
                        stream: accepted.stream,
                        info,
                    };
                    let _ = ready.send(connection).await;
                }
            }
            .instrument(tracing::debug_span!("tls_handshake", %peer)),
        );
    }
}

impl Connected for TlsConnection {
    type ConnectInfo = TlsConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

//! An in-memory network for the connection tests: tonic client and server over `DuplexStream`s.
//!
//! Real sockets and paused time do not mix: the paused clock jumps to the next timer whenever
//! the runtime waits on the operating system, even for bytes already on their way. In memory,
//! every wake-up is a task wake-up, so a paused-time test runs the same way every time.

use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::io::DuplexStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::codegen::Service;
use tonic::transport::Uri;

/// Listening in-memory servers, by endpoint.
static LISTENERS: Mutex<Vec<(String, mpsc::UnboundedSender<DuplexStream>)>> =
    Mutex::new(Vec::new());
static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

/// The bytes a duplex pipe buffers in each direction.
const PIPE_BYTES: usize = 256 * 1024;

/// A new in-memory endpoint and the stream of connections made to it.
pub(crate) fn listen() -> (String, UnboundedReceiverStream<io::Result<DuplexStream>>) {
    let endpoint = format!(
        "http://memory-{}.test:1",
        NEXT_ID.fetch_add(1, Ordering::Relaxed)
    );
    let (sender, receiver) = mpsc::unbounded_channel();
    let (ok_sender, incoming) = mpsc::unbounded_channel();
    LISTENERS.lock().unwrap().push((endpoint.clone(), sender));
    tokio::spawn(forward(receiver, ok_sender));
    (endpoint, UnboundedReceiverStream::new(incoming))
}

async fn forward(
    mut receiver: mpsc::UnboundedReceiver<DuplexStream>,
    incoming: mpsc::UnboundedSender<io::Result<DuplexStream>>,
) {
    while let Some(stream) = receiver.recv().await {
        if incoming.send(Ok(stream)).is_err() {
            return;
        }
    }
}

/// The connector for an in-memory endpoint, or `None` for a real one.
pub(crate) fn connector(endpoint: &str) -> Option<MemoryConnector> {
    let listeners = LISTENERS.lock().unwrap();
    let (_, sender) = listeners.iter().find(|(name, _)| name == endpoint)?;
    Some(MemoryConnector {
        listener: sender.clone(),
    })
}

/// Connects by handing one end of a new duplex pipe to the listening server.
#[derive(Clone)]
pub(crate) struct MemoryConnector {
    listener: mpsc::UnboundedSender<DuplexStream>,
}

impl Service<Uri> for MemoryConnector {
    type Response = TokioIo<DuplexStream>;
    type Error = io::Error;
    type Future = std::future::Ready<io::Result<Self::Response>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let (client, server) = tokio::io::duplex(PIPE_BYTES);
        std::future::ready(match self.listener.send(server) {
            Ok(()) => Ok(TokioIo::new(client)),
            Err(_) => Err(io::Error::from(io::ErrorKind::ConnectionRefused)),
        })
    }
}

//! Client connections: one acceptor hands each to the worker thread with the fewest open.
//!
//! Workers used to accept from the shared listening socket themselves. Whichever woke
//! first took a burst of new connections, so a few long-lived keep-alive connections (a
//! load generator's, a CI fleet's behind one proxy) could all land on one worker and
//! leave the other cores idle: under `benches/load.sh`, one worker at 93% CPU and the
//! other at 0% in some rounds. Handing off costs one cross-thread wakeup per connection,
//! never per request; a request is still handled start to finish on one thread.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use crate::client_conn;
use crate::metrics::Limit;
use crate::proxy::{OriginClient, Shared};

/// A worker's side of the hand-off, kept by the acceptor.
#[derive(Debug)]
pub(crate) struct WorkerHandle {
    connections: mpsc::UnboundedSender<Handoff>,
    open: Arc<AtomicUsize>,
}

/// One accepted connection on its way to a worker.
struct Handoff {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    /// The connection's place under `--max-connections`, held while it lives.
    slot: OwnedSemaphorePermit,
    /// Counts the connection against its worker for as long as it lives.
    open: OpenConnection,
}

/// One of a worker's open connections; dropped when the connection ends, however it ends.
struct OpenConnection(Arc<AtomicUsize>);

impl OpenConnection {
    fn new(open: &Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        OpenConnection(Arc::clone(open))
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One worker thread: its own single-threaded runtime and origin connection pool, serving
/// the connections the acceptor hands it.
pub(crate) struct Worker {
    connections: mpsc::UnboundedReceiver<Handoff>,
    shared: Arc<Shared>,
    origin: OriginClient,
    header_timeout: Duration,
    shutdown_grace: Duration,
    stop: watch::Receiver<bool>,
}

impl Worker {
    /// A worker and the handle the acceptor reaches it by.
    pub(crate) fn new(
        shared: Arc<Shared>,
        origin: OriginClient,
        header_timeout: Duration,
        shutdown_grace: Duration,
        stop: watch::Receiver<bool>,
    ) -> (Worker, WorkerHandle) {
        let (sender, connections) = mpsc::unbounded_channel();
        let worker = Worker {
            connections,
            shared,
            origin,
            header_timeout,
            shutdown_grace,
            stop,
        };
        let handle = WorkerHandle {
            connections: sender,
            open: Arc::new(AtomicUsize::new(0)),
        };
        (worker, handle)
    }

    /// Starts the worker's thread, which serves until told to stop, then lets requests
    /// in flight finish for the grace period. The runtime is built here, before the
    /// thread, so that a started worker already holds everything it keeps open.
    pub(crate) fn spawn(
        self,
        index: usize,
    ) -> Result<std::thread::JoinHandle<Result<(), String>>, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("worker runtime: {e}"))?;
        std::thread::Builder::new()
            .name(format!("tollgate-worker-{index}"))
            .spawn(move || {
                runtime.block_on(self.serve());
                Ok(())
            })
            .map_err(|e| format!("worker thread: {e}"))
    }

    async fn serve(mut self) {
        let graceful = GracefulShutdown::new();
        loop {
            tokio::select! {
                handed = self.connections.recv() => {
                    let Some(handoff) = handed else { break };
                    let stream = match TcpStream::from_std(handoff.stream) {
                        Ok(stream) => stream,
                        Err(e) => {
                            eprintln!("tollgate: connection from {}: {e}", handoff.peer);
                            continue;
                        }
                    };
                    let (shared, origin) = (Arc::clone(&self.shared), self.origin.clone());
                    let (watcher, header_timeout) = (graceful.watcher(), self.header_timeout);
                    let (peer, slot, open) = (handoff.peer, handoff.slot, handoff.open);
                    tokio::spawn(async move {
                        shared.metrics.connections(1);
                        let conn_shared = Arc::clone(&shared);
                        client_conn::serve(conn_shared, origin, stream, peer, header_timeout, watcher)
                            .await;
                        shared.metrics.connections(-1);
                        // The slot and the count end with the connection.
                        drop((slot, open));
                    });
                }
                _ = self.stop.changed() => break,
            }
        }
        if tokio::time::timeout(self.shutdown_grace, graceful.shutdown())
            .await
            .is_err()
        {
            eprintln!("tollgate: requests still in flight after the grace period; closing");
        }
    }
}

/// Accepts client connections until told to stop, handing each to the worker with the
/// fewest open; a connection over `slots` gets a 503 instead.
pub(crate) async fn accept(
    listener: TcpListener,
    workers: Vec<WorkerHandle>,
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        eprintln!("tollgate: accept: {e}");
                        continue;
                    }
                };
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    shared.metrics.shed(Limit::Connections);
                    tokio::spawn(refuse_connection(stream));
                    continue;
                };
                // Small responses (denials, git negotiation) go out at once.
                let _ = stream.set_nodelay(true);
                match stream.into_std() {
                    Ok(stream) => hand_off(&workers, stream, peer, slot),
                    Err(e) => eprintln!("tollgate: connection from {peer}: {e}"),
                }
            }
            _ = stop.changed() => break,
        }
    }
}

/// Gives the connection to the least busy worker still running; with none, it is closed.
fn hand_off(
    workers: &[WorkerHandle],
    mut stream: std::net::TcpStream,
    peer: SocketAddr,
    mut slot: OwnedSemaphorePermit,
) {
    // A worker that stops between the pick and the send gives the connection back, and is
    // passed over from then on.
    while let Some(worker) = workers
        .iter()
        .filter(|w| !w.connections.is_closed())
        .min_by_key(|w| w.open.load(Ordering::Relaxed))
    {
        let handoff = Handoff {
            stream,
            peer,
            slot,
            open: OpenConnection::new(&worker.open),
        };
        match worker.connections.send(handoff) {
            Ok(()) => return,
            Err(returned) => (stream, slot) = (returned.0.stream, returned.0.slot),
        }
    }
}

/// Answers a connection over the limit with a 503 and closes it, giving the client at
/// most a second to take it.
async fn refuse_connection(mut stream: TcpStream) {
    use tokio::io::AsyncWriteExt;
    const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 28\r\nConnection: close\r\n\r\ntoo many connections; retry\n";
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(REFUSAL)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three workers with 2, 0 and 1 connections open: the next connection goes to the
    /// second; once the second stops, past it to the third.
    #[test]
    fn connections_go_to_the_least_busy_running_worker() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let slots = Arc::new(Semaphore::new(10));
        let (mut handles, mut receivers) = (Vec::new(), Vec::new());
        for open in [2, 0, 1] {
            let (sender, receiver) = mpsc::unbounded_channel();
            handles.push(WorkerHandle {
                connections: sender,
                open: Arc::new(AtomicUsize::new(open)),
            });
            receivers.push(receiver);
        }
        let connect = || {
            let client = std::net::TcpStream::connect(addr).unwrap();
            let (stream, peer) = listener.accept().unwrap();
            let slot = Arc::clone(&slots).try_acquire_owned().unwrap();
            hand_off(&handles, stream, peer, slot);
            client
        };
        let open = |i: usize| handles[i].open.load(Ordering::Relaxed);

        let _first = connect();
        let to_second = receivers[1].try_recv().expect("the idle worker's");
        assert_eq!((open(0), open(1), open(2)), (2, 1, 1));

        receivers[1].close();
        let _second = connect();
        let to_third = receivers[2].try_recv().expect("the third worker's");
        assert_eq!((open(0), open(1), open(2)), (2, 1, 2));
        assert!(receivers[0].try_recv().is_err());
        assert_eq!(slots.available_permits(), 8);

        // A connection that ends no longer counts, and gives its slot back.
        drop((to_second, to_third));
        assert_eq!((open(0), open(1), open(2)), (2, 0, 1));
        assert_eq!(slots.available_permits(), 10);
    }
}

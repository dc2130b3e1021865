//! One client connection: served by hyper, with the head of its first request bounded by
//! the header timeout (slowloris). hyper closes a connection whose head times out
//! without a word; a client that sent part of its first head is owed a 408, so a
//! duplicate of the socket is kept until that head is whole, to answer through once
//! hyper has let go of it. A connection that sends nothing at all, or goes quiet between
//! requests, is closed silently, as keep-alive connections are.

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::Watcher;
use tokio::net::TcpStream;

use crate::exchange::{self, Failure};
use crate::proxy::{self, OriginClient, Shared};

/// The longest request head a connection may send (hyper's buffer would otherwise grow to
/// about 400 KiB): heads here are a request line and headers with at most one token, so
/// 64 KiB bounds each connection's memory with room to spare; a longer head is refused
/// with 431.
const MAX_HEAD_BUFFER: usize = 64 * 1024;

const REQUEST_TIMEOUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 32\r\nConnection: close\r\n\r\nthe request head did not arrive\n";

/// Serves `stream` until it closes; `header_timeout` bounds every request head.
pub async fn serve(
    shared: Arc<Shared>,
    client: OriginClient,
    stream: TcpStream,
    peer: SocketAddr,
    header_timeout: Duration,
    graceful: Watcher,
) {
    let opened = Instant::now();
    // Nothing sent within the timeout (or a close): an idle connection, closed without
    // an answer. A peek, since readiness alone may be spurious.
    let first = tokio::time::timeout(header_timeout, stream.peek(&mut [0u8; 1])).await;
    if !matches!(first, Ok(Ok(1..))) {
        return;
    }
    let spare: Arc<Mutex<Option<std::net::TcpStream>>> = Arc::new(Mutex::new(
        stream
            .as_fd()
            .try_clone_to_owned()
            .ok()
            .map(std::net::TcpStream::from),
    ));
    let first_head_whole = Arc::new(AtomicBool::new(false));
    let service = {
        let (shared, spare, first_head_whole) = (
            Arc::clone(&shared),
            Arc::clone(&spare),
            Arc::clone(&first_head_whole),
        );
        service_fn(move |req| {
            if !first_head_whole.swap(true, Ordering::Relaxed) {
                // The first head is whole: no 408 is owed any more.
                drop(spare.lock().unwrap_or_else(|p| p.into_inner()).take());
            }
            proxy::handle(Arc::clone(&shared), client.clone(), peer, req)
        })
    };
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_header_size(MAX_HEAD_BUFFER)
        .serve_connection(TokioIo::new(stream), service);
    let served = graceful.watch(connection).await;
    let spare = spare.lock().unwrap_or_else(|p| p.into_inner()).take();
    match served {
        Err(e) if e.is_timeout() => {
            if let Some(socket) = spare {
                answer_request_timeout(&shared, socket, peer, opened);
            }
        }
        Err(e) if !e.is_incomplete_message() => {
            eprintln!("tollgate: connection from {peer}: {e}");
        }
        _ => {}
    }
}

/// The 408 a client that sent part of its first request head is owed, counted and
/// audited like any exchange that failed.
fn answer_request_timeout(
    shared: &Shared,
    mut socket: std::net::TcpStream,
    peer: SocketAddr,
    opened: Instant,
) {
    use std::io::Write;
    // Counted before the client can see the answer, so the two never disagree.
    shared.metrics.failure(Failure::ClientHeaderTimeout);
    // A fresh connection's send buffer takes these bytes at once; the socket is
    // non-blocking (shared with the closed original), so this never waits.
    let sent = socket.write(REQUEST_TIMEOUT).unwrap_or(0);
    let _ = socket.shutdown(std::net::Shutdown::Both);
    exchange::record_unanswered(
        shared,
        Failure::ClientHeaderTimeout,
        &peer.ip().to_string(),
        sent,
        opened.elapsed(),
    );
}

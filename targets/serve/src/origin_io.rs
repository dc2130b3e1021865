//! Connections to the origin that give up on a write the origin stops taking. When the
//! origin stops reading a request body, the client connection's write waits on a full
//! socket buffer and nothing above it is polled, so no timer above it can fire: the
//! write itself must time out. The error fails the request (504, `origin_not_reading`)
//! and closes that connection, releasing the body and the exchange.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Sleep;

/// What an origin write that timed out reports, so the proxy can tell it from a reset.
pub const NOT_READING: &str = "the origin stopped reading";

/// `HttpConnector` whose connections time out writes pending for `idle`.
#[derive(Clone, Debug)]
pub struct StallingWritesFail {
    pub http: HttpConnector,
    pub idle: Duration,
}

impl tower_service::Service<Uri> for StallingWritesFail {
    type Response = WriteDeadline;
    type Error = <HttpConnector as tower_service::Service<Uri>>::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<WriteDeadline, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.http.call(uri);
        let idle = self.idle;
        Box::pin(async move {
            Ok(WriteDeadline {
                inner: connecting.await?,
                idle,
                stalled_since: None,
            })
        })
    }
}

/// A connection whose writes fail once pending for `idle`.
#[derive(Debug)]
pub struct WriteDeadline {
    inner: TokioIo<TcpStream>,
    idle: Duration,
    /// Armed when a write has to wait, reset when one goes through.
    stalled_since: Option<Pin<Box<Sleep>>>,
}

impl WriteDeadline {
    fn pending_write<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let idle = self.idle;
        let timer = self
            .stalled_since
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, NOT_READING)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn wrote<T>(
        &mut self,
        result: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match result {
            Poll::Pending => self.pending_write(cx),
            done => {
                self.stalled_since = None;
                done
            }
        }
    }
}

impl Read for WriteDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl Write for WriteDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(written, cx)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = Pin::new(&mut self.inner).poll_flush(cx);
        self.wrote(flushed, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(written, cx)
    }
}

impl Connection for WriteDeadline {
    fn connected(&self) -> Connected {
        self.inner.connected()
    }
}

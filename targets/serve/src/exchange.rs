//! One forwarded request from its decision to its last byte: the bodies it streams both
//! ways (counted, and cut when they stall), what went wrong if anything, and the outcome
//! record written when it is over. The decision record and the outcome record share the
//! exchange's id.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use serde::Serialize;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::time::Sleep;

use crate::proxy::{BoxError, Shared};

/// What cut an exchange short. The first failure noticed is the one recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// The origin refused the connection, or could not be reached at all.
    OriginConnect,
    /// The origin did not accept the connection in time.
    OriginConnectTimeout,
    /// The origin stopped reading the request body (a write to it stalled).
    OriginNotReading,
    /// The origin took the request but sent no response head in time.
    OriginHeadersTimeout,
    /// The origin's response body stopped moving.
    OriginStalled,
    /// The origin closed or broke the connection mid-exchange.
    OriginReset,
    /// The client's request body stopped moving.
    ClientStalled,
    /// The client sent part of its request head and not the rest in time (slowloris).
    ClientHeaderTimeout,
    /// The client closed its connection before the response was complete.
    ClientWentAway,
}

impl Failure {
    pub const ALL: [Failure; 9] = [
        Failure::OriginConnect,
        Failure::OriginConnectTimeout,
        Failure::OriginNotReading,
        Failure::OriginHeadersTimeout,
        Failure::OriginStalled,
        Failure::OriginReset,
        Failure::ClientStalled,
        Failure::ClientHeaderTimeout,
        Failure::ClientWentAway,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Failure::OriginConnect => "origin_connect",
            Failure::OriginConnectTimeout => "origin_connect_timeout",
            Failure::OriginNotReading => "origin_not_reading",
            Failure::OriginHeadersTimeout => "origin_headers_timeout",
            Failure::OriginStalled => "origin_stalled",
            Failure::OriginReset => "origin_reset",
            Failure::ClientStalled => "client_stalled",
            Failure::ClientHeaderTimeout => "client_header_timeout",
            Failure::ClientWentAway => "client_went_away",
        }
    }

    pub fn index(self) -> usize {
        Failure::ALL.iter().position(|f| *f == self).unwrap_or(0)
    }
}

/// A request id, unique within this process and across its restarts.
pub fn next_id() -> String {
    tollgate_host_kit::request_id::next_id(|| crate::proxy::now().as_nanos())
}

pub struct Exchange {
    pub id: String,
    /// `X-Request-Id`: the client's when it sent a usable one, else `id`; audited and
    /// forwarded to the origin.
    pub request_id: String,
    shared: Arc<Shared>,
    started: Instant,
    from_client: AtomicU64,
    to_client: AtomicU64,
    /// The origin's response status; 0 until a response head arrived.
    origin_status: AtomicU16,
    failure: OnceLock<Failure>,
    /// Whether the request went to the origin; the outcome of one answered at the edge is
    /// its decision, so it gets no outcome record unless something failed.
    forwarded: AtomicBool,
    /// Signalled once the request body has been sent whole: the origin's time to answer
    /// counts from there, so a long upload is not mistaken for a silent origin.
    upload_done: Notify,
    /// The request's place among those in flight, given back when the exchange ends.
    _in_flight: OwnedSemaphorePermit,
}

impl Exchange {
    pub fn new(
        id: String,
        request_id: Option<String>,
        shared: Arc<Shared>,
        in_flight: OwnedSemaphorePermit,
    ) -> Arc<Self> {
        Arc::new(Exchange {
            request_id: request_id.unwrap_or_else(|| id.clone()),
            id,
            shared,
            started: Instant::now(),
            from_client: AtomicU64::new(0),
            to_client: AtomicU64::new(0),
            origin_status: AtomicU16::new(0),
            failure: OnceLock::new(),
            forwarded: AtomicBool::new(false),
            upload_done: Notify::new(),
            _in_flight: in_flight,
        })
    }

    pub fn fail(&self, failure: Failure) {
        let _ = self.failure.set(failure);
    }

    pub fn failure(&self) -> Option<Failure> {
        self.failure.get().copied()
    }

    pub fn forwarded(&self) {
        self.forwarded.store(true, Ordering::Relaxed);
    }

    pub fn answered(&self, status: u16) {
        self.origin_status.store(status, Ordering::Relaxed);
    }

    /// Resolves once the request body has been sent whole.
    pub async fn uploaded(&self) {
        self.upload_done.notified().await;
    }
}

#[derive(Serialize)]
struct OutcomeRecord<'a> {
    id: &'a str,
    /// For a connection that never made a request to decide: who it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    client_ip: Option<&'a str>,
    outcome: Outcome,
}

/// The outcome record of a connection that failed before any request could be decided
/// (a head that never finished): no decision shares its id.
pub fn record_unanswered(
    shared: &Shared,
    failure: Failure,
    client_ip: &str,
    bytes_to_client: usize,
    duration: Duration,
) {
    let record = OutcomeRecord {
        id: &next_id(),
        client_ip: Some(client_ip),
        outcome: Outcome {
            origin_status: None,
            failure: Some(failure),
            client_went_away: false,
            bytes_from_client: 0,
            bytes_to_client: bytes_to_client as u64,
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
        },
    };
    if let Ok(line) = serde_json::to_string(&record) {
        shared.audit.record(line);
    }
}

#[derive(Serialize)]
struct Outcome {
    origin_status: Option<u16>,
    failure: Option<Failure>,
    client_went_away: bool,
    bytes_from_client: u64,
    bytes_to_client: u64,
    duration_ms: u64,
}

impl Drop for Exchange {
    /// The exchange is over when its last body is dropped: record what happened.
    fn drop(&mut self) {
        let failure = self.failure();
        if let Some(failure) = failure {
            self.shared.metrics.failure(failure);
        }
        if failure.is_none() && !self.forwarded.load(Ordering::Relaxed) {
            return;
        }
        let status = self.origin_status.load(Ordering::Relaxed);
        let record = OutcomeRecord {
            id: &self.id,
            client_ip: None,
            outcome: Outcome {
                origin_status: (status != 0).then_some(status),
                failure,
                client_went_away: failure == Some(Failure::ClientWentAway),
                bytes_from_client: self.from_client.load(Ordering::Relaxed),
                bytes_to_client: self.to_client.load(Ordering::Relaxed),
                duration_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            },
        };
        if let Ok(line) = serde_json::to_string(&record) {
            self.shared.audit.record(line);
        }
    }
}

/// Which way a body flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The client's request body, on its way to the origin.
    Upload,
    /// The origin's response body, on its way to the client.
    Download,
}

/// A body streaming through: counts its bytes into the exchange and fails it when no
/// frame arrives for `idle`.
pub struct Metered<B> {
    inner: B,
    exchange: Arc<Exchange>,
    direction: Direction,
    idle: Duration,
    /// When the last frame (or the body) arrived: the idle clock runs from there.
    progress: tokio::time::Instant,
    /// Armed only once the body has to wait: most small bodies never do, and a timer costs
    /// a registration with the runtime.
    timer: Option<Pin<Box<Sleep>>>,
    ended: AtomicBool,
}

impl<B: Body> Metered<B> {
    pub fn new(inner: B, exchange: Arc<Exchange>, direction: Direction, idle: Duration) -> Self {
        let metered = Metered {
            progress: tokio::time::Instant::now(),
            timer: None,
            ended: AtomicBool::new(false),
            inner,
            exchange,
            direction,
            idle,
        };
        if metered.inner.is_end_stream() {
            metered.end();
        }
        metered
    }

    fn end(&self) {
        if !self.ended.swap(true, Ordering::Relaxed) && self.direction == Direction::Upload {
            self.exchange.upload_done.notify_one();
        }
    }

    fn counter(&self) -> &AtomicU64 {
        match self.direction {
            Direction::Upload => &self.exchange.from_client,
            Direction::Download => &self.exchange.to_client,
        }
    }
}

impl<B> Body for Metered<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.counter()
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                this.progress = tokio::time::Instant::now();
                if let Some(timer) = this.timer.as_mut() {
                    timer.as_mut().reset(this.progress + this.idle);
                }
                if this.inner.is_end_stream() {
                    this.end();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.exchange.fail(match this.direction {
                    Direction::Upload => Failure::ClientWentAway,
                    Direction::Download => Failure::OriginReset,
                });
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.end();
                Poll::Ready(None)
            }
            Poll::Pending => match this
                .timer
                .get_or_insert_with(|| {
                    Box::pin(tokio::time::sleep_until(this.progress + this.idle))
                })
                .as_mut()
                .poll(cx)
            {
                Poll::Ready(()) => {
                    let (failure, message) = match this.direction {
                        Direction::Upload => {
                            (Failure::ClientStalled, "client request body stalled")
                        }
                        Direction::Download => {
                            (Failure::OriginStalled, "origin response body stalled")
                        }
                    };
                    this.exchange.fail(failure);
                    Poll::Ready(Some(Err(message.into())))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        let end = self.inner.is_end_stream();
        if end {
            self.end();
        }
        end
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Metered<B> {
    fn drop(&mut self) {
        // A response body dropped before its end means the client stopped reading.
        if self.direction == Direction::Download && !self.ended.load(Ordering::Relaxed) {
            self.exchange.fail(Failure::ClientWentAway);
        }
    }
}

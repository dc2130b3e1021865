//! Audit records of the native hosts (serve, the Azure handler) go through a bounded queue
//! to one writer thread, so a request never waits on the sink: the thread takes what is
//! queued every few milliseconds, writes it through a buffer and flushes once per batch (to
//! a Kafka topic, one produce per batch). A full queue drops the record and counts it; a
//! host told that audit records are required refuses the request instead, as it does while
//! the sink's last write failed.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::kafka;

/// Where audit records go: one JSON object per line, or one Kafka record each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuditTarget {
    Stdout,
    Stderr,
    File(PathBuf),
    /// `kafka[s]://HOST:PORT/TOPIC[?...]`: an existing topic.
    Kafka(kafka::Address),
}

impl AuditTarget {
    /// `stdout` (or `-`), `stderr`, `kafka[s]://HOST:PORT/TOPIC[?...]`, or a file path.
    pub fn parse(text: &str) -> Result<AuditTarget, String> {
        match text {
            "stdout" | "-" => return Ok(AuditTarget::Stdout),
            "stderr" => return Ok(AuditTarget::Stderr),
            _ => {}
        }
        match kafka::parse_address(text) {
            None => Ok(AuditTarget::File(text.into())),
            Some(address) => address.map(AuditTarget::Kafka),
        }
    }

    /// Takes a Kafka sink's SASL password from the host's secrets, by name.
    pub fn resolve(&mut self, secret: impl Fn(&str) -> Option<String>) -> Result<(), String> {
        match self {
            AuditTarget::Kafka(address) => address.resolve(secret),
            _ => Ok(()),
        }
    }
}

/// The queue and its writer thread.
pub struct AuditLog {
    /// `None` asks the writer to stop.
    queue: SyncSender<Option<String>>,
    dropped: AtomicU64,
    failing: Arc<AtomicBool>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens `target` (a Kafka topic must exist and its broker answer now) with room for
    /// `queue` records waiting.
    pub fn open(target: &AuditTarget, queue: usize) -> std::io::Result<Self> {
        let out: Box<dyn Write + Send> = match target {
            AuditTarget::Stdout => Box::new(std::io::stdout()),
            AuditTarget::Stderr => Box::new(std::io::stderr()),
            AuditTarget::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
            AuditTarget::Kafka(address) => Box::new(KafkaLines::connect(address)?),
        };
        let (sender, receiver) = sync_channel(queue.max(1));
        let failing = Arc::new(AtomicBool::new(false));
        let writer = std::thread::Builder::new()
            .name("tollgate-audit".into())
            .spawn({
                let failing = Arc::clone(&failing);
                move || write_records(receiver, out, &failing)
            })?;
        Ok(AuditLog {
            queue: sender,
            dropped: AtomicU64::new(0),
            failing,
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Queues one record. False when it was not: the queue is full, the log is closed or
    /// the sink's last write failed.
    pub fn record(&self, line: String) -> bool {
        let queued = match self.queue.try_send(Some(line)) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        };
        if !queued {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        queued && !self.failing.load(Ordering::Relaxed)
    }

    /// Records that could not be queued.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Writes out everything queued and stops the writer (at shutdown).
    pub fn close(&self) {
        let _ = self.queue.send(None);
        if let Some(writer) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = writer.join();
        }
    }
}

/// A Kafka topic as a line sink: `write` collects lines, `flush` produces them as one
/// batch of records (one per line) and returns once the broker acknowledged it.
struct KafkaLines {
    /// Drives the client; only ever inside `flush`, on the writer thread.
    runtime: tokio::runtime::Runtime,
    topic: kafka::Topic,
    pending: Vec<u8>,
}

impl KafkaLines {
    /// Connects to the address' topic, which must exist. Runs on a thread of its own: the
    /// caller may be inside another runtime.
    fn connect(address: &kafka::Address) -> std::io::Result<Self> {
        let address = address.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let topic = runtime
                .block_on(kafka::connect(&address))
                .map_err(std::io::Error::other)?;
            Ok(KafkaLines {
                runtime,
                topic,
                pending: Vec::new(),
            })
        })
        .join()
        .map_err(|_| std::io::Error::other("Kafka connection thread panicked"))?
    }
}

impl Write for KafkaLines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        // What does not reach the broker is lost either way: the failure is reported (and
        // refuses requests under --audit-required), not retried into an ever larger batch.
        let pending = std::mem::take(&mut self.pending);
        let records = pending
            .split(|b| *b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| kafka::record(None, line.to_vec(), Default::default()))
            .collect();
        self.runtime.block_on(self.topic.produce(records))
    }
}

/// How long the writer sleeps between batches. Sleeping rather than blocking on the queue
/// means a request never has to wake the writer (a futex wake per record cost serve about
/// a fifth of its throughput); a record reaches the sink within this time.
const WRITE_EVERY: Duration = Duration::from_millis(10);

fn write_records(
    queue: Receiver<Option<String>>,
    out: Box<dyn Write + Send>,
    failing: &AtomicBool,
) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    loop {
        let mut result = Ok(());
        let mut wrote = false;
        let stop = loop {
            match queue.try_recv() {
                Ok(Some(line)) => {
                    result = result.and_then(|()| writeln!(out, "{line}"));
                    wrote = true;
                }
                Ok(None) | Err(TryRecvError::Disconnected) => break true,
                Err(TryRecvError::Empty) => break false,
            }
        };
        if wrote || stop {
            result = result.and_then(|()| out.flush());
            let was_failing = failing.swap(result.is_err(), Ordering::Relaxed);
            match result {
                Err(e) if !was_failing => eprintln!("tollgate: cannot write audit records: {e}"),
                Ok(()) if was_failing => {
                    eprintln!("tollgate: audit records are being written again")
                }
                _ => {}
            }
        }
        if stop {
            return;
        }
        std::thread::sleep(WRITE_EVERY);
    }
}

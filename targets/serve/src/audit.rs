//! Audit records go through a bounded queue to one writer thread, so a request never waits
//! on the sink: the thread writes through a buffer and flushes whenever the queue runs
//! dry. A full queue drops the record and counts it; with `--audit-required` the caller
//! refuses the request instead.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::config::AuditTarget;

pub struct AuditLog {
    /// `None` asks the writer to stop.
    queue: SyncSender<Option<String>>,
    dropped: AtomicU64,
    failing: Arc<AtomicBool>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl AuditLog {
    pub fn open(target: &AuditTarget, queue: usize) -> std::io::Result<Self> {
        let out: Box<dyn Write + Send> = match target {
            AuditTarget::Stdout => Box::new(std::io::stdout()),
            AuditTarget::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
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

fn write_records(
    queue: Receiver<Option<String>>,
    out: Box<dyn Write + Send>,
    failing: &AtomicBool,
) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    let mut open = true;
    while open {
        // Every sender gone (the log dropped without `close`): nothing more can come.
        let Ok(first) = queue.recv() else { break };
        let mut result = Ok(());
        // Write whatever else is waiting (up to a bound, so records under steady load
        // still reach the sink promptly), then flush once: one syscall for a burst.
        let waiting = std::iter::from_fn(|| queue.try_recv().ok()).take(1024);
        for line in std::iter::once(first).chain(waiting) {
            match line {
                Some(line) => result = result.and_then(|()| writeln!(out, "{line}")),
                None => open = false,
            }
        }
        result = result.and_then(|()| out.flush());
        let was_failing = failing.swap(result.is_err(), Ordering::Relaxed);
        match result {
            Err(e) if !was_failing => eprintln!("tollgate: cannot write audit records: {e}"),
            Ok(()) if was_failing => eprintln!("tollgate: audit records are being written again"),
            _ => {}
        }
    }
    let _ = out.flush();
}

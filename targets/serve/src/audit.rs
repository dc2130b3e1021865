use std::io::Write;
use std::sync::Mutex;

use crate::config::AuditTarget;

/// Serialises audit lines so records from concurrent requests never interleave.
pub struct AuditLog {
    out: Mutex<Box<dyn Write + Send>>,
}

impl AuditLog {
    pub fn open(target: &AuditTarget) -> std::io::Result<Self> {
        let out: Box<dyn Write + Send> = match target {
            AuditTarget::Stdout => Box::new(std::io::stdout()),
            AuditTarget::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        Ok(AuditLog {
            out: Mutex::new(out),
        })
    }

    pub fn write(&self, line: &str) {
        let mut out = self
            .out
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // An audit sink that fails is reported, not fatal to the request.
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            eprintln!("tollgate: cannot write audit record");
        }
    }
}

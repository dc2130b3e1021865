//! Prometheus text exposition of a handful of counters.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Default)]
pub struct Metrics {
    decisions: Mutex<BTreeMap<(u16, String), u64>>,
    decision_nanos: AtomicU64,
    decision_count: AtomicU64,
    origin_errors: AtomicU64,
    shed: AtomicU64,
    jwks: Mutex<BTreeMap<(String, &'static str), u64>>,
    in_flight: AtomicI64,
}

impl Metrics {
    pub fn decision(&self, status: u16, reason: &str, took: Duration) {
        let mut map = self.decisions.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry((status, reason.to_owned())).or_default() += 1;
        self.decision_nanos.fetch_add(
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.decision_count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn origin_error(&self) {
        self.origin_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// A request refused because the gateway was at a limit it enforces (503).
    pub fn shed(&self) {
        self.shed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn jwks_fetch(&self, issuer: &str, ok: bool) {
        let mut map = self.jwks.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry((issuer.to_owned(), if ok { "ok" } else { "error" }))
            .or_default() += 1;
    }

    pub fn in_flight(&self, delta: i64) {
        self.in_flight.fetch_add(delta, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP tollgate_decisions_total Policy decisions by status and reason."
        );
        let _ = writeln!(out, "# TYPE tollgate_decisions_total counter");
        for ((status, reason), n) in self
            .decisions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "tollgate_decisions_total{{status=\"{status}\",reason=\"{reason}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP tollgate_decision_seconds Time spent deciding (token, scope, rate limit)."
        );
        let _ = writeln!(out, "# TYPE tollgate_decision_seconds summary");
        let secs = self.decision_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "tollgate_decision_seconds_sum {secs}");
        let _ = writeln!(
            out,
            "tollgate_decision_seconds_count {}",
            self.decision_count.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP tollgate_origin_errors_total Allowed requests the origin could not serve."
        );
        let _ = writeln!(out, "# TYPE tollgate_origin_errors_total counter");
        let _ = writeln!(
            out,
            "tollgate_origin_errors_total {}",
            self.origin_errors.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP tollgate_shed_total Requests refused with 503 at a gateway limit (buffered bodies)."
        );
        let _ = writeln!(out, "# TYPE tollgate_shed_total counter");
        let _ = writeln!(
            out,
            "tollgate_shed_total {}",
            self.shed.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP tollgate_jwks_fetches_total JWKS fetches by issuer and result."
        );
        let _ = writeln!(out, "# TYPE tollgate_jwks_fetches_total counter");
        for ((issuer, result), n) in self.jwks.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(
                out,
                "tollgate_jwks_fetches_total{{issuer=\"{issuer}\",result=\"{result}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP tollgate_requests_in_flight Requests being handled."
        );
        let _ = writeln!(out, "# TYPE tollgate_requests_in_flight gauge");
        let _ = writeln!(
            out,
            "tollgate_requests_in_flight {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        out
    }
}

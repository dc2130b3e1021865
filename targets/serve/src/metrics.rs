//! Prometheus text exposition of serve's counters. Every counter the request path touches
//! is an atomic in a table fixed at start (decisions by reason and status), so counting
//! never takes a lock there; JWKS fetches and policy reloads, which are rare, take one.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use policy_core::{Decision, Reason};

use crate::exchange::Failure;
use crate::policy_url::PullError;

/// HTTP statuses a decision can have: 100..=599.
const STATUSES: usize = 500;

/// Upper bounds (seconds) of the origin latency histogram's buckets.
const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

/// The limits at which serve sheds load (answers 503 with Retry-After).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    Connections,
    InFlight,
    LfsBodies,
}

impl Limit {
    const ALL: [Limit; 3] = [Limit::Connections, Limit::InFlight, Limit::LfsBodies];

    fn code(self) -> &'static str {
        match self {
            Limit::Connections => "connections",
            Limit::InFlight => "in_flight",
            Limit::LfsBodies => "lfs_bodies",
        }
    }
}

pub struct Metrics {
    /// Decisions, at `reason.index() * STATUSES + (status - 100)`.
    decisions: Box<[AtomicU64]>,
    /// Decisions the shadow rules would have made otherwise, by the shadow outcome's
    /// reason and status, laid out as `decisions`.
    shadow: Box<[AtomicU64]>,
    decision_nanos: AtomicU64,
    decision_count: AtomicU64,
    /// Requests that did not reach the origin at all (no valid target).
    origin_errors: AtomicU64,
    /// Exchanges cut short, by [`Failure::index`].
    failures: [AtomicU64; Failure::ALL.len()],
    /// Requests refused at a limit, by position in [`Limit::ALL`].
    shed: [AtomicU64; Limit::ALL.len()],
    /// Time to the origin's response head: per bucket, then sum (ns) and count.
    origin_latency: [AtomicU64; LATENCY_BUCKETS.len()],
    origin_latency_nanos: AtomicU64,
    origin_latency_count: AtomicU64,
    connections: AtomicI64,
    rate_store_errors: AtomicU64,
    audit_refused: AtomicU64,
    /// JWKS fetches by issuer: `[ok, failed]`.
    jwks: Mutex<BTreeMap<String, [u64; 2]>>,
    in_flight: AtomicI64,
    /// The revision of the policy deciding ([`policy_core::Engine::revision`]).
    policy_revision: Mutex<String>,
    /// Policy reloads: `[put in place, refused]`.
    reloads: [AtomicU64; 2],
    /// `--policy-url` polls: `[answered, fetch failed, signature refused]`.
    pulls: [AtomicU64; 3],
    /// Webhook deliveries by the status they were answered with.
    webhooks: Mutex<BTreeMap<u16, u64>>,
}

impl Metrics {
    pub fn new(policy_revision: &str) -> Self {
        Metrics {
            policy_revision: Mutex::new(policy_revision.to_owned()),
            reloads: Default::default(),
            pulls: Default::default(),
            webhooks: Mutex::default(),
            decisions: (0..Reason::COUNT * STATUSES)
                .map(|_| AtomicU64::new(0))
                .collect(),
            shadow: (0..Reason::COUNT * STATUSES)
                .map(|_| AtomicU64::new(0))
                .collect(),
            decision_nanos: AtomicU64::new(0),
            decision_count: AtomicU64::new(0),
            origin_errors: AtomicU64::new(0),
            failures: Default::default(),
            shed: Default::default(),
            origin_latency: Default::default(),
            origin_latency_nanos: AtomicU64::new(0),
            origin_latency_count: AtomicU64::new(0),
            connections: AtomicI64::new(0),
            rate_store_errors: AtomicU64::new(0),
            audit_refused: AtomicU64::new(0),
            jwks: Mutex::default(),
            in_flight: AtomicI64::new(0),
        }
    }

    pub fn decision(&self, decision: &Decision, took: Duration) {
        let at = |status: u16, reason: Reason| {
            reason.index() * STATUSES + usize::from(status.clamp(100, 599)) - 100
        };
        self.decisions[at(decision.status, decision.reason)].fetch_add(1, Ordering::Relaxed);
        if let Some(shadow) = &decision.shadow {
            self.shadow[at(shadow.status, shadow.reason)].fetch_add(1, Ordering::Relaxed);
        }
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
    pub fn shed(&self, limit: Limit) {
        let index = Limit::ALL.iter().position(|l| *l == limit).unwrap_or(0);
        self.shed[index].fetch_add(1, Ordering::Relaxed);
    }

    pub fn failure(&self, failure: Failure) {
        self.failures[failure.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// The origin answered with a response head `took` after the request was sent.
    pub fn origin_answered(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        if let Some(bucket) = LATENCY_BUCKETS.iter().position(|b| seconds <= *b) {
            self.origin_latency[bucket].fetch_add(1, Ordering::Relaxed);
        }
        self.origin_latency_nanos.fetch_add(
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.origin_latency_count.fetch_add(1, Ordering::Relaxed);
    }

    /// A rate limit the shared store could not check.
    pub fn rate_store_error(&self) {
        self.rate_store_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connections(&self, delta: i64) {
        self.connections.fetch_add(delta, Ordering::Relaxed);
    }

    /// A request refused because its audit record could not be written
    /// (`--audit-required`).
    pub fn audit_refused(&self) {
        self.audit_refused.fetch_add(1, Ordering::Relaxed);
    }

    pub fn jwks_fetch(&self, issuer: &str, ok: bool) {
        let mut jwks = self.jwks.lock().unwrap_or_else(|p| p.into_inner());
        jwks.entry(issuer.to_owned()).or_default()[usize::from(!ok)] += 1;
    }

    /// A reload put the policy of `revision` in place.
    pub fn policy_replaced(&self, revision: &str) {
        revision.clone_into(
            &mut self
                .policy_revision
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        self.reloads[0].fetch_add(1, Ordering::Relaxed);
    }

    /// A poll of `--policy-url`, and what kept it from bringing a policy, if anything.
    pub fn policy_pull(&self, error: Option<&PullError>) {
        let index = match error {
            None => 0,
            Some(PullError::Fetch(_)) => 1,
            Some(PullError::Signature(_)) => 2,
        };
        self.pulls[index].fetch_add(1, Ordering::Relaxed);
    }

    /// A webhook delivery answered with `status`.
    pub fn webhook(&self, status: u16) {
        *self
            .webhooks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(status)
            .or_default() += 1;
    }

    /// A reload was refused: the policy deciding stays.
    pub fn reload_refused(&self) {
        self.reloads[1].fetch_add(1, Ordering::Relaxed);
    }

    pub fn in_flight(&self, delta: i64) {
        self.in_flight.fetch_add(delta, Ordering::Relaxed);
    }

    /// The exposition; `audit_dropped` comes from the audit log.
    pub fn render(&self, audit_dropped: u64) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP tollgate_policy_info The policy deciding, by revision (sha256: and 16 hex digits of its text's SHA-256).\n\
             # TYPE tollgate_policy_info gauge\n\
             tollgate_policy_info{{revision=\"{}\"}} 1",
            self.policy_revision.lock().unwrap_or_else(|p| p.into_inner())
        );
        let _ = writeln!(
            out,
            "# HELP tollgate_policy_reloads_total Policy reloads (signal, file watch, POST /reload) by result: replaced, or refused because the new policy does not compile or its test cases fail.\n\
             # TYPE tollgate_policy_reloads_total counter\n\
             tollgate_policy_reloads_total{{result=\"replaced\"}} {}\n\
             tollgate_policy_reloads_total{{result=\"refused\"}} {}",
            self.reloads[0].load(Ordering::Relaxed),
            self.reloads[1].load(Ordering::Relaxed)
        );
        let _ = writeln!(out, "# HELP tollgate_policy_pulls_total Polls of --policy-url by result: answered (a new policy, then vetted like any reload, or 304), fetch_failed, bad_signature.\n# TYPE tollgate_policy_pulls_total counter");
        for (result, n) in ["answered", "fetch_failed", "bad_signature"]
            .iter()
            .zip(&self.pulls)
        {
            let _ = writeln!(
                out,
                "tollgate_policy_pulls_total{{result=\"{result}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        for (name, help, table) in [
            (
                "tollgate_decisions_total",
                "Policy decisions by status and reason.",
                &self.decisions,
            ),
            (
                "tollgate_shadow_decisions_total",
                "Decisions the policy's shadow rules would have made otherwise, by the status and reason they would have given.",
                &self.shadow,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            out.push_str(&by_status_and_reason(name, table));
        }
        let counter = |out: &mut String, name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        let _ = writeln!(
            out,
            "# HELP tollgate_decision_seconds Time spent deciding (token, scope, rate limit).\n\
             # TYPE tollgate_decision_seconds summary\n\
             tollgate_decision_seconds_sum {}\n\
             tollgate_decision_seconds_count {}",
            self.decision_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            self.decision_count.load(Ordering::Relaxed)
        );
        counter(
            &mut out,
            "tollgate_bad_targets_total",
            "counter",
            "Allowed requests not sent because no origin URI could be made for them.",
            self.origin_errors.load(Ordering::Relaxed).to_string(),
        );
        let _ = writeln!(
            out,
            "# HELP tollgate_exchange_failures_total Forwarded requests cut short, by what cut them: the origin (unreachable, no answer in time, stalled, reset) or the client (stalled upload, gone).\n\
             # TYPE tollgate_exchange_failures_total counter"
        );
        for failure in Failure::ALL {
            let _ = writeln!(
                out,
                "tollgate_exchange_failures_total{{kind=\"{}\"}} {}",
                failure.code(),
                self.failures[failure.index()].load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP tollgate_shed_total Requests and connections refused with 503 at a gateway limit.\n\
             # TYPE tollgate_shed_total counter"
        );
        for (index, limit) in Limit::ALL.iter().enumerate() {
            let _ = writeln!(
                out,
                "tollgate_shed_total{{limit=\"{}\"}} {}",
                limit.code(),
                self.shed[index].load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP tollgate_origin_response_seconds Time from sending a request to the origin's response head.\n\
             # TYPE tollgate_origin_response_seconds histogram"
        );
        let mut cumulative = 0;
        for (bound, n) in LATENCY_BUCKETS.iter().zip(&self.origin_latency) {
            cumulative += n.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "tollgate_origin_response_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.origin_latency_count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "tollgate_origin_response_seconds_bucket{{le=\"+Inf\"}} {count}\n\
             tollgate_origin_response_seconds_sum {}\n\
             tollgate_origin_response_seconds_count {count}",
            self.origin_latency_nanos.load(Ordering::Relaxed) as f64 / 1e9
        );
        counter(
            &mut out,
            "tollgate_rate_store_errors_total",
            "counter",
            "Rate limits the shared store (Redis) could not check in time.",
            self.rate_store_errors.load(Ordering::Relaxed).to_string(),
        );
        counter(
            &mut out,
            "tollgate_connections_open",
            "gauge",
            "Client connections open.",
            self.connections.load(Ordering::Relaxed).to_string(),
        );
        counter(
            &mut out,
            "tollgate_audit_dropped_total",
            "counter",
            "Audit records not written because the queue was full or closed.",
            audit_dropped.to_string(),
        );
        counter(
            &mut out,
            "tollgate_audit_refused_total",
            "counter",
            "Requests refused with 503 because their audit record could not be written (--audit-required).",
            self.audit_refused.load(Ordering::Relaxed).to_string(),
        );
        let _ = writeln!(
            out,
            "# HELP tollgate_jwks_fetches_total JWKS fetches by issuer and result.\n\
             # TYPE tollgate_jwks_fetches_total counter"
        );
        let _ = writeln!(out, "# HELP tollgate_webhook_deliveries_total Gogs webhook deliveries by the status answered: 202 relayed, 4xx refused, 503 sink unavailable.\n# TYPE tollgate_webhook_deliveries_total counter");
        let webhooks = self
            .webhooks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (status, n) in webhooks {
            let _ = writeln!(
                out,
                "tollgate_webhook_deliveries_total{{status=\"{status}\"}} {n}"
            );
        }
        let jwks = self.jwks.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for (issuer, [ok, failed]) in jwks {
            for (result, n) in [("ok", ok), ("error", failed)] {
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "tollgate_jwks_fetches_total{{issuer=\"{issuer}\",result=\"{result}\"}} {n}"
                    );
                }
            }
        }
        counter(
            &mut out,
            "tollgate_requests_in_flight",
            "gauge",
            "Requests being handled.",
            self.in_flight.load(Ordering::Relaxed).to_string(),
        );
        out
    }
}

/// The non-zero counters of a table laid out by reason and status, one line each.
fn by_status_and_reason(name: &str, table: &[AtomicU64]) -> String {
    let mut lines = String::new();
    for (reason_index, reason) in Reason::all().enumerate() {
        for status in 0..STATUSES {
            let n = table[reason_index * STATUSES + status].load(Ordering::Relaxed);
            if n > 0 {
                let _ = writeln!(
                    lines,
                    "{name}{{status=\"{}\",reason=\"{}\"}} {n}",
                    status + 100,
                    reason.code()
                );
            }
        }
    }
    lines
}

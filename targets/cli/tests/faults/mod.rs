//! What the fault tests share: `tollgate serve` in front of a real misbehaving origin
//! (`tests/e2e/faulty_origin.py`) on 127.0.0.1, with timeouts of a second, and readers for
//! its metrics and the outcome records of its audit log.

// Each test binary that includes this module uses part of it.
#![allow(dead_code)]

use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tollgate_conformance::process::{faulty_origin, free_port, Proc};
use tollgate_conformance::world::read_jsonl;

pub const POLICY: &str = r#"
[gateway]
realm = "Faults"

[origin]
git = "service-token"
service_user = "svc"
service_token_secret = "svc-token"

[[grant]]
who = "*"
repos = "acme/*"
access = "write"
"#;

pub struct Faults {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub admin_port: u16,
    _origin: Option<Proc>,
    pub tollgate: Proc,
    /// serve's open descriptors once it listened, before any request.
    pub baseline_fds: usize,
}

impl Faults {
    /// serve in front of the faulty origin (or of a port nothing listens on).
    pub fn start(origin_up: bool, extra: &[&str]) -> Faults {
        Self::start_with(origin_up, extra, "")
    }

    /// [`Faults::start`] with `more_policy` appended, `{origin}` in it standing for the
    /// faulty origin's port.
    pub fn start_with(origin_up: bool, extra: &[&str], more_policy: &str) -> Faults {
        let dir = tempfile::tempdir().expect("tempdir");
        let origin_port = free_port();
        let origin = origin_up.then(|| faulty_origin(origin_port));
        let policy = format!(
            "{POLICY}{}",
            more_policy.replace("{origin}", &origin_port.to_string())
        );
        std::fs::write(dir.path().join("policy.toml"), policy).expect("policy");
        // A one-second origin header timeout unless the case sets its own.
        let header_timeout: &[&str] = if extra.contains(&"--origin-header-timeout") {
            &[]
        } else {
            &["--origin-header-timeout", "1"]
        };
        std::fs::write(dir.path().join("secrets.json"), r#"{"svc-token": "t"}"#).expect("secrets");
        // The faulty origin (or the port nothing listens on) unless the case names its own.
        let origin_url = format!("http://127.0.0.1:{origin_port}");
        let origin_flag: &[&str] = if extra.contains(&"--origin") {
            &[]
        } else {
            &["--origin", &origin_url]
        };
        let port = free_port();
        let admin_port = free_port();
        let stderr = File::create(dir.path().join("stderr")).expect("stderr");
        let tollgate = Proc::start(
            "tollgate serve",
            Command::new(env!("CARGO_BIN_EXE_tollgate"))
                .args(["serve", "--policy"])
                .arg(dir.path().join("policy.toml"))
                .arg("--secrets")
                .arg(dir.path().join("secrets.json"))
                .arg("--audit-log")
                .arg(dir.path().join("audit.log"))
                .args(origin_flag)
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
                .args([
                    "--origin-connect-timeout",
                    "1",
                    "--stream-idle-timeout",
                    "1",
                ])
                .args(["--workers", "1"])
                .args(header_timeout)
                .args(extra)
                .stdout(Stdio::null())
                .stderr(stderr),
            port,
        );
        let baseline_fds = tollgate.open_fds();
        Faults {
            dir,
            port,
            admin_port,
            _origin: origin,
            tollgate,
            baseline_fds,
        }
    }

    /// Waits (15 s at most) until a fault left nothing behind: no client connection open,
    /// no request in flight, and no more descriptors than at the start, but for
    /// `pooled` kept-alive origin connections.
    pub fn assert_nothing_held(&self, pooled: usize) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (connections, in_flight, fds) = (
                self.metric("tollgate_connections_open"),
                self.metric("tollgate_requests_in_flight"),
                self.tollgate.open_fds(),
            );
            if connections == 0 && in_flight == 0 && fds <= self.baseline_fds + pooled {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "still held: {connections} connections, {in_flight} requests, {fds} descriptors ({} at the start)",
                self.baseline_fds
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self, mode: &str) -> String {
        format!(
            "http://127.0.0.1:{}/acme/{mode}.git/info/refs?service=git-upload-pack",
            self.port
        )
    }

    pub fn metrics(&self) -> String {
        reqwest::blocking::get(format!("http://127.0.0.1:{}/metrics", self.admin_port))
            .and_then(|r| r.text())
            .expect("metrics")
    }

    /// Waits (10 s at most) for the metric to read `expected`: serve counts some
    /// outcomes when an exchange ends, which may be just after the client has its answer.
    pub fn assert_metric(&self, line_start: &str, expected: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let value = self.metric(line_start);
            if value == expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "`{line_start}` is {value}, not {expected}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn metric(&self, line_start: &str) -> u64 {
        self.metrics()
            .lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no `{line_start}` in\n{}", self.metrics()))
    }

    /// What serve wrote to stderr, for a failing case's message.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    pub fn audit_path(&self) -> PathBuf {
        self.dir.path().join("audit.log")
    }

    /// The outcome record of the `n`th forwarded request (0-based), once written, with
    /// the id of the decision record it belongs to checked.
    pub fn outcome(&self, n: usize) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let records = read_jsonl(&self.audit_path());
            let outcomes: Vec<&Value> = records
                .iter()
                .filter(|r| r.get("outcome").is_some())
                .collect();
            if let Some(outcome) = outcomes.get(n) {
                let decided = records
                    .iter()
                    .any(|r| r.get("allow").is_some() && r["id"] == outcome["id"]);
                assert!(
                    decided,
                    "no decision record shares the outcome's id: {records:?}"
                );
                return outcome["outcome"].clone();
            }
            assert!(
                Instant::now() < deadline,
                "no outcome record {n} in {records:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

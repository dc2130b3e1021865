//! `tollgate serve` under faults: a real misbehaving origin (`tests/e2e/faulty_origin.py`)
//! and misbehaving clients on 127.0.0.1, with timeouts of a second so every case is
//! bounded. Each case checks the status the client gets, the outcome record the audit
//! log gets, and the metrics.

use std::fs::File;
use std::io::{Read, Write};

use base64ct::Encoding;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tollgate_conformance::process::{faulty_origin, free_port, Proc};
use tollgate_conformance::world::read_jsonl;

const POLICY: &str = r#"
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

struct Faults {
    dir: tempfile::TempDir,
    port: u16,
    admin_port: u16,
    _origin: Option<Proc>,
    tollgate: Proc,
}

impl Faults {
    /// serve in front of the faulty origin (or of a port nothing listens on).
    fn start(origin_up: bool, extra: &[&str]) -> Faults {
        Self::start_with(origin_up, extra, "")
    }

    /// [`Faults::start`] with `more_policy` appended, `{origin}` in it standing for the
    /// faulty origin's port.
    fn start_with(origin_up: bool, extra: &[&str], more_policy: &str) -> Faults {
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
                .args(["--origin", &format!("http://127.0.0.1:{origin_port}")])
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
        Faults {
            dir,
            port,
            admin_port,
            _origin: origin,
            tollgate,
        }
    }

    fn url(&self, mode: &str) -> String {
        format!(
            "http://127.0.0.1:{}/acme/{mode}.git/info/refs?service=git-upload-pack",
            self.port
        )
    }

    fn metrics(&self) -> String {
        reqwest::blocking::get(format!("http://127.0.0.1:{}/metrics", self.admin_port))
            .and_then(|r| r.text())
            .expect("metrics")
    }

    fn metric(&self, line_start: &str) -> u64 {
        self.metrics()
            .lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no `{line_start}` in\n{}", self.metrics()))
    }

    fn audit_path(&self) -> PathBuf {
        self.dir.path().join("audit.log")
    }

    /// The outcome record of the `n`th forwarded request (0-based), once written, with
    /// the id of the decision record it belongs to checked.
    fn outcome(&self, n: usize) -> Value {
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

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

#[test]
fn an_unreachable_origin_is_a_502_recorded_as_such() {
    let faults = Faults::start(false, &[]);
    let answer = client().get(faults.url("ok")).send().expect("answer");
    assert_eq!(answer.status(), 502);
    let outcome = faults.outcome(0);
    assert_eq!(outcome["failure"], "origin_connect", "{outcome}");
    assert_eq!(outcome["origin_status"], Value::Null, "{outcome}");
    assert_eq!(
        faults.metric("tollgate_exchange_failures_total{kind=\"origin_connect\"}"),
        1
    );
}

#[test]
fn an_origin_that_never_answers_is_a_504_after_the_header_timeout() {
    let faults = Faults::start(true, &[]);
    let started = Instant::now();
    let answer = client().get(faults.url("hang")).send().expect("answer");
    assert_eq!(answer.status(), 504);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let outcome = faults.outcome(0);
    assert_eq!(outcome["failure"], "origin_headers_timeout", "{outcome}");
    assert_eq!(
        faults.metric("tollgate_exchange_failures_total{kind=\"origin_headers_timeout\"}"),
        1
    );
}

#[test]
fn a_body_that_stalls_or_resets_is_cut_and_recorded() {
    let faults = Faults::start(true, &[]);
    for (n, mode, failure) in [(0, "stall", "origin_stalled"), (1, "reset", "origin_reset")] {
        let answer = client().get(faults.url(mode)).send().expect("answer");
        assert_eq!(answer.status(), 200, "{mode}");
        assert!(
            answer.bytes().is_err(),
            "{mode}: the cut body read as complete"
        );
        let outcome = faults.outcome(n);
        assert_eq!(outcome["failure"], failure, "{outcome}");
        assert_eq!(outcome["origin_status"], 200, "{outcome}");
        assert_eq!(outcome["bytes_to_client"], 4096, "{outcome}");
    }
}

#[test]
fn a_slow_body_that_keeps_moving_completes() {
    let faults = Faults::start(true, &[]);
    // 16 chunks 0.4 s apart: 6.4 s in all, far past the 1 s idle timeout.
    let body = client()
        .get(faults.url("slow"))
        .send()
        .and_then(|a| a.bytes())
        .expect("slow body");
    assert_eq!(body.len(), 65536);
    let outcome = faults.outcome(0);
    assert_eq!(outcome["failure"], Value::Null, "{outcome}");
    assert_eq!(outcome["bytes_to_client"], 65536, "{outcome}");
    assert!(
        outcome["duration_ms"].as_u64().unwrap_or(0) >= 6000,
        "{outcome}"
    );
}

#[test]
fn a_client_that_stalls_mid_upload_gets_408() {
    let faults = Faults::start(true, &[]);
    let mut stream = TcpStream::connect(("127.0.0.1", faults.port)).expect("connect");
    stream
        .write_all(
            b"POST /acme/ok.git/git-receive-pack HTTP/1.1\r\nHost: x\r\n\
              Content-Type: application/x-git-receive-pack-request\r\n\
              Content-Length: 100000\r\n\r\n0123456789",
        )
        .expect("write");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut answer = vec![0u8; 4096];
    let n = stream.read(&mut answer).expect("an answer within 10 s");
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let outcome = faults.outcome(0);
    assert_eq!(outcome["failure"], "client_stalled", "{outcome}");
    assert_eq!(outcome["bytes_from_client"], 10, "{outcome}");
}

#[test]
fn requests_beyond_the_in_flight_limit_are_shed() {
    let faults = Faults::start(
        true,
        &["--max-in-flight", "2", "--origin-header-timeout", "5"],
    );
    let hanging: Vec<_> = (0..2)
        .map(|_| {
            let url = faults.url("hang");
            std::thread::spawn(move || client().get(url).send().map(|a| a.status().as_u16()))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while faults.metric("tollgate_requests_in_flight") < 2 {
        assert!(
            Instant::now() < deadline,
            "the two requests never got in flight"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let answer = client().get(faults.url("ok")).send().expect("answer");
    assert_eq!(answer.status(), 503);
    assert_eq!(
        answer
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert_eq!(faults.metric("tollgate_shed_total{limit=\"in_flight\"}"), 1);
    for thread in hanging {
        assert_eq!(thread.join().expect("thread").expect("answer"), 504);
    }
    // Their places are free again.
    let answer = client().get(faults.url("ok")).send().expect("answer");
    assert_eq!(answer.status(), 200);
}

#[test]
fn half_open_connections_are_capped_and_released_at_the_header_timeout() {
    let faults = Faults::start(true, &["--max-connections", "20", "--header-timeout", "3"]);
    let answer = client().get(faults.url("ok")).send().expect("answer");
    assert_eq!(answer.status(), 200);
    let baseline_fds = faults.tollgate.open_fds();
    let per_round = half_open_per_round();
    let mut rss_after_round = Vec::new();
    for round in 1..=3u64 {
        // Clients that send half a request head and wait (slowloris).
        let held: Vec<TcpStream> = (0..per_round)
            .filter_map(|_| {
                let mut stream = TcpStream::connect(("127.0.0.1", faults.port)).ok()?;
                stream
                    .write_all(b"GET /acme/ok.git/info/refs HTTP/1.1\r\nHost: x\r\n")
                    .ok()?;
                Some(stream)
            })
            .collect();
        assert_eq!(held.len(), per_round);
        // Most are refused at once; a few may take the places of held ones the header
        // timeout already released, if opening them all took long.
        let deadline = Instant::now() + Duration::from_secs(5);
        let shed = (per_round as u64 - 50) * round;
        while faults.metric("tollgate_shed_total{limit=\"connections\"}") < shed {
            assert!(Instant::now() < deadline, "{}", faults.metrics());
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(faults.metric("tollgate_connections_open") <= 20);
        assert!(
            faults.tollgate.open_fds() <= baseline_fds + 25,
            "more sockets than the cap"
        );
        // Meanwhile a new client is not left waiting: it is told at once to come back
        // (read raw: the answer comes before the request is read).
        let asked = Instant::now();
        let mut stream = TcpStream::connect(("127.0.0.1", faults.port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(1)))
            .expect("timeout");
        let _ = stream.write_all(b"GET /acme/ok.git/info/refs HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut answer = vec![0u8; 1024];
        let n = stream.read(&mut answer).expect("an answer within a second");
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(
            answer.to_ascii_lowercase().contains("retry-after: 1"),
            "{answer}"
        );
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "{:?}",
            asked.elapsed()
        );
        // The header timeout closes the ones it holds; then a normal client is served.
        let deadline = Instant::now() + Duration::from_secs(10);
        while faults.metric("tollgate_connections_open") > 0 {
            assert!(Instant::now() < deadline, "{}", faults.metrics());
            std::thread::sleep(Duration::from_millis(100));
        }
        let answer = client().get(faults.url("ok")).send().expect("answer");
        assert_eq!(answer.status(), 200);
        drop(held);
        // Nothing leaked: every socket is closed again, and memory does not grow round
        // after round (allocators keep some, so the first round is the baseline).
        let deadline = Instant::now() + Duration::from_secs(5);
        while faults.tollgate.open_fds() > baseline_fds + 1 {
            assert!(
                Instant::now() < deadline,
                "round {round}: {} descriptors open, {baseline_fds} before",
                faults.tollgate.open_fds()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        rss_after_round.push(faults.tollgate.rss_kib());
    }
    eprintln!("{per_round} half-open connections a round; descriptors before: {baseline_fds}; resident KiB after each round: {rss_after_round:?}");
    let growth = rss_after_round[2].saturating_sub(rss_after_round[0]);
    assert!(
        growth < 4096,
        "resident memory grew by {growth} KiB over two more rounds: {rss_after_round:?} KiB"
    );
}

/// A thousand half-open connections a round, or what a quarter of this process's
/// descriptor limit allows where that is lower.
fn half_open_per_round() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft: usize = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .unwrap_or(1024);
    (soft / 4).clamp(100, 1000)
}

/// An issuer whose JWKS endpoint accepts and never answers (the faulty origin's `hang`).
const STUCK_ISSUER: &str = r#"
[[issuer]]
name = "stuck"
issuer = "https://stuck.example"
audiences = ["gogs"]
algorithms = ["EdDSA"]
jwks_url = "http://127.0.0.1:{origin}/acme/hang.git/jwks"

[[api_key]]
name = "ops"
sha256 = "SHA256_OF_K_OPS"
user = "ops"
"#;

#[test]
fn a_hanging_jwks_endpoint_holds_neither_the_start_nor_a_request_for_long() {
    use sha2::Digest;
    let policy = STUCK_ISSUER.replace(
        "SHA256_OF_K_OPS",
        &hex::encode(sha2::Sha256::digest(b"k-ops")),
    );
    // serve is listening (Proc::start waits for it) although the issuer never answered.
    let started = Instant::now();
    // No gap between fetches: the token below prompts one of its own.
    let faults = Faults::start_with(
        true,
        &["--jwks-request-timeout", "1", "--jwks-min-refresh-gap", "0"],
        &policy,
    );
    let start_took = started.elapsed();
    // A request with an API key does not wait on the issuer at all.
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let ok = client
        .get(faults.url("ok"))
        .header("Authorization", "token k-ops")
        .send()
        .expect("an API-key request is answered while the issuer hangs");
    assert_eq!(ok.status(), 200);
    // A token from the stuck issuer prompts a fetch; the request waits for it at most the
    // request bound, then is refused for want of keys, never admitted.
    let header =
        base64ct::Base64UrlUnpadded::encode_string(br#"{"alg":"EdDSA","typ":"JWT","kid":"k1"}"#);
    let claims = base64ct::Base64UrlUnpadded::encode_string(
        br#"{"iss":"https://stuck.example","aud":"gogs","sub":"eve","exp":4102444800}"#,
    );
    let token = format!("{header}.{claims}.c2lnbmF0dXJl");
    let asked = Instant::now();
    let refused = client
        .get(faults.url("ok"))
        .bearer_auth(&token)
        .send()
        .expect("a token request is answered while the issuer hangs");
    assert_eq!(refused.status(), 401);
    let waited = asked.elapsed();
    assert!(
        waited < Duration::from_secs(4),
        "the request waited {waited:?}"
    );
    assert_eq!(
        faults.metric(
            "tollgate_decisions_total{status=\"401\",reason=\"token_issuer_keys_unavailable\"}"
        ),
        1
    );
    assert!(faults.metric("tollgate_jwks_fetches_total{issuer=\"stuck\",result=\"error\"}") >= 2);
    let stderr = std::fs::read_to_string(faults.dir.path().join("stderr")).unwrap_or_default();
    assert!(stderr.contains("no answer within 1s"), "{stderr}");
    // The start waited one bound for the issuer, not the background refresh's 10 s.
    assert!(
        start_took < Duration::from_secs(8),
        "start took {start_took:?}"
    );
}

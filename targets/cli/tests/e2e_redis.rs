//! Two `tollgate serve` instances sharing rate-limit state in a real `redis-server` on
//! 127.0.0.1: the limit holds across both, exactly, under concurrency, also when several
//! limits apply to one request; Redis going away fails closed, and its return recovers
//! without restarting serve.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tollgate_conformance::process::{faulty_origin, free_port, redis_server, Proc};

const POLICY: &str = r#"
[gateway]
realm = "Shared limits"

[origin]
git = "service-token"
service_user = "svc"
service_token_secret = "svc-token"

[[grant]]
who = "*"
repos = "acme/*"
access = "read"

# Anonymous callers are limited per client address: every request here is 127.0.0.1.
[[rate_limit]]
name = "anonymous"
who = "anonymous"
requests = 10
period_seconds = 3600
"#;

struct Gateway {
    port: u16,
    admin_port: u16,
    _proc: Proc,
}

fn serve(dir: &Path, origin_port: u16, redis_port: u16, name: &str) -> Gateway {
    serve_with(dir, origin_port, redis_port, name, &[])
}

fn serve_with(
    dir: &Path,
    origin_port: u16,
    redis_port: u16,
    name: &str,
    extra: &[&str],
) -> Gateway {
    let port = free_port();
    let admin_port = free_port();
    let stderr = File::create(dir.join(format!("{name}.stderr"))).expect("stderr");
    let proc = Proc::start(
        "tollgate serve",
        Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["serve", "--policy"])
            .arg(dir.join("policy.toml"))
            .arg("--secrets")
            .arg(dir.join("secrets.json"))
            .arg("--audit-log")
            .arg(dir.join(format!("{name}.audit")))
            .args(["--origin", &format!("http://127.0.0.1:{origin_port}")])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
            .args(["--rate-store", &format!("redis://127.0.0.1:{redis_port}/0")])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(stderr),
        port,
    );
    Gateway {
        port,
        admin_port,
        _proc: proc,
    }
}

/// Two limits on git requests, one of them on everything.
const TWO_LIMITS: &str = r#"
[origin]
git = "service-token"
service_user = "svc"
service_token_secret = "svc-token"

[[grant]]
who = "*"
repos = "acme/*"
access = "read"

[[rate_limit]]
name = "everything"
who = "anonymous"
requests = 10
period_seconds = 3600

[[rate_limit]]
name = "git"
who = "anonymous"
class = "git"
requests = 4
period_seconds = 3600
"#;

const GIT_PATH: &str = "/acme/ok.git/info/refs?service=git-upload-pack";
const WEB_PATH: &str = "/acme/ok/src/master";

fn get(port: u16) -> reqwest::blocking::Response {
    get_path(port, GIT_PATH)
}

fn get_path(port: u16, path: &str) -> reqwest::blocking::Response {
    reqwest::blocking::Client::new()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .timeout(Duration::from_secs(10))
        .send()
        .expect("answer")
}

/// The statuses of `count` concurrent requests for `path`, spread over `ports`.
fn concurrently(ports: &[u16], path: &'static str, count: usize) -> Vec<u16> {
    let threads: Vec<_> = (0..count)
        .map(|i| {
            let port = ports[i % ports.len()];
            std::thread::spawn(move || get_path(port, path).status().as_u16())
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("thread"))
        .collect()
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

fn retry_after(response: &reqwest::blocking::Response) -> u64 {
    response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .expect("retry-after")
}

fn metrics(gateway: &Gateway) -> String {
    reqwest::blocking::get(format!("http://127.0.0.1:{}/metrics", gateway.admin_port))
        .and_then(|r| r.text())
        .expect("metrics")
}

struct Setup {
    dir: tempfile::TempDir,
    origin_port: u16,
    _origin: Proc,
}

fn setup() -> Setup {
    setup_with(POLICY)
}

fn setup_with(policy: &str) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("policy.toml"), policy).expect("policy");
    std::fs::write(dir.path().join("secrets.json"), r#"{"svc-token": "t"}"#).expect("secrets");
    let origin_port = free_port();
    let origin = faulty_origin(origin_port);
    Setup {
        dir,
        origin_port,
        _origin: origin,
    }
}

#[test]
fn two_instances_enforce_one_limit_exactly() {
    let setup = setup();
    let redis_port = free_port();
    let _redis = redis_server(redis_port);
    let a = serve(setup.dir.path(), setup.origin_port, redis_port, "a");
    let b = serve(setup.dir.path(), setup.origin_port, redis_port, "b");

    // 16 concurrent requests over both instances, against a limit of 10: exactly 10 pass.
    let statuses = concurrently(&[a.port, b.port], GIT_PATH, 16);
    assert_eq!(count(&statuses, 200), 10, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 6, "{statuses:?}");

    // The next one, on either instance, waits as one instance alone would make it wait:
    // one request's share of the hour (360 s).
    for gateway in [&a, &b] {
        let refused = get(gateway.port);
        assert_eq!(refused.status(), 429);
        let retry = retry_after(&refused);
        assert!((355..=360).contains(&retry), "retry-after {retry}");
    }
}

#[test]
fn every_limit_applies_and_refused_requests_consume_nothing() {
    let setup = setup_with(TWO_LIMITS);
    let redis_port = free_port();
    let _redis = redis_server(redis_port);
    let a = serve(setup.dir.path(), setup.origin_port, redis_port, "a");
    let b = serve(setup.dir.path(), setup.origin_port, redis_port, "b");
    let ports = [a.port, b.port];

    // Git requests fall under both limits: the git limit (4) admits exactly 4 of 12.
    let git = concurrently(&ports, GIT_PATH, 12);
    assert_eq!(count(&git, 200), 4, "{git:?}");
    assert_eq!(count(&git, 429), 8, "{git:?}");

    // The 8 refused ones took nothing from `everything`: 6 of its 10 are left for pages.
    let web = concurrently(&ports, WEB_PATH, 12);
    assert_eq!(count(&web, 200), 6, "{web:?}");
    assert_eq!(count(&web, 429), 6, "{web:?}");

    // Both refuse a git request now; the Retry-After is the longer wait, the git limit's
    // share of the hour (900 s) rather than `everything`'s (360 s).
    let refused = get(a.port);
    assert_eq!(refused.status(), 429);
    let retry = retry_after(&refused);
    assert!((895..=900).contains(&retry), "retry-after {retry}");
}

#[test]
fn redis_going_away_fails_closed_and_its_return_recovers() {
    let setup = setup();
    let redis_port = free_port();
    let mut redis = redis_server(redis_port);
    let a = serve(setup.dir.path(), setup.origin_port, redis_port, "a");
    assert_eq!(get(a.port).status(), 200);

    redis.terminate();
    let refused = get(a.port);
    assert_eq!(refused.status(), 503);
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let revision = policy_core::Engine::from_toml(POLICY, "policy.toml")
        .expect("policy")
        .revision()
        .to_owned();
    let exposition = metrics(&a);
    assert!(
        exposition.contains(&format!(
            "\ntollgate_policy_info{{revision=\"{revision}\"}} 1\n"
        )),
        "{exposition}"
    );
    assert!(
        exposition.contains("tollgate_rate_store_errors_total 1\n")
            || exposition.contains("tollgate_rate_store_errors_total 2\n"),
        "{exposition}"
    );
    // The audit writer takes what is queued every few milliseconds.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let audit = std::fs::read_to_string(setup.dir.path().join("a.audit")).unwrap_or_default();
        if audit.contains("\"reason\":\"rate_store_unavailable\"") {
            // Every record names the policy that decided.
            assert!(
                audit.contains(&format!("\"policy_revision\":\"{revision}\"")),
                "{audit}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{audit}");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Back on the same port (empty, as after a restart): serve reconnects by itself.
    let _redis = redis_server(redis_port);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = get(a.port).status();
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(
            Instant::now() < deadline,
            "serve never recovered after Redis came back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn failure_allow_admits_unchecked_while_redis_is_away_and_counts_it() {
    let setup = setup();
    let redis_port = free_port();
    let mut redis = redis_server(redis_port);
    let a = serve_with(
        setup.dir.path(),
        setup.origin_port,
        redis_port,
        "a",
        &["--rate-store-failure", "allow"],
    );
    assert_eq!(get(a.port).status(), 200);
    redis.terminate();
    // Past the limit of 10 too: nothing is checked while Redis is away.
    for _ in 0..12 {
        assert_eq!(get(a.port).status(), 200);
    }
    let exposition = metrics(&a);
    assert!(
        exposition.contains("tollgate_rate_store_errors_total 12\n"),
        "{exposition}"
    );
}

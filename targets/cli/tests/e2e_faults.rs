//! `tollgate serve` under faults: a real misbehaving origin (`tests/e2e/faulty_origin.py`)
//! and misbehaving clients on 127.0.0.1, with timeouts of a second so every case is
//! bounded. Each case checks the status the client gets, the outcome record the audit
//! log gets, and the metrics. (Half-open connections by the thousand: e2e_slowloris.rs.)

mod faults;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use base64ct::Encoding;
use serde_json::Value;

use faults::{client, Faults};

#[test]
fn an_unreachable_origin_is_a_502_recorded_as_such() {
    let faults = Faults::start(false, &[]);
    let answer = client().get(faults.url("ok")).send().expect("answer");
    assert_eq!(answer.status(), 502);
    let outcome = faults.outcome(0);
    assert_eq!(outcome["failure"], "origin_connect", "{outcome}");
    assert_eq!(outcome["origin_status"], Value::Null, "{outcome}");
    faults.assert_metric(
        "tollgate_exchange_failures_total{kind=\"origin_connect\"}",
        1,
    );
    drop(answer);
    faults.assert_nothing_held(0);
}

/// An origin whose accept queue is full: its kernel drops further SYNs, so a connection
/// to it neither succeeds nor is refused.
fn origin_that_never_accepts() -> (socket2::Socket, Vec<socket2::Socket>, u16) {
    use socket2::{Domain, Socket, Type};
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    listener
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .expect("addr")
                .into(),
        )
        .expect("bind");
    listener.listen(0).expect("listen");
    let addr = listener.local_addr().expect("addr");
    let held = (0..4)
        .map(|_| {
            let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
            socket.set_nonblocking(true).expect("nonblocking");
            let _ = socket.connect(&addr);
            socket
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let port = addr.as_socket().expect("inet").port();
    (listener, held, port)
}

#[test]
fn an_origin_that_never_accepts_is_a_504_after_the_connect_timeout() {
    let (_listener, _held, origin_port) = origin_that_never_accepts();
    let origin = format!("http://127.0.0.1:{origin_port}");
    // The connect timeout (1 s) well inside the origin's time to answer, as by default.
    let faults = Faults::start(
        false,
        &["--origin", &origin, "--origin-header-timeout", "5"],
    );
    let started = Instant::now();
    let answer = client().get(faults.url("ok")).send().expect("answer");
    assert_eq!(answer.status(), 504, "{}", faults.stderr());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let outcome = faults.outcome(0);
    assert_eq!(outcome["failure"], "origin_connect_timeout", "{outcome}");
    faults.assert_metric(
        "tollgate_exchange_failures_total{kind=\"origin_connect_timeout\"}",
        1,
    );
    faults.assert_metric(
        "tollgate_exchange_failures_total{kind=\"origin_connect\"}",
        0,
    );
    drop(answer);
    faults.assert_nothing_held(0);
}

/// An origin that takes the request head and stops reading: the client's push keeps
/// coming, but nothing moves it on. Cut after the idle timeout, with a 504, rather than
/// held for as long as the client cares to wait.
#[test]
fn an_origin_that_stops_reading_an_upload_is_a_504_after_the_idle_timeout() {
    let faults = Faults::start(true, &["--origin-header-timeout", "30"]);
    let mut stream = TcpStream::connect(("127.0.0.1", faults.port)).expect("connect");
    let total = 256 << 20;
    stream
        .write_all(
            format!(
                "POST /acme/hang.git/git-receive-pack HTTP/1.1\r\nHost: x\r\n\
                 Content-Type: application/x-git-receive-pack-request\r\n\
                 Content-Length: {total}\r\n\r\n"
            )
            .as_bytes(),
        )
        .expect("head");
    let mut writer = stream.try_clone().expect("clone");
    // The client pushes as fast as it is let; its writes block once every buffer between
    // it and the origin is full, and fail once serve gives up.
    let pusher = std::thread::spawn(move || {
        let chunk = vec![b'p'; 1 << 16];
        let mut sent = 0usize;
        while sent < total && writer.write_all(&chunk).is_ok() {
            sent += chunk.len();
        }
        sent
    });
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let started = Instant::now();
    let mut answer = vec![0u8; 4096];
    let n = stream.read(&mut answer).expect("an answer within 20 s");
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(
        answer.starts_with("HTTP/1.1 504"),
        "{answer}\nserve said: {}",
        faults.stderr()
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let sent = pusher.join().expect("pusher");
    assert!(
        sent < total,
        "the whole body went through: the origin was reading after all"
    );
    let outcome = faults.outcome(0);
    assert_eq!(outcome["failure"], "origin_not_reading", "{outcome}");
    assert!(
        outcome["bytes_from_client"].as_u64().unwrap_or(0) > 0,
        "{outcome}"
    );
    faults.assert_metric(
        "tollgate_exchange_failures_total{kind=\"origin_not_reading\"}",
        1,
    );
    faults.assert_nothing_held(0);
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
    faults.assert_metric(
        "tollgate_exchange_failures_total{kind=\"origin_headers_timeout\"}",
        1,
    );
    drop(answer);
    faults.assert_nothing_held(0);
}

#[test]
fn a_body_that_stalls_or_resets_is_cut_and_recorded() {
    let faults = Faults::start(true, &[]);
    for (n, mode, failure) in [(0, "stall", "origin_stalled"), (1, "reset", "origin_reset")] {
        let answer = client().get(faults.url(mode)).send().expect("answer");
        assert_eq!(
            answer.status(),
            200,
            "{mode}\nserve said: {}",
            faults.stderr()
        );
        assert!(
            answer.bytes().is_err(),
            "{mode}: the cut body read as complete"
        );
        let outcome = faults.outcome(n);
        assert_eq!(outcome["failure"], failure, "{outcome}");
        assert_eq!(outcome["origin_status"], 200, "{outcome}");
        assert_eq!(outcome["bytes_to_client"], 4096, "{outcome}");
    }
    faults.assert_nothing_held(0);
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
    // The origin connection that completed goes back to the pool.
    faults.assert_nothing_held(1);
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
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "{answer}\nserve said: {}",
        faults.stderr()
    );
    let outcome = faults.outcome(0);
    assert_eq!(outcome["failure"], "client_stalled", "{outcome}");
    assert_eq!(outcome["bytes_from_client"], 10, "{outcome}");
    faults.assert_metric(
        "tollgate_exchange_failures_total{kind=\"client_stalled\"}",
        1,
    );
    drop(stream);
    faults.assert_nothing_held(0);
}

#[test]
fn a_client_that_stalls_mid_head_gets_408_counted_and_audited() {
    let faults = Faults::start(true, &["--header-timeout", "1"]);
    let mut stream = TcpStream::connect(("127.0.0.1", faults.port)).expect("connect");
    stream
        .write_all(b"GET /acme/ok.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: x\r\n")
        .expect("write");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n")
            && answer.contains("\r\nConnection: close\r\n")
            && answer.ends_with("\r\n\r\nthe request head did not arrive\n"),
        "{answer}\nserve said: {}",
        faults.stderr()
    );
    faults.assert_metric(
        "tollgate_exchange_failures_total{kind=\"client_header_timeout\"}",
        1,
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let record = loop {
        let records = tollgate_conformance::world::read_jsonl(&faults.audit_path());
        if let Some(record) = records
            .into_iter()
            .find(|r| r["outcome"]["failure"] == "client_header_timeout")
        {
            break record;
        }
        assert!(Instant::now() < deadline, "no header timeout audited");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(record["client_ip"], "127.0.0.1", "{record}");
    assert_eq!(record["outcome"]["bytes_to_client"], 144, "{record}");
    // A connection that sends nothing is not owed an answer, nor counted as a failure.
    let mut silent = TcpStream::connect(("127.0.0.1", faults.port)).expect("connect");
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut nothing = Vec::new();
    let _ = silent.read_to_end(&mut nothing);
    assert!(nothing.is_empty(), "{}", String::from_utf8_lossy(&nothing));
    faults.assert_metric(
        "tollgate_exchange_failures_total{kind=\"client_header_timeout\"}",
        1,
    );
    drop((stream, silent));
    faults.assert_nothing_held(0);
}

/// A request head past the 64 KiB a connection may buffer is refused, not buffered.
#[test]
fn a_request_head_too_large_to_buffer_is_refused() {
    let faults = Faults::start(true, &[]);
    let mut stream = TcpStream::connect(("127.0.0.1", faults.port)).expect("connect");
    let padding = "p".repeat(100 * 1024);
    let _ = stream.write_all(
        format!("GET /acme/ok.git/info/refs HTTP/1.1\r\nHost: x\r\nX-Padding: {padding}\r\n\r\n")
            .as_bytes(),
    );
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut answer = vec![0u8; 1024];
    let n = stream.read(&mut answer).expect("an answer");
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    drop(stream);
    faults.assert_nothing_held(0);
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
    faults.assert_metric("tollgate_shed_total{limit=\"in_flight\"}", 1);
    for thread in hanging {
        assert_eq!(thread.join().expect("thread").expect("answer"), 504);
    }
    // Their places are free again.
    let answer = client().get(faults.url("ok")).send().expect("answer");
    assert_eq!(answer.status(), 200);
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
    faults.assert_metric(
        "tollgate_decisions_total{status=\"401\",reason=\"token_issuer_keys_unavailable\"}",
        1,
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

/// An issuer whose JWKS endpoint stops answering after serve has its keys (the real
/// OpenID provider, stopped with SIGSTOP: its port still takes connections, nothing comes
/// back): refreshes fall due and hang, yet a token its last good keys verify is answered
/// at once, and a token naming an unknown key waits for its own fetch only the request
/// bound before it is refused.
#[test]
fn a_jwks_endpoint_that_hangs_at_refresh_holds_no_request() {
    let world = tollgate_conformance::world::World::start();
    let tollgate = std::path::Path::new(env!("CARGO_BIN_EXE_tollgate"));
    let admin = tollgate_conformance::process::free_port();
    let admin_flag = format!("127.0.0.1:{admin}");
    let (_serve, port) = world.serve(
        tollgate,
        &[
            "--audit-log",
            "/dev/null",
            "--admin-listen",
            &admin_flag,
            "--jwks-refresh",
            "1",
            "--jwks-min-refresh-gap",
            "1",
            "--jwks-request-timeout",
            "1",
            "--token-cache-max-age",
            "1",
        ],
    );
    let url = format!("http://127.0.0.1:{port}/acme/app.git/info/refs?service=git-upload-pack");
    let first = world.token("alice", "es256");
    let later = world.token("alice", "es256");
    let ask = |token: &str| {
        let asked = Instant::now();
        let status = client()
            .get(&url)
            .bearer_auth(token)
            .send()
            .expect("answer")
            .status()
            .as_u16();
        (status, asked.elapsed())
    };
    assert_eq!(ask(&first).0, 200);

    let stop = |signal: &str| {
        let status = std::process::Command::new("kill")
            .args([signal, &world.idp.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    };
    stop("-STOP");
    // Refreshes fall due every second and hang (the background's own 10 s bound).
    std::thread::sleep(Duration::from_millis(2500));
    let (status, took) = ask(&later);
    let (unknown, unknown_took) = {
        let (_, rest) = later.split_once('.').expect("a JWT");
        let header = base64ct::Base64UrlUnpadded::encode_string(
            br#"{"alg":"ES256","kid":"rotated-away","typ":"at+jwt"}"#,
        );
        ask(&format!("{header}.{rest}"))
    };
    let metrics = reqwest::blocking::get(format!("http://127.0.0.1:{admin}/metrics"))
        .and_then(|r| r.text())
        .expect("metrics");
    stop("-CONT");
    assert_eq!(status, 200, "a token the last good keys verify was refused");
    assert!(
        took < Duration::from_millis(900),
        "it waited {took:?} on the hanging refresh"
    );
    assert_eq!(unknown, 401);
    assert!(
        unknown_took < Duration::from_secs(3),
        "a key miss waited {unknown_took:?}"
    );
    assert!(
        metrics.contains("tollgate_jwks_fetches_total{issuer=\"e2e\",result=\"error\"}"),
        "{metrics}"
    );
}

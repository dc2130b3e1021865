//! `tollgate serve` against a slowloris: rounds of a thousand half-open connections
//! against a limit of twenty, then as many under the default limit, which leaves room for
//! normal clients. Apart from the other fault tests (its own test binary), so that its
//! thousands of sockets do not crowd their one-second timings.

mod faults;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use faults::{client, Faults};

#[test]
fn half_open_connections_are_capped_and_released_at_the_header_timeout() {
    let faults = Faults::start(true, &["--max-connections", "20", "--header-timeout", "3"]);
    let answer = client().get(faults.url("ok")).send().expect("answer");
    assert_eq!(answer.status(), 200);
    let baseline_fds = faults.tollgate.open_fds();
    let per_round = half_open_per_round();
    let mut rss_after_round = Vec::new();
    for round in 1..=3u64 {
        let held = half_open(&faults, per_round);
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
        // Each held connection has its socket and, until its first head is whole, a
        // duplicate to answer 408 through; those over the cap are closed once told 503
        // (which a loaded machine may take a moment to get to).
        let deadline = Instant::now() + Duration::from_secs(3);
        while faults.tollgate.open_fds() > baseline_fds + 2 * 20 + 5 {
            assert!(
                Instant::now() < deadline,
                "more sockets than the cap: {} open, {baseline_fds} before",
                faults.tollgate.open_fds()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
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

/// Under the default connection limit (what the descriptor limit leaves room for), the
/// same attack leaves room: a normal client is served at once while every half-open
/// connection is held, and each of those gets its 408 at the header timeout.
#[test]
fn half_open_connections_under_the_default_limit_leave_normal_clients_served() {
    let faults = Faults::start(true, &["--header-timeout", "3"]);
    let baseline_fds = faults.tollgate.open_fds();
    let count = half_open_per_round();
    let held = half_open(&faults, count);
    assert_eq!(held.len(), count);
    let deadline = Instant::now() + Duration::from_secs(3);
    while faults.metric("tollgate_connections_open") < count as u64 {
        assert!(Instant::now() < deadline, "{}", faults.metrics());
        std::thread::sleep(Duration::from_millis(20));
    }
    let asked = Instant::now();
    let answer = client().get(faults.url("ok")).send().expect("answer");
    assert_eq!(answer.status(), 200);
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
    faults.assert_metric("tollgate_shed_total{limit=\"connections\"}", 0);
    // Every held connection is answered 408 and closed at the header timeout.
    let answered = held
        .into_iter()
        .filter(|stream| {
            let mut stream = stream.try_clone().expect("clone");
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer);
            answer.starts_with(b"HTTP/1.1 408 ")
        })
        .count();
    assert_eq!(answered, count);
    let deadline = Instant::now() + Duration::from_secs(5);
    while faults.tollgate.open_fds() > baseline_fds + 1 {
        assert!(
            Instant::now() < deadline,
            "{} descriptors open, {baseline_fds} before",
            faults.tollgate.open_fds()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `count` clients that send half a request head and wait (slowloris).
fn half_open(faults: &Faults, count: usize) -> Vec<TcpStream> {
    (0..count)
        .filter_map(|_| {
            let mut stream = TcpStream::connect(("127.0.0.1", faults.port)).ok()?;
            stream
                .write_all(b"GET /acme/ok.git/info/refs HTTP/1.1\r\nHost: x\r\n")
                .ok()?;
            Some(stream)
        })
        .collect()
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

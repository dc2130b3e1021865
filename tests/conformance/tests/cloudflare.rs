//! The Cloudflare Worker under `wrangler dev` (workerd): the conformance corpus, and real
//! git traffic through the Worker to a local Git origin with a local identity provider.

use std::time::Duration;

use std::sync::Mutex;

use serde_json::Value;
use tollgate_conformance::cloudflare::{start_wrangler, start_wrangler_with, Cloudflare};
use tollgate_conformance::gogs_webhook::{
    assert_bad_deliveries_refused, deliver, push_payload, sign, ACCEPTED_DELIVERY, JSON, SECRET,
    WEBHOOK,
};
use tollgate_conformance::world::{gateway_git_scenarios, World, SCENARIO_REASONS};
use tollgate_conformance::{run, MIN_CORPUS_CASES};

/// One `wrangler dev` at a time: each starts internal servers on ports of its own
/// choosing, which another starting beside it can take before binding its own.
static ONE_WRANGLER: Mutex<()> = Mutex::new(());

#[test]
fn worker_passes_the_corpus() {
    let _one = ONE_WRANGLER.lock().unwrap_or_else(|p| p.into_inner());
    run(&mut Cloudflare::default()).assert_clean(MIN_CORPUS_CASES);
}

#[test]
fn git_through_the_worker() {
    let _one = ONE_WRANGLER.lock().unwrap_or_else(|p| p.into_inner());
    let world = World::start();
    let worker = start_wrangler(&[
        ("TOLLGATE_POLICY", &world.policy()),
        ("TOLLGATE_ORIGIN", &world.origin_url()),
        ("TOLLGATE_SECRETS", &world.secrets_json()),
    ]);
    gateway_git_scenarios(&world, &worker.url(), &|| worker.log());

    // One audit line per decision, Logpush-ready JSON on the Worker's console.
    std::thread::sleep(Duration::from_millis(300));
    let audit = worker.audit();
    let reasons: Vec<&str> = audit.iter().filter_map(|a| a["reason"].as_str()).collect();
    for expected in SCENARIO_REASONS {
        assert!(
            reasons.contains(expected),
            "no `{expected}` audit record in {reasons:?}"
        );
    }
}

/// Gogs webhook deliveries to the Worker: a signed push reaches the queue exactly once (a
/// consumer Worker beside it logs what it receives), and the deliveries every host must
/// refuse (replayed, forged, unsigned, another repository or event, oversize) are refused
/// and never reach it.
#[test]
fn webhooks_through_the_worker_reach_the_queue_once() {
    let _one = ONE_WRANGLER.lock().unwrap_or_else(|p| p.into_inner());
    const DELIVERY: &str = ACCEPTED_DELIVERY;
    let consumer =
        tollgate_conformance::process::repo().join("tests/e2e/queue-consumer/wrangler.toml");
    let worker = start_wrangler_with(
        &[
            ("TOLLGATE_POLICY", WEBHOOK),
            ("TOLLGATE_ORIGIN", "http://127.0.0.1:9"),
            (
                "TOLLGATE_SECRETS",
                &format!(r#"{{"hook-secret": "{SECRET}"}}"#),
            ),
        ],
        "\n[[queues.producers]]\nbinding = \"TOLLGATE_EVENTS\"\nqueue = \"tollgate-events\"\n",
        &[&consumer],
    );
    let url = format!("{}/_tollgate/hooks/gogs", worker.url());
    let payload = push_payload("acme/app");
    let signature = sign(&payload, SECRET);
    let (status, answer) = deliver(&url, "push", DELIVERY, JSON, &payload, &signature);
    assert_eq!(
        (status, &answer["result"]),
        (202, &Value::from("accepted")),
        "{answer}\n{}",
        worker.log()
    );

    assert_bad_deliveries_refused(&url);
    // An oversize body that announces no length (chunked) is cut off at the limit too.
    let big = push_payload(&format!("acme/{}", "y".repeat(9000)));
    let chunked = reqwest::blocking::Client::new()
        .post(&url)
        .header("X-Gogs-Delivery", "5f0e8a52-0000-4000-8000-000000000009")
        .header("X-Gogs-Event", "push")
        .header("X-Gogs-Signature", sign(&big, SECRET))
        .header("Content-Type", JSON)
        .body(reqwest::blocking::Body::new(std::io::Cursor::new(
            big.into_bytes(),
        )))
        .send()
        .expect("answer");
    assert_eq!(chunked.status().as_u16(), 413);

    // The consumer gets the one accepted delivery (batches close after a second), and
    // only it, with the envelope the other hosts relay.
    let received = || -> Vec<Value> {
        worker
            .log()
            .lines()
            .filter_map(|l| l.find("{\"queue_message\"").map(|i| &l[i..]))
            .filter_map(|json| serde_json::from_str::<Value>(json).ok())
            .map(|line| line["queue_message"].clone())
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while received().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    let messages = received();
    assert_eq!(messages.len(), 1, "{messages:?}\n{}", worker.log());
    let envelope = &messages[0];
    assert_eq!(envelope["delivery"], DELIVERY);
    assert_eq!(envelope["event"], "push");
    assert_eq!(envelope["repository"], "acme/app");
    assert_eq!(envelope["ref"], "refs/heads/main");
    assert_eq!(envelope["pusher"], "alice");
    assert_eq!(
        envelope["payload"],
        serde_json::from_str::<Value>(&payload).expect("payload")
    );

    // Every delivery has its audit line, the same record serve writes.
    let audited: Vec<(u64, String)> = worker
        .audit()
        .iter()
        .filter(|r| r["webhook"] == "gogs-events")
        .map(|r| {
            (
                r["status"].as_u64().unwrap_or(0),
                r["reason"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    for (status, reason) in [
        (202, "accepted"),
        (409, "duplicate"),
        (401, "bad_signature"),
        (403, "repository_not_accepted"),
        (403, "event_not_accepted"),
        (413, "too_large"),
    ] {
        assert!(
            audited.contains(&(status, reason.to_owned())),
            "no {status} {reason} record in {audited:?}"
        );
    }
}

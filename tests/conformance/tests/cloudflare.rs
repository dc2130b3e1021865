//! The Cloudflare Worker under `wrangler dev` (workerd): the conformance corpus, and real
//! git traffic through the Worker to a local Git origin with a local identity provider.

use std::time::Duration;

use tollgate_conformance::cloudflare::{start_wrangler, Cloudflare};
use tollgate_conformance::world::{gateway_git_scenarios, World, SCENARIO_REASONS};
use tollgate_conformance::{run, MIN_CORPUS_CASES};

#[test]
fn worker_passes_the_corpus() {
    run(&mut Cloudflare::default()).assert_clean(MIN_CORPUS_CASES);
}

#[test]
fn git_through_the_worker() {
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

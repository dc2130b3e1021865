//! The Fastly Compute app under Viceroy: the conformance corpus, and real git traffic
//! through it to a local Git origin with keys from a local identity provider.

use tollgate_conformance::fastly::{start_viceroy, Fastly, ViceroyConfig};
use tollgate_conformance::world::{gateway_git_scenarios, World, BURST_KEY, SCENARIO_REASONS};
use tollgate_conformance::{run, MIN_CORPUS_CASES};

#[test]
fn fastly_app_passes_the_corpus() {
    run(&mut Fastly::default()).assert_clean(MIN_CORPUS_CASES);
}

fn secrets(world: &World) -> Vec<(String, String)> {
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&world.secrets_json()).expect("secrets");
    map.into_iter()
        .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_owned()))
        .collect()
}

fn jwks(world: &World) -> String {
    reqwest::blocking::get(format!("http://127.0.0.1:{}/jwks", world.idp_port))
        .and_then(|r| r.text())
        .expect("JWKS from the identity provider")
}

#[test]
fn git_through_the_fastly_app() {
    let world = World::start();
    let origin = world.origin_url();
    let app = start_viceroy(&ViceroyConfig {
        origin: &origin,
        config: vec![
            ("policy", world.policy()),
            ("jwks.e2e", jwks(&world)),
            ("rate_store", "kv".into()),
        ],
        secrets: secrets(&world),
    });
    // With `rate_store = "kv"` the limit is the engine's exact GCRA in the KV Store.
    gateway_git_scenarios(&world, &app.url(), &|| app.log());
    let reasons: Vec<String> = app
        .audit()
        .iter()
        .filter_map(|a| a["reason"].as_str().map(String::from))
        .collect();
    for expected in SCENARIO_REASONS {
        assert!(
            reasons.iter().any(|r| r == expected),
            "no `{expected}` audit record in {reasons:?}"
        );
    }
}

#[test]
fn edge_rate_limiting_is_the_default_store() {
    // Viceroy's ERL never limits, so this shows the production path runs and admits.
    let world = World::start();
    let origin = world.origin_url();
    let app = start_viceroy(&ViceroyConfig {
        origin: &origin,
        config: vec![("policy", world.policy()), ("jwks.e2e", jwks(&world))],
        secrets: secrets(&world),
    });
    let client = reqwest::blocking::Client::new();
    for _ in 0..4 {
        let status = client
            .get(format!(
                "{}/acme/app.git/info/refs?service=git-upload-pack",
                app.url()
            ))
            .header("authorization", format!("token {BURST_KEY}"))
            .send()
            .expect("request")
            .status();
        assert_eq!(status, 200, "{}", app.log());
    }
}

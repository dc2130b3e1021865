//! The engine answers every request, however malformed, without panicking, and every
//! denial is a denial: no allow without a 200, no 200 without an allow.

use policy_core::policy::Policy;
use policy_core::{Decision, NoKeys, NoSecrets, RequestFacts, UnixTime};
use proptest::prelude::*;

fn engine() -> policy_core::Engine {
    Policy::parse(
        include_str!("../../examples/policy.toml"),
        "examples/policy.toml",
    )
    .expect("example policy compiles")
    .engine
}

fn check(decision: &Decision) {
    // 200 is an allow, except for a document the gateway publishes itself (`[login]`).
    let published = decision.reason == policy_core::Reason::Published;
    assert_eq!(
        decision.allow,
        decision.status == 200 && !published,
        "{decision:?}"
    );
    if !decision.allow {
        assert!(
            decision.set.is_empty(),
            "a denial sets origin headers: {decision:?}"
        );
    }
}

fn path_strategy() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        Just("acme".to_owned()),
        Just("app.git".to_owned()),
        Just("info".to_owned()),
        Just("refs".to_owned()),
        Just("lfs".to_owned()),
        Just("api".to_owned()),
        Just("v1".to_owned()),
        Just("repos".to_owned()),
        Just("..".to_owned()),
        Just("%2e".to_owned()),
        Just("%2F".to_owned()),
        Just("".to_owned()),
        "[ -~]{0,12}",
        "\\PC{0,6}",
    ];
    proptest::collection::vec(segment, 0..8).prop_map(|segs| format!("/{}", segs.join("/")))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_requests(
        method in prop_oneof![Just("GET"), Just("POST"), Just("PUT"), Just("DELETE"), Just("get"), Just("PROPFIND")],
        path in prop_oneof![path_strategy(), "\\PC{0,40}"],
        query in "[ -~]{0,30}",
        auth in proptest::option::of(prop_oneof![
            "Bearer [ -~]{0,60}",
            "Basic [A-Za-z0-9+/=]{0,40}",
            "token [ -~]{0,20}",
            "[ -~]{0,30}",
            Just("Bearer a.b.c".to_owned()),
            Just("Bearer ..".to_owned()),
        ]),
        body in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
        now in any::<u64>(),
    ) {
        let engine = engine();
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let facts = RequestFacts { method, path: &path, query: &query, headers: &headers, body: body.as_deref(), client_ip: None, entropy: None };
        let decision = engine.decide_with_state(&facts, UnixTime::from_nanos(now), &NoKeys, &NoSecrets, &mut |_, s| s);
        check(&decision);
    }
}

#[test]
fn missing_secrets_fail_closed() {
    // Alice's token is valid and her grant allows the clone, but the host has no Gogs
    // token for her: the request must not go through without a credential.
    let engine = engine();
    let request = include_str!("../../examples/requests/alice-clone.json");
    let owned: policy_core::OwnedRequest = serde_json::from_str(request).expect("request JSON");
    let pairs = owned.header_pairs();
    let decision = engine.decide_with_state(
        &owned.facts(&pairs),
        UnixTime::from_secs(1_767_225_600),
        &NoKeys,
        &NoSecrets,
        &mut |_, s| s,
    );
    assert!(!decision.allow);
    assert_eq!(decision.status, 500);
    assert_eq!(decision.reason.code(), "origin_credential_missing");
}

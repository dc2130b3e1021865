//! Tollgate's steps side by side with what a user would pick instead, in the same run:
//! token verification against `jsonwebtoken` (aws-lc-rs backend), the authorization step
//! against `regorus` (Rego) and `cedar-policy` over one scope policy (src/authz.rs), the
//! rate-limit step against `governor`. Run: `cargo bench -p tollgate-benches --bench peers`.

use std::num::NonZeroU32;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use policy_core::{Access, Gcra, NoKeys, NoSecrets, RateState, UnixTime};
use serde_json::Value;
use tollgate_benches::authz::{queries, Caller, CedarScope, Query, RegoScope, TollgateScope};
use tollgate_benches::{case, corpus_policy};

/// The bearer token of a corpus case.
fn token(name: &str) -> String {
    let (policy, _) = corpus_policy("tokens.toml");
    let case = case(&policy, name);
    let auth = &case.request.headers["Authorization"].0[0];
    auth.trim_start_matches("Bearer ").to_owned()
}

/// A key of the main issuer's inline JWKS in tokens.toml.
fn jwk(kid: &str) -> Value {
    let (_, source) = corpus_policy("tokens.toml");
    let start = source.find("jwks = '").expect("inline JWKS") + "jwks = '".len();
    let end = start + source[start..].find('\'').expect("end of JWKS");
    let jwks: Value = serde_json::from_str(&source[start..end]).expect("JWKS JSON");
    jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["kid"] == kid)
        .expect("kid")
        .clone()
}

fn tokens(c: &mut Criterion) {
    let (policy, _) = corpus_policy("tokens.toml");
    let mut group = c.benchmark_group("token");
    for (alg, kid, name) in [
        ("ES256", "es1", "ES256 bearer"),
        ("RS256", "rs1", "RS256 bearer; the user name is lowercased"),
        ("EdDSA", "ed1", "EdDSA bearer"),
    ] {
        let token = token(name);
        // Tollgate: the whole decision (the token step dominates it).
        let case = case(&policy, name).clone();
        let pairs = case.request.header_pairs();
        let facts = case.request.facts(&pairs);
        group.bench_function(BenchmarkId::new("tollgate-decision", alg), |b| {
            b.iter(|| policy.engine.decide(&facts, case.now, &NoKeys, &NoSecrets))
        });
        // jsonwebtoken: signature, exp, iss and aud only.
        let jwk: jsonwebtoken::jwk::Jwk =
            serde_json::from_value(jwk(kid)).expect("jsonwebtoken JWK");
        let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).expect("decoding key");
        let algorithm = match alg {
            "ES256" => jsonwebtoken::Algorithm::ES256,
            "RS256" => jsonwebtoken::Algorithm::RS256,
            _ => jsonwebtoken::Algorithm::EdDSA,
        };
        let mut validation = jsonwebtoken::Validation::new(algorithm);
        validation.set_audience(&["gogs"]);
        validation.set_issuer(&["https://idp.conformance.test"]);
        jsonwebtoken::decode::<Value>(&token, &key, &validation)
            .expect("jsonwebtoken accepts the corpus token");
        group.bench_function(BenchmarkId::new("jsonwebtoken-aws-lc-rs", alg), |b| {
            b.iter(|| jsonwebtoken::decode::<Value>(&token, &key, &validation))
        });
    }
    group.finish();
}

fn authorization(c: &mut Criterion) {
    let tollgate = TollgateScope::load();
    let mut rego = RegoScope::load();
    let cedar = CedarScope::load();
    // One question: a member of two groups pushing, allowed by a group grant.
    let one = Query {
        caller: Caller::User {
            name: "bob",
            groups: &["developers", "ops"],
        },
        repo: "acme/web",
        access: Access::Write,
    };
    assert!(tollgate.allows(&one) && rego.allows(&one) && cedar.allows(&one));
    let mut group = c.benchmark_group("authorization/one-query");
    group.bench_function("tollgate", |b| b.iter(|| tollgate.allows(&one)));
    group.bench_function("regorus", |b| b.iter(|| rego.allows(&one)));
    group.bench_function("cedar-policy", |b| b.iter(|| cedar.allows(&one)));
    group.finish();

    // Every caller, repository and level of the agreement test, allowed or not.
    let all = queries();
    let mut group = c.benchmark_group("authorization/matrix");
    group.throughput(Throughput::Elements(all.len() as u64));
    group.bench_function("tollgate", |b| {
        b.iter(|| all.iter().filter(|q| tollgate.allows(q)).count())
    });
    group.bench_function("regorus", |b| {
        b.iter(|| all.iter().filter(|q| rego.allows(q)).count())
    });
    group.bench_function("cedar-policy", |b| {
        b.iter(|| all.iter().filter(|q| cedar.allows(q)).count())
    });
    group.finish();
}

fn rate_limits(c: &mut Criterion) {
    let mut group = c.benchmark_group("rate-limit");
    let gcra = Gcra::new(1_000_000, 1, 1_000_000).expect("quota");
    let mut state: Option<RateState> = None;
    let mut now = 1_767_225_600_000_000_000u64;
    group.bench_function("tollgate-gcra", |b| {
        b.iter(|| {
            now += 1_000;
            if let Ok(next) = gcra.check(state, UnixTime::from_nanos(now)) {
                state = Some(next);
            }
        })
    });
    let limiter = governor::RateLimiter::direct(governor::Quota::per_second(
        NonZeroU32::new(1_000_000).expect("non-zero"),
    ));
    group.bench_function("governor-direct", |b| b.iter(|| limiter.check()));
    group.finish();
}

criterion_group!(benches, tokens, authorization, rate_limits);
criterion_main!(benches);

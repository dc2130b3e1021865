//! The full decision for one request — credential extraction, token parse and signature,
//! claims, scope and rate limit — per algorithm, natively and inside the policy module
//! under wasmtime. Run: `cargo bench -p tollgate-benches`.

use std::collections::HashMap;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use policy_core::abi::{self, Decide, Init, Module, Op, SetSecrets, WireRequest, WireVerdict};
use policy_core::{NoKeys, RateState};
use tollgate_benches::{case, corpus_policy};
use tollgate_conformance::{build_wasm_module, corpus_secrets, map_rate_state};
use tollgate_wasmtime::{CompiledModule, PolicyInstance};

/// (label, corpus file, case name)
const CASES: &[(&str, &str, &str)] = &[
    (
        "HS256",
        "tokens.toml",
        "HS256 from the issuer that allows it",
    ),
    ("EdDSA", "tokens.toml", "EdDSA bearer"),
    ("ES256", "tokens.toml", "ES256 bearer"),
    (
        "RS256",
        "tokens.toml",
        "RS256 bearer; the user name is lowercased",
    ),
    ("PS256", "tokens.toml", "PS256 bearer"),
    ("api-key", "routes.toml", "clone: ref advertisement"),
    (
        "anonymous-denied",
        "routes.toml",
        "anonymous clone of a private repository gets a challenge, not a 404",
    ),
    ("rate-limited", "limits.toml", "within the limit"),
];

struct Secrets(HashMap<String, String>);

impl policy_core::SecretStore for Secrets {
    fn secret(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        self.0
            .get(name)
            .map(|v| std::borrow::Cow::Borrowed(v.as_str()))
    }
}

fn native(c: &mut Criterion) {
    let secrets = Secrets(corpus_secrets().into_iter().collect());
    let mut group = c.benchmark_group("decide/native");
    for (label, file, name) in CASES {
        let (policy, _) = corpus_policy(file);
        let case = case(&policy, name).clone();
        let pairs = case.request.header_pairs();
        let facts = case.request.facts(&pairs);
        let mut state: HashMap<String, RateState> = HashMap::new();
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter(|| {
                // A fresh state each time so rate-limited cases measure an admitted request.
                state.clear();
                policy.engine.decide_with_state(
                    &facts,
                    case.now,
                    &NoKeys,
                    &secrets,
                    &mut map_rate_state(&mut state),
                )
            })
        });
    }
    group.finish();
}

/// The signature algorithms with aws-lc as the crypto provider (native hosts' choice).
fn native_aws_lc(c: &mut Criterion) {
    let secrets = Secrets(corpus_secrets().into_iter().collect());
    let mut group = c.benchmark_group("decide/native-aws-lc");
    for (label, file, name) in CASES
        .iter()
        .filter(|(label, _, _)| ["RS256", "PS256", "ES256"].contains(label))
    {
        let (policy, _) = corpus_policy(file);
        let engine = policy
            .engine
            .clone()
            .with_crypto(&tollgate_host_kit::AWS_LC);
        let case = case(&policy, name).clone();
        let pairs = case.request.header_pairs();
        let facts = case.request.facts(&pairs);
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter(|| engine.decide(&facts, case.now, &NoKeys, &secrets))
        });
    }
    group.finish();
}

/// The same decisions with a warm verified-token cache: the signature check is skipped.
fn native_cached(c: &mut Criterion) {
    let secrets = Secrets(corpus_secrets().into_iter().collect());
    let mut group = c.benchmark_group("decide/native-cached");
    for (label, file, name) in CASES.iter().filter(|(_, file, _)| *file == "tokens.toml") {
        let (policy, _) = corpus_policy(file);
        let case = case(&policy, name).clone();
        let pairs = case.request.header_pairs();
        let facts = case.request.facts(&pairs);
        let tokens = std::cell::RefCell::new(policy_core::TokenCache::new(1024, 3600));
        let _ = policy
            .engine
            .decide_cached(&facts, case.now, &NoKeys, &secrets, &tokens);
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter(|| {
                policy
                    .engine
                    .decide_cached(&facts, case.now, &NoKeys, &secrets, &tokens)
            })
        });
    }
    group.finish();
}

/// What recording the explanation adds (`tollgate eval --explain`, `tollgate test`).
fn native_explained(c: &mut Criterion) {
    let secrets = Secrets(corpus_secrets().into_iter().collect());
    let mut group = c.benchmark_group("decide/native-explained");
    for (label, file, name) in CASES.iter().filter(|(label, _, _)| *label == "api-key") {
        let (policy, _) = corpus_policy(file);
        let case = case(&policy, name).clone();
        let pairs = case.request.header_pairs();
        let facts = case.request.facts(&pairs);
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter(|| {
                policy.engine.decide_explained(
                    &facts,
                    case.now,
                    &NoKeys,
                    &secrets,
                    &policy_core::NoTokenCache,
                )
            })
        });
    }
    group.finish();
}

fn wasmtime(c: &mut Criterion) {
    let module = CompiledModule::from_file(&build_wasm_module()).expect("policy module");
    let mut group = c.benchmark_group("decide/wasmtime");
    for (label, file, name) in CASES {
        let (policy, source) = corpus_policy(file);
        let case = case(&policy, name).clone();
        let mut instance = PolicyInstance::new(&module, &source, file).expect("instance");
        instance.set_secrets(&corpus_secrets()).expect("secrets");
        let pairs = case.request.header_pairs();
        let facts = case.request.facts(&pairs);
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter(|| {
                instance
                    .decide(&facts, case.now, false)
                    .expect("decision")
                    .resolve_with(&mut |_, _| None)
            })
        });
    }
    group.finish();
}

/// Where a module call's time goes beyond the decision, each half measured natively: the
/// module's operation linked natively (decode the request, decide, encode the answer), and
/// the host's half around the call (encode the request, decode the answer into a
/// `Verdict`, drop it). Compare with `decide/native` and `decide/wasmtime`.
fn module_abi(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide/module-abi");
    for (label, file, name) in CASES
        .iter()
        .filter(|(label, _, _)| ["api-key", "anonymous-denied"].contains(label))
    {
        let (policy, source) = corpus_policy(file);
        let case = case(&policy, name).clone();
        let pairs = case.request.header_pairs();
        let facts = case.request.facts(&pairs);
        let decide = |facts| Decide {
            request: WireRequest::from_facts(facts),
            now_nanos: case.now.as_nanos(),
            explain: false,
        };

        let mut module = Module::default();
        let mut answer = Vec::new();
        module_op::<_, abi::Loaded>(
            &mut module,
            Op::Init,
            &Init {
                policy: &source,
                file,
            },
            &mut answer,
        );
        let secrets = corpus_secrets();
        let secrets = SetSecrets {
            secrets: secrets
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            placeholder: false,
        };
        module_op::<_, usize>(&mut module, Op::SetSecrets, &secrets, &mut answer);
        let input = abi::encode(&decide(&facts));
        group.bench_function(BenchmarkId::new("module-ops-native", label), |b| {
            b.iter(|| {
                module.call(Op::Decide, &input, &mut answer);
                answer.len()
            })
        });

        // The answer the host half decodes, whichever of the two a filter picked.
        module.call(Op::Decide, &input, &mut answer);
        let mut encoded = Vec::new();
        group.bench_function(BenchmarkId::new("host-half", label), |b| {
            b.iter(|| {
                abi::encode_into(&decide(&facts), &mut encoded);
                let wire = abi::decode::<abi::Answer<WireVerdict>>(&answer)
                    .expect("answer")
                    .expect("verdict");
                policy_core::Verdict::try_from(wire).expect("verdict")
            })
        });
    }
    group.finish();
}

/// Runs one of the module's operations natively and checks it answered `Ok` with an `O`.
fn module_op<I: serde::Serialize, O: serde::de::DeserializeOwned>(
    module: &mut Module,
    op: Op,
    input: &I,
    answer: &mut Vec<u8>,
) -> O {
    module.call(op, &abi::encode(input), answer);
    abi::decode::<abi::Answer<O>>(answer)
        .expect("answer")
        .unwrap_or_else(|e| panic!("{op:?}: {e}"))
}

fn policy_compile(c: &mut Criterion) {
    let (_, source) = corpus_policy("tokens.toml");
    c.bench_function("policy/compile tokens.toml", |b| {
        b.iter(|| policy_core::policy::Policy::parse(&source, "tokens.toml").expect("policy"))
    });
}

criterion_group!(
    benches,
    native,
    native_aws_lc,
    native_cached,
    native_explained,
    wasmtime,
    module_abi,
    policy_compile
);
criterion_main!(benches);

use std::path::Path;
use std::process::Command;

use policy_core::policy::Policy;
use policy_core::{KeySet, KeyStore, NoKeys, OwnedRequest, UnixTime};
use serde_json::{json, Value};
use tollgate_conformance::node::{
    build_bundler_package, build_js_package, type_check, NodePackage,
};
use tollgate_conformance::process::{node22, repo};
use tollgate_conformance::{corpus_files, corpus_secrets, run, Target, MIN_CORPUS_CASES};

/// The whole corpus through the npm package under Node, each decision byte for byte the
/// native engine's.
#[test]
fn npm_package_under_node_passes_the_corpus() {
    let package = build_js_package();
    let report = run(&mut NodePackage::start(&package));
    report.assert_clean(MIN_CORPUS_CASES);
}

/// The package's TypeScript declarations, generated from the Rust types, type the README's
/// Worker example under `strict` and refuse each misuse in `targets/js/tests/types-misuse.ts`
/// (a misuse that compiles is an unused `@ts-expect-error`, which fails the check).
#[test]
fn typescript_declarations_type_the_worker_example_and_refuse_misuse() {
    let package = build_js_package();
    let declarations = std::fs::read_to_string(package.join("tollgate_policy.d.ts")).unwrap();
    for typed in [
        "decide(request: Request, options?: Options): Verdict;",
        "readonly decision: Decision | undefined;",
        "export type Reason =",
    ] {
        assert!(declarations.contains(typed), "declarations lack `{typed}`");
    }
    let (passed, output) = type_check(&package);
    assert!(passed && output.trim().is_empty(), "tsc:\n{output}");
}

fn native_outcomes(source: &str, file: &str) -> Value {
    let policy = Policy::parse(source, file).unwrap();
    let secrets = SecretsFromMap(corpus_secrets());
    let outcomes: Vec<Value> = policy
        .run_tests(&NoKeys, &secrets)
        .iter()
        .map(|r| {
            json!({
                "name": r.case.name,
                "line": r.case.position.line,
                "passed": r.passed(),
                "mismatches": r.mismatches,
            })
        })
        .collect();
    Value::Array(outcomes)
}

#[derive(Debug)]
struct SecretsFromMap(std::collections::BTreeMap<String, String>);

impl policy_core::SecretStore for SecretsFromMap {
    fn secret(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        self.0
            .get(name)
            .map(|v| std::borrow::Cow::Borrowed(v.as_str()))
    }
}

/// `runTests()` reports every `[[test]]` case as `tollgate test` does: the example policy
/// and every corpus file pass case for case, and a case made to fail fails with the same
/// mismatch in both.
#[test]
fn run_tests_reports_what_the_native_runner_reports() {
    let package = build_js_package();
    let mut node = NodePackage::start(&package);
    let options = json!({ "secrets": corpus_secrets() });
    let example = repo().join("examples/policy.toml");
    let mut files = corpus_files();
    files.push(example.clone());
    for path in &files {
        let file = path.display().to_string();
        let source = std::fs::read_to_string(path).unwrap();
        node.load(&source, &file).unwrap();
        let outcomes = node.run_tests(&options).unwrap();
        assert_eq!(outcomes, native_outcomes(&source, &file), "{file}");
        let cases = outcomes.as_array().unwrap();
        assert!(!cases.is_empty(), "{file} has no cases");
        assert!(
            cases.iter().all(|c| c["passed"] == true),
            "{file}: {outcomes}"
        );
    }

    // The example's first allow expected as a 403 instead.
    let source = std::fs::read_to_string(&example).unwrap();
    let broken = source.replacen(
        "expect = { allow = true, status = 200, user = \"alice\"",
        "expect = { allow = true, status = 403, user = \"alice\"",
        1,
    );
    assert_ne!(broken, source, "the example's case to break has moved");
    node.load(&broken, "broken.toml").unwrap();
    let outcomes = node.run_tests(&options).unwrap();
    assert_eq!(outcomes, native_outcomes(&broken, "broken.toml"));
    let failed: Vec<&Value> = outcomes
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["passed"] == false)
        .collect();
    assert_eq!(failed.len(), 1, "{outcomes}");
    assert_eq!(
        failed[0]["mismatches"],
        json!(["status: expected 403, got 200"])
    );
}

/// `options.keys` hands `decide` the JWKS of an issuer that fetches its keys: with them a
/// token verifies (the native engine's decision, byte for byte), without them it is a 401
/// naming the missing keys, and a bad document is refused naming its issuer.
#[test]
fn decide_takes_fetched_keys_through_its_options() {
    let package = build_js_package();
    let mut node = NodePackage::start(&package);
    let corpus = std::fs::read_to_string(repo().join("tests/corpus/login.toml")).unwrap();
    let policy_text = Policy::parse(&corpus, "login.toml").unwrap();
    let case = policy_text
        .tests
        .iter()
        .find(|c| c.name == "git still works beside it")
        .expect("the login corpus' git case");
    // The same issuer, its keys fetched from a URL instead of written inline.
    let (before, rest) = corpus.split_once("jwks = '").unwrap();
    let (jwks, after) = rest.split_once('\'').unwrap();
    let fetching = format!("{before}jwks_url = \"https://idp.conformance.test/jwks\"{after}");
    node.load(&fetching, "fetching.toml").unwrap();
    let now = case.now.as_secs();
    let request = serde_json::to_value(&case.request).unwrap();

    let with_keys = node
        .decide_with(&request, &json!({ "now": now, "keys": { "corp": jwks } }))
        .unwrap();
    let engine = Policy::parse(&fetching, "fetching.toml").unwrap().engine;
    let keys = FetchedKeys(KeySet::from_fetched_json(jwks).unwrap());
    let pairs = case.request.header_pairs();
    let native = engine
        .decide(
            &case.request.facts(&pairs),
            case.now,
            &keys,
            &policy_core::PlaceholderSecrets,
        )
        .resolve_with(&mut |_, _| None)
        .to_json();
    assert_eq!(with_keys, native);
    let decided: Value = serde_json::from_str(&with_keys).unwrap();
    assert_eq!(
        (
            decided["allow"].clone(),
            decided["identity"]["user"].clone()
        ),
        (json!(true), json!("alice"))
    );

    let without: Value =
        serde_json::from_str(&node.decide_with(&request, &json!({ "now": now })).unwrap()).unwrap();
    assert_eq!(
        (without["status"].clone(), without["reason"].clone()),
        (json!(401), json!("token_issuer_keys_unavailable"))
    );

    let refused = node
        .decide_with(
            &request,
            &json!({ "now": now, "keys": { "corp": "{\"keys\": 5}" } }),
        )
        .unwrap_err();
    assert!(refused.contains("keys.corp"), "{refused}");
}

#[derive(Debug)]
struct FetchedKeys(KeySet);

impl KeyStore for FetchedKeys {
    fn key_set(&self, issuer: &str) -> Option<&KeySet> {
        (issuer == "corp").then_some(&self.0)
    }
}

/// The bundler flavour (ES modules that import the WASM as a module, as webpack and Vite
/// resolve it) runs: under Node 22 with WebAssembly ES module integration it decides the
/// README's example request as the native engine does.
#[test]
fn bundler_flavour_decides_as_native() {
    let package = build_bundler_package();
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(package.join("package.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["name"], "@tollgate/policy");
    let entry = package.join(
        manifest["module"]
            .as_str()
            .or(manifest["main"].as_str())
            .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("decide.mjs");
    std::fs::write(
        &script,
        format!(
            "import {{ readFileSync }} from 'node:fs';\n\
             import {{ Policy }} from {entry:?};\n\
             const policy = Policy.parse(readFileSync(process.argv[2], 'utf8'), 'policy.toml');\n\
             const request = JSON.parse(readFileSync(process.argv[3], 'utf8'));\n\
             const verdict = policy.decide(request, {{ now: {NOW} }});\n\
             process.stdout.write(JSON.stringify(verdict.decision ?? verdict.resolve([]).decision));\n",
            entry = url_of(&entry),
        ),
    )
    .unwrap();
    let example = repo().join("examples/policy.toml");
    let request_file = repo().join("examples/requests/alice-clone.json");
    let output = Command::new(node22())
        .arg("--experimental-wasm-modules")
        .arg("--no-warnings")
        .arg(&script)
        .arg(&example)
        .arg(&request_file)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();

    let policy = Policy::parse(&std::fs::read_to_string(&example).unwrap(), "policy.toml").unwrap();
    let request: OwnedRequest =
        serde_json::from_str(&std::fs::read_to_string(&request_file).unwrap()).unwrap();
    let pairs = request.header_pairs();
    let native = policy
        .engine
        .decide(
            &request.facts(&pairs),
            UnixTime::from_secs(NOW),
            &NoKeys,
            &policy_core::PlaceholderSecrets,
        )
        .resolve_with(&mut |_, _| None)
        .to_json();
    assert_eq!(text, native);
    assert!(text.starts_with("{\"allow\":true,"), "{text}");
}

const NOW: u64 = 1_767_225_600;

fn url_of(path: &Path) -> String {
    format!("file://{}", path.display())
}

use tollgate_conformance::node::{build_js_package, type_check, NodePackage};
use tollgate_conformance::{run, MIN_CORPUS_CASES};

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

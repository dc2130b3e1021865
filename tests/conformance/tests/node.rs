use tollgate_conformance::node::{build_js_package, NodePackage};
use tollgate_conformance::{run, MIN_CORPUS_CASES};

/// The whole corpus through the npm package under Node, each decision byte for byte the
/// native engine's.
#[test]
fn npm_package_under_node_passes_the_corpus() {
    let package = build_js_package();
    let report = run(&mut NodePackage::start(&package));
    report.assert_clean(MIN_CORPUS_CASES);
}

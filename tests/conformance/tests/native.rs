use tollgate_conformance::{run, Native, MIN_CORPUS_CASES};

#[test]
fn native_engine_passes_the_corpus() {
    let report = run(&mut Native::default());
    report.assert_clean(MIN_CORPUS_CASES);
}

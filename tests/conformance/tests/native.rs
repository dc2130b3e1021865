use tollgate_conformance::{run, Native, NativeCached, MIN_CORPUS_CASES};

#[test]
fn native_engine_passes_the_corpus() {
    let report = run(&mut Native::default());
    report.assert_clean(MIN_CORPUS_CASES);
}

#[test]
fn aws_lc_verifies_as_rustcrypto_does() {
    let report = run(&mut Native::with_crypto(&tollgate_host_kit::AWS_LC));
    report.assert_clean(MIN_CORPUS_CASES);
}

#[test]
fn cached_tokens_give_the_same_decisions() {
    let mut target = NativeCached::default();
    run(&mut target).assert_clean(MIN_CORPUS_CASES);
    // The 14 cases whose token verifies were answered from the cache.
    assert!(
        target.hits >= 14,
        "only {} cases were answered from the cache",
        target.hits
    );
}

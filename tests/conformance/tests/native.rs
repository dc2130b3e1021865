use tollgate_conformance::{run, Native};

#[test]
fn native_engine_passes_the_corpus() {
    let report = run(&mut Native::default());
    for f in &report.failures {
        eprintln!(
            "[{}] {} :: {}\n    {}",
            f.target,
            f.file,
            f.case,
            f.problems.join("\n    ")
        );
    }
    assert!(
        report.failures.is_empty(),
        "{} corpus cases failed",
        report.failures.len()
    );
    // Guard against a corpus that silently shrank to nothing.
    assert!(
        report.passed >= 90,
        "only {} corpus cases ran",
        report.passed
    );
}

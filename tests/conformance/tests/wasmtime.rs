use tollgate_conformance::{build_wasm_module, run, Wasm};

#[test]
fn policy_module_under_wasmtime_passes_the_corpus() {
    let path = build_wasm_module();
    let module =
        tollgate_wasmtime::CompiledModule::from_file(&path).expect("load the policy module");
    let report = run(&mut Wasm::new(module));
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
        "{} corpus cases failed under wasmtime",
        report.failures.len()
    );
    assert!(
        report.passed >= 90,
        "only {} corpus cases ran",
        report.passed
    );
}

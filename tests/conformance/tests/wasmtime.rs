use tollgate_conformance::{build_wasm_module, run, Wasm, MIN_CORPUS_CASES};

#[test]
fn policy_module_under_wasmtime_passes_the_corpus() {
    let path = build_wasm_module();
    let module =
        tollgate_wasmtime::CompiledModule::from_file(&path).expect("load the policy module");
    let report = run(&mut Wasm::new(module));
    report.assert_clean(MIN_CORPUS_CASES);
}

use tollgate_conformance::{build_wasm_module, run, Wasm, MIN_CORPUS_CASES};

#[test]
fn policy_module_under_wasmtime_passes_the_corpus() {
    let path = build_wasm_module();
    let module =
        tollgate_wasmtime::CompiledModule::from_file(&path).expect("load the policy module");
    let report = run(&mut Wasm::new(module));
    report.assert_clean(MIN_CORPUS_CASES);
}

/// The module's raw exports, driven as a careless or hostile host would: every bad input
/// gets an `Err` answer (a denial to every host), never a trap or an allow.
#[test]
fn policy_module_answers_malformed_calls_with_errors() {
    use policy_core::abi::{self, Answer, Decide, WireRequest, WireVerdict};
    use wasmtime::{Engine, Instance, Module, Store};

    let engine = Engine::default();
    let module = Module::from_file(&engine, build_wasm_module()).expect("module");
    let mut store = Store::new(&engine, ());
    let instance = Instance::new(&mut store, &module, &[]).expect("instance");
    let input = instance
        .get_typed_func::<u32, u32>(&mut store, "tollgate_input")
        .expect("tollgate_input");
    let decide = instance
        .get_typed_func::<u32, u64>(&mut store, "tollgate_decide")
        .expect("tollgate_decide");
    let memory = instance.get_memory(&mut store, "memory").expect("memory");

    // Writes `bytes` where the module says, then decides with `len` as the length.
    let mut call = |bytes: &[u8], len: u32| -> Answer<WireVerdict<'static>> {
        let len_for_input = u32::try_from(bytes.len()).expect("small input");
        let at = input
            .call(&mut store, len_for_input)
            .expect("tollgate_input");
        memory.write(&mut store, at as usize, bytes).expect("write");
        let packed = decide
            .call(&mut store, len)
            .expect("tollgate_decide must not trap");
        let (ptr, out_len) = ((packed >> 32) as usize, packed as u32 as usize);
        let out = memory
            .data(&store)
            .get(ptr..ptr + out_len)
            .expect("answer inside memory");
        abi::decode(out).expect("an encoded answer")
    };

    let request = abi::encode(&Decide {
        request: WireRequest::from_facts(&policy_core::RequestFacts::get(
            "/acme/app.git/info/refs",
        )),
        now_nanos: 1_800_000_000_000_000_000,
        explain: false,
    });
    let len = u32::try_from(request.len()).expect("small request");
    let no_policy = call(&request, len).expect_err("no policy is loaded");
    assert!(no_policy.contains("no policy loaded"), "{no_policy}");

    let garbage = call(&[0xff; 40], 40).expect_err("garbage is no request");
    assert!(!garbage.is_empty());

    // A length past what the host wrote reads nothing, not the module's other memory.
    let beyond = call(&request, len + 4096).expect_err("a length past the input");
    assert!(!beyond.is_empty());
}

//! `tollgate test`: run the policy's `[[test]]` cases, natively or in the module.

use std::path::Path;
use std::process::ExitCode;

use policy_core::cases;
use policy_core::policy::Policy;

use crate::decider::Decider;

pub fn run(policy: &Policy, path: &Path, decider: &mut Decider<'_>, verbose: bool) -> ExitCode {
    let results = cases::run(&policy.tests, |step, rates| {
        decider
            .decide(step.request, step.now, verbose, step.exchange, rates)
            .map(|(decision, _audit)| decision)
    });
    let (mut passed, mut failed) = (0usize, 0usize);
    for result in &results {
        if result.passed() {
            passed += 1;
            println!("ok    {}", result.case.name);
            continue;
        }
        failed += 1;
        println!(
            "FAIL  {} ({}:{})",
            result.case.name,
            path.display(),
            result.case.position.line
        );
        for m in &result.mismatches {
            println!("        {m}");
        }
        let explain = result.decision.as_ref().ok().and_then(|d| d.get("explain"));
        for step in explain.and_then(|e| e.as_array()).into_iter().flatten() {
            println!(
                "        - {}: {}",
                step["rule"].as_str().unwrap_or(""),
                step["outcome"].as_str().unwrap_or("")
            );
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

//! `tollgate test`: run the policy's `[[test]]` cases against the native engine.

use std::path::Path;
use std::process::ExitCode;

use policy_core::policy::Policy;

use crate::host::{JwksFiles, RateFile, Secrets};

pub fn run(policy: &Policy, path: &Path, keys: &JwksFiles, verbose: bool) -> ExitCode {
    let (mut passed, mut failed) = (0usize, 0usize);
    for case in &policy.tests {
        // Each case starts from empty rate-limit state; repeats share it.
        let mut state = RateFile::default();
        let pairs = case.request.header_pairs();
        let facts = case.request.facts(&pairs);
        let mut last = None;
        for _ in 0..case.repeat {
            last = Some(policy.engine.decide_with_state(
                &facts,
                case.now,
                keys,
                &Secrets::Placeholder,
                &mut |k, u| state.access(k, u),
            ));
        }
        let Some(decision) = last else { continue };
        let json = serde_json::to_value(&decision).unwrap_or_default();
        let mismatches = case.expect.check(&json);
        if mismatches.is_empty() {
            passed += 1;
            println!("ok    {}", case.name);
        } else {
            failed += 1;
            println!(
                "FAIL  {} ({}:{})",
                case.name,
                path.display(),
                case.position.line
            );
            for m in &mismatches {
                println!("        {m}");
            }
            if verbose {
                for step in &decision.explain {
                    println!("        - {}: {}", step.rule, step.outcome);
                }
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

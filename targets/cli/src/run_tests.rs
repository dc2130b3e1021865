//! `tollgate test`: run the policy's `[[test]]` cases, natively or in the module.

use std::path::Path;
use std::process::ExitCode;

use policy_core::policy::Policy;

use crate::decider::Decider;
use crate::host::RateFile;

pub fn run(policy: &Policy, path: &Path, decider: &mut Decider<'_>, verbose: bool) -> ExitCode {
    let (mut passed, mut failed) = (0usize, 0usize);
    for case in &policy.tests {
        // Each case starts from empty rate-limit state; its requests share it.
        let rates = RateFile::default();
        let mut last = Err(String::from("case never ran"));
        for request in case.sequence() {
            last = decider.decide(request, case.now, verbose, &rates);
        }
        let (mismatches, explain) = match &last {
            Ok((decision, _)) => (
                case.expect.check(decision),
                decision.get("explain").cloned(),
            ),
            Err(e) => (vec![format!("no decision: {e}")], None),
        };
        if mismatches.is_empty() {
            passed += 1;
            println!("ok    {}", case.name);
            continue;
        }
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
        for step in explain
            .as_ref()
            .and_then(|e| e.as_array())
            .into_iter()
            .flatten()
        {
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

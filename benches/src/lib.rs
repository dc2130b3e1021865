//! Benchmark fixtures: requests from the conformance corpus, so every number is for a
//! decision the corpus also checks.

pub mod authz;

use std::path::Path;

use policy_core::cases::TestCase;
use policy_core::policy::Policy;

/// The corpus policy in `file` (under tests/corpus) and its source text.
pub fn corpus_policy(file: &str) -> (Policy, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/corpus")
        .join(file);
    let source =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let policy = Policy::parse(&source, file).unwrap_or_else(|e| panic!("{e}"));
    (policy, source)
}

/// The case called `name`.
pub fn case<'p>(policy: &'p Policy, name: &str) -> &'p TestCase {
    policy
        .tests
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no corpus case `{name}`"))
}

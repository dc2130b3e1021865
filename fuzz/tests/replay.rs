//! Replays every seed and every committed regression through the fuzz targets' checks, on
//! stable and without a fuzzer: a case the fuzzer once found stays fixed.

use std::fs;
use std::path::{Path, PathBuf};

fn inputs(dirs: &[&str]) -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut all = Vec::new();
    for dir in dirs {
        let dir = root.join(dir);
        let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
            if path.is_file() && path.file_name().is_some_and(|n| n != ".gitkeep") {
                let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                all.push((path, bytes));
            }
        }
    }
    all.sort();
    all
}

#[test]
fn token_seeds_are_allowed_and_regressions_hold() {
    let seeds = inputs(&["seeds/token"]);
    assert!(seeds.len() >= 5, "token seeds missing");
    for (path, bytes) in &seeds {
        let decision = tollgate_fuzz::token_decision(bytes).expect("seed is text");
        assert!(decision.allow, "{}: {decision:?}", path.display());
        // One byte changed in the signature: refused, and still every promise kept.
        let mut forged = bytes.clone();
        if let Some(last) = forged.last_mut() {
            *last = if *last == b'A' { b'B' } else { b'A' };
        }
        let decision = tollgate_fuzz::token_decision(&forged).expect("forged is text");
        assert!(!decision.allow, "{} forged: {decision:?}", path.display());
    }
    for (_, bytes) in inputs(&["regressions/token"]) {
        tollgate_fuzz::token(&bytes);
    }
}

#[test]
fn policy_seeds_parse_and_regressions_hold() {
    let seeds = inputs(&["../tests/corpus", "../examples"]);
    let policies: Vec<_> = seeds
        .iter()
        .filter(|(p, _)| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    assert!(policies.len() >= 4, "policy seeds missing");
    for (path, bytes) in policies {
        let text = std::str::from_utf8(bytes).expect("UTF-8");
        policy_core::policy::Policy::parse(text, "seed")
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        tollgate_fuzz::policy(bytes);
    }
    for (_, bytes) in inputs(&["regressions/policy"]) {
        tollgate_fuzz::policy(&bytes);
    }
}

#[test]
fn request_seeds_decide_as_written_and_regressions_hold() {
    let expected = [
        ("api-contents", 200),
        ("clone-refs", 200),
        ("dot-dot-encoded", 400),
        ("lfs-batch", 200),
        ("push", 200),
        ("web-public", 200),
        ("web-session-cookie", 200),
        ("wiki-spoof", 404),
    ];
    let seeds = inputs(&["seeds/request"]);
    assert_eq!(seeds.len(), expected.len());
    for ((path, bytes), (name, status)) in seeds.iter().zip(expected) {
        assert!(path.ends_with(name), "{}", path.display());
        let decision = tollgate_fuzz::request_decision(bytes).expect("seed parses");
        assert_eq!(decision.status, status, "{}: {decision:?}", path.display());
    }
    for (_, bytes) in inputs(&["regressions/request"]) {
        tollgate_fuzz::request(&bytes);
    }
}
